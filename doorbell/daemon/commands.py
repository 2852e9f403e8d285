"""Signed commands from enrolled phones (docs/PROTOCOL.md section 7): an owner invites a
phone, follows and confirms its enrolment, revokes a phone or replaces the recovery key,
without SSH. Every command is checked here, on the daemon's main loop, and answered,
signed by the device; a refused one changes nothing."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from doorbell.daemon.enrolment import RECOVERY_NAME, Enrolments
from doorbell.daemon.live import LiveRefused, LiveSessions
from doorbell.sealing import (
    DeviceSigningKey,
    Keyring,
    KeyringStore,
    PhoneIdentity,
    Recipient,
    Role,
    SealedObject,
    SealingError,
)
from doorbell.sealing import commands as proto

log = logging.getLogger(__name__)

MAX_SKEW = 120  # seconds a command's time may differ from the doorbell's clock
REPLAY_SECONDS = 2 * MAX_SKEW + 60  # nonces remembered at least this long
MAX_NONCES = 4096
PER_SIGNER = 30  # commands a signer may send ...
PER_SECONDS = 10.0  # ... in this long; beyond, they are dropped unanswered
LIVE_COMMANDS = ("live", "live-renew", "live-stop")  # any viewer's, not only an owner's

Publisher = Callable[[str, bytes], None]


class CommandRefused(Exception):
    """A command its signer may not give, or that cannot be done; the text says why."""


class PhoneCommands:
    def __init__(
        self,
        device: DeviceSigningKey,
        store: KeyringStore,
        enrolments: Enrolments,
        publish: Publisher,
        publish_keyring: Callable[[], list[SealedObject]],
        answer_topic: Callable[[bytes], str],
        *,
        live: LiveSessions | None = None,
        live_topic: Callable[[bytes], str] | None = None,
        allow_guests: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = live
        self._live_topic = live_topic
        self._allow_guests = allow_guests
        self._device = device
        self._store = store
        self._enrolments = enrolments
        self._publish = publish
        self._publish_keyring = publish_keyring
        self._answer_topic = answer_topic
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._recent: dict[bytes, deque[float]] = {}
        self.counts = {"answered": 0, "refused": 0, "dropped": 0}

    def message(self, payload: bytes) -> None:
        """One message from the command topic: hostile until its signature is checked."""
        nonce = proto.read_nonce(payload)
        try:
            command = proto.open_command(payload)
        except (proto.CommandError, RecursionError) as exc:
            self._refuse(nonce, f"refused: {exc}", None)
            return
        now = self._clock()
        if not self._within_rate(command.signer.raw, now):
            self.counts["dropped"] += 1
            log.debug("command from %s dropped: too many", command.signer.fingerprint)
            return
        keyring = self._store.load()
        signer = keyring.signed_by(command.signer)
        recipient_key = None if signer is None else signer.key
        try:
            self._check(command, signer, now)
            answer = self._run(command, signer, keyring)
        except CommandRefused as exc:
            self._refuse(command.nonce, str(exc), recipient_key)
            return
        except SealingError as exc:
            self._refuse(command.nonce, f"refused: {exc}", recipient_key)
            return
        self.counts["answered"] += 1
        log.info("command %s from %r done", command.name, signer.name if signer else "?")
        self._send(command.nonce, {"ok": True, **answer}, recipient_key)

    # -- rules ----------------------------------------------------------------------------

    def _check(self, command: proto.Command, signer: Recipient | None, now: float) -> None:
        if command.device_id != self._device.public_key.device_id:
            raise CommandRefused("refused: the command is for another doorbell")
        skew = command.time - now
        if abs(skew) > MAX_SKEW:
            raise CommandRefused(
                f"refused: expired (the command's time is {skew:+.0f} s from the doorbell's "
                f"clock; at most {MAX_SKEW} s)"
            )
        self._forget(now)
        if command.nonce in self._seen:
            raise CommandRefused("refused: replayed (this command was received before)")
        if len(self._seen) >= MAX_NONCES:
            raise CommandRefused("refused: too many commands at once; try again in a minute")
        self._seen[command.nonce] = now
        if signer is None:
            raise CommandRefused("refused: the signing key is not enrolled on this doorbell")
        if command.name in LIVE_COMMANDS:
            if signer.role is Role.GUEST and not self._allow_guests:
                raise CommandRefused(
                    f"refused: {signer.name!r} is a guest, and live.allow_guests is off"
                )
            return
        if not signer.role.manages:
            raise CommandRefused(
                f"refused: {signer.name!r} is a {signer.role.value}; only an owner may "
                f"{command.name}"
            )

    def _within_rate(self, signer: bytes, now: float) -> bool:
        recent = self._recent.setdefault(signer, deque())
        while recent and now - recent[0] > PER_SECONDS:
            recent.popleft()
        if len(recent) >= PER_SIGNER:
            return False
        recent.append(now)
        if len(self._recent) > MAX_NONCES:
            self._recent = {k: v for k, v in self._recent.items() if v}
        return True

    def _forget(self, now: float) -> None:
        while self._seen and now - next(iter(self._seen.values())) > REPLAY_SECONDS:
            self._seen.popitem(last=False)

    # -- commands -------------------------------------------------------------------------

    def _run(
        self, command: proto.Command, signer: Recipient | None, keyring: Keyring
    ) -> dict[str, Any]:
        assert signer is not None
        args = command.args
        if command.name == "invite":
            role = args.get("role", Role.MEMBER.value)
            if role not in (Role.MEMBER.value, Role.GUEST.value, Role.OWNER.value):
                raise CommandRefused("refused: invite a member, a guest or an owner")
            request = {"role": role, "confirm": "phone", "inviter": signer.name}
            for key in ("name", "expires", "seconds"):
                if key in args:
                    request[key] = args[key]
            opened = self._enrolments.open(request)
            log.info("%r invited a %s (window %s)", signer.name, role, opened["window"])
            return opened
        if command.name in ("window-state", "window-confirm", "window-cancel"):
            window = args.get("window")
            if command.name == "window-state":
                return self._enrolments.state(window)
            if command.name == "window-cancel":
                return self._enrolments.cancel(window)
            return self._enrolments.confirm(window, by_phone=True, code=args.get("code"))
        if command.name in LIVE_COMMANDS:
            return self._watch(command, signer)
        if command.name == "revoke":
            return self._revoke(signer, args.get("name"), keyring)
        if command.name == "set-recovery":
            return self._set_recovery(signer, args.get("identity"))
        raise CommandRefused(f"refused: unknown command {command.name[:40]!r}")

    def _watch(self, command: proto.Command, signer: Recipient) -> dict[str, Any]:
        if self._live is None or self._live_topic is None:
            raise CommandRefused("refused: live view needs the doorbell's broker")
        try:
            if command.name == "live":
                return self._live.start(signer, self._live_topic(command.nonce))
            session = command.args.get("session")
            if command.name == "live-renew":
                return self._live.renew(session, signer)
            return self._live.stop(session, signer)
        except LiveRefused as exc:
            raise CommandRefused(str(exc)) from None

    def _revoke(self, signer: Recipient, name: Any, keyring: Keyring) -> dict[str, Any]:
        if not isinstance(name, str):
            raise CommandRefused("refused: name the phone to revoke")
        target = keyring.get(name)
        if target is not None and target.role is Role.OWNER and len(keyring.owners) == 1:
            raise CommandRefused(f"refused: {name!r} is the only owner; enrol another owner first")
        with self._store.editing() as box:
            box[0] = box[0].revoke(name)
            epoch = box[0].epoch
        self._publish_keyring()
        log.info("%r revoked %r; keyring epoch %d", signer.name, name, epoch)
        return {"revoked": name, "epoch": epoch}

    def _set_recovery(self, signer: Recipient, text: Any) -> dict[str, Any]:
        if not isinstance(text, str):
            raise CommandRefused("refused: set-recovery needs the recovery key's identity")
        try:
            identity = PhoneIdentity.from_string(text)
        except SealingError as exc:
            raise CommandRefused(f"refused: the recovery identity: {exc}") from None
        now = datetime.fromtimestamp(self._clock(), UTC)
        with self._store.editing() as box:
            keyring = box[0]
            for old in [r for r in keyring.recipients if r.role is Role.RECOVERY]:
                keyring = keyring.revoke(old.name)
            box[0] = keyring.add(
                RECOVERY_NAME, identity.key, now, role=Role.RECOVERY, signing=identity.signing
            )
            epoch = box[0].epoch
        self._publish_keyring()
        log.info("%r set a new recovery key; keyring epoch %d", signer.name, epoch)
        return {"recovery": identity.key.fingerprint, "epoch": epoch}

    # -- answers --------------------------------------------------------------------------

    def _refuse(self, nonce: bytes | None, reason: str, to: Any) -> None:
        self.counts["refused"] += 1
        log.warning("phone command %s", reason)
        if nonce is not None:
            self._send(nonce, {"ok": False, "reason": reason}, to)

    def _send(self, nonce: bytes, answer: dict[str, Any], to: Any) -> None:
        try:
            payload = proto.seal_answer(self._device, nonce, answer, to)
            self._publish(self._answer_topic(nonce), payload)
        except (OSError, RuntimeError, ValueError) as exc:
            log.error("could not answer a phone command: %s", exc)
