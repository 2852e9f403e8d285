"""The doorbell's side of enrolment (docs/PROTOCOL.md): one-time windows opened by
``doorbell enroll``, the phone's hello through the broker, the confirmation on the
doorbell, and the new keyring sealed and sent back.

Everything here runs on the daemon's main loop: messages from the broker, commands
from the control socket and button presses are queued there, so a window's state has
one owner."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from doorbell.sealing import (
    DevicePublicKey,
    KeyringFile,
    KeyringStore,
    Kind,
    Role,
    SealedObject,
    SealingError,
)
from doorbell.sealing import enrolment as proto

log = logging.getLogger(__name__)

WINDOW_SECONDS = 600.0  # how long a link works unless ``doorbell enroll --minutes`` says
MAX_WINDOW_SECONDS = 3600.0
BUTTON_SECONDS = 60.0  # a press confirms within this long of the code being shown
CONFIRM_SECONDS = 300.0  # the longest a code waits for "yes" at the terminal
MAX_FAILURES = 5  # messages that are not this window's before it closes
MAX_WINDOWS = 4  # open at once
KEEP_CLOSED_SECONDS = 600.0  # a closed window's outcome stays readable this long
RECOVERY_NAME = "recovery"  # the recovery key's name in the keyring

# Window states, as ``doorbell enroll`` reads them.
WAITING, CONFIRMING, ENROLLED, REFUSED_STATE = "waiting", "confirming", "enrolled", "refused"


@dataclass(frozen=True)
class Broker:
    """Where phones reach this doorbell, as its links say."""

    host: str
    port: int
    tls: bool
    prefix: str


@dataclass
class Window:
    link: proto.Link
    role: Role
    name: str | None  # given by the owner; else the phone's own
    guest_for: timedelta | None
    confirm_by: str  # "terminal" or "button"
    closes: float  # monotonic
    allow_classical: bool = False
    state: str = WAITING
    failures: int = 0
    hello: proto.Hello | None = None
    code: str | None = None
    confirm_deadline: float = 0.0
    outcome: str = ""  # the enrolled name, or why it was refused
    ended: float = 0.0
    replies: list[str] = field(default_factory=list)

    @property
    def window_id(self) -> str:
        return self.link.keys.window_id.hex()

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {"window": self.window_id, "state": self.state}
        if self.code is not None:
            view["code"] = self.code
        if self.hello is not None:
            view["phone"] = self.name or self.hello.name
            view["fingerprint"] = self.hello.identity.key.fingerprint
        if self.state == ENROLLED:
            view["enrolled"] = self.outcome
        elif self.state == REFUSED_STATE:
            view["refused"] = self.outcome
        if self.confirm_by == "button" and self.state == CONFIRMING:
            view["press_within"] = max(0.0, self.confirm_deadline - time.monotonic())
        return view


Publisher = Callable[[str, bytes], None]
KeyringPublisher = Callable[[], list[SealedObject]]


class Enrolments:
    """The open enrolment windows of one doorbell."""

    def __init__(
        self,
        device: DevicePublicKey,
        store: KeyringStore,
        broker: Broker | None,
        publish: Publisher,
        publish_keyring: KeyringPublisher,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._device = device
        self._store = store
        self._broker = broker
        self._publish = publish
        self._publish_keyring = publish_keyring
        self._clock = clock
        self._wall = wall
        self._windows: dict[str, Window] = {}

    # -- commands from `doorbell enroll` ------------------------------------------------------

    def open(self, args: dict[str, Any]) -> dict[str, Any]:
        if self._broker is None:
            raise SealingError("enrolment needs the MQTT broker: turn on mqtt in the configuration")
        self.tick()
        if sum(w.state in (WAITING, CONFIRMING) for w in self._windows.values()) >= MAX_WINDOWS:
            raise SealingError(f"{MAX_WINDOWS} enrolment windows are open already")
        role = _role(args.get("role", Role.MEMBER.value if self._has_owner() else "owner"))
        seconds = args.get("seconds", WINDOW_SECONDS)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not (1 <= seconds <= MAX_WINDOW_SECONDS)
        ):
            raise SealingError(f"the window lasts 1 to {MAX_WINDOW_SECONDS:g} seconds")
        guest_for = None
        if role is Role.GUEST:
            expires = args.get("expires")
            if isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= 0:
                raise SealingError("a guest needs --expires: how long it may read footage")
            guest_for = timedelta(seconds=expires)
        elif "expires" in args:
            raise SealingError("only a guest has an expiry (--role guest)")
        name = args.get("name")
        if name is not None and not isinstance(name, str):
            raise SealingError("the name must be text")
        confirm = args.get("confirm", "terminal")
        if confirm not in ("terminal", "button", "phone"):
            raise SealingError("confirm by 'terminal', 'button' or 'phone'")
        host = args.get("host") or self._broker.host
        port = args.get("port") or self._broker.port
        if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
            raise SealingError("the broker's host and port are text and a number")
        link = proto.Link.new(
            self._device,
            host,
            port,
            self._broker.tls,
            self._broker.prefix,
            int(self._wall() + seconds),
        )
        proto.Link.parse(link.to_string())  # what the phone will read must be readable
        allow_classical = args.get("allow_classical", False) is True
        window = Window(
            link, role, name, guest_for, confirm, self._clock() + seconds, allow_classical
        )
        self._windows[window.window_id] = window
        log.info(
            "enrolment window %s opened for a %s, %d s, confirmed by %s",
            window.window_id,
            role.value,
            seconds,
            confirm,
        )
        return {"link": link.to_string(), **window.view()}

    def state(self, window_id: Any) -> dict[str, Any]:
        self.tick()
        return self._window(window_id).view()

    def confirm(
        self, window_id: Any, *, by_phone: bool = False, code: Any = None
    ) -> dict[str, Any]:
        """The owner's yes: at the terminal, or ``by_phone`` from the inviting owner's
        phone, which must name the code it showed."""
        self.tick()
        window = self._window(window_id)
        if window.state != CONFIRMING:
            raise SealingError(f"window {window.window_id} has nothing to confirm ({window.state})")
        if by_phone and window.confirm_by != "phone":
            raise SealingError("this enrolment is confirmed at the doorbell, not from a phone")
        if window.confirm_by == "phone" and code != window.code:
            raise SealingError("the code does not match the one the doorbell computed")
        self._enrol(window)
        return window.view()

    def cancel(self, window_id: Any) -> dict[str, Any]:
        window = self._window(window_id)
        if window.state in (WAITING, CONFIRMING):
            self._refuse(window, "cancelled at the doorbell")
        return window.view()

    # -- the button ---------------------------------------------------------------------------

    def press(self) -> bool:
        """A press of the doorbell button: True when it confirmed an enrolment (and is
        then no ring)."""
        self.tick()
        for window in self._windows.values():
            if window.state == CONFIRMING and window.confirm_by == "button":
                log.info("enrolment window %s confirmed by the button", window.window_id)
                self._enrol(window)
                return True
        return False

    # -- the broker -----------------------------------------------------------------------------

    def topic_pattern(self) -> str | None:
        if self._broker is None:
            return None
        return (
            f"{self._broker.prefix}/{self._device.device_id.hex()[:16]}/enroll/+/{proto.PHONE_LEAF}"
        )

    def message(self, window_id: str, payload: bytes) -> None:
        """A message from the broker on ``…/enroll/<window_id>/phone``; hostile until opened."""
        self.tick()
        window = self._windows.get(window_id)
        if window is None or window.state not in (WAITING, CONFIRMING):
            log.debug("enrolment: a message for no open window (%s)", window_id[:16])
            return
        link = window.link
        try:
            message = proto.open_message(
                link.keys.phone_to_doorbell, link.topic(proto.PHONE_LEAF), payload
            )
        except proto.EnrolmentError as exc:
            self._failed(window, str(exc))
            return
        if window.hello is not None:
            # The one phone this window answered already: a second hello is another phone
            # that saw the link, or a replay. Both are refused; the first stays.
            same = message.get("nonce") == proto.b64(window.hello.nonce)
            log.warning(
                "enrolment window %s: %s",
                window.window_id,
                "a replayed hello, ignored" if same else "a second phone used the link, refused",
            )
            if not same:
                self._send(
                    window,
                    {"type": proto.REFUSED, "reason": "this link was used already"},
                    message.get("nonce"),
                )
            return
        try:
            hello = proto.Hello.from_message(link, message)
        except proto.EnrolmentError as exc:
            self._failed(window, str(exc))
            self._send(window, {"type": proto.REFUSED, "reason": str(exc)}, message.get("nonce"))
            return
        name = window.name or hello.name
        problem = self._admissible(name, hello, window)
        if problem is not None:
            window.hello = hello
            self._refuse(window, problem)
            return
        doorbell_nonce = os.urandom(proto.NONCE_LEN)
        window.hello = hello
        window.code = proto.confirmation_code(link, hello, doorbell_nonce)
        window.state = CONFIRMING
        window.confirm_deadline = self._clock() + (
            BUTTON_SECONDS if window.confirm_by == "button" else CONFIRM_SECONDS
        )
        log.info(
            "enrolment window %s: phone %r (%s) asks to join; code shown",
            window.window_id,
            name,
            hello.identity.key.fingerprint,
        )
        self._send(window, {"type": proto.CODE, "nonce": proto.b64(doorbell_nonce)})

    # -- time ---------------------------------------------------------------------------------

    def tick(self) -> None:
        now = self._clock()
        for window_id, window in list(self._windows.items()):
            if window.state in (WAITING, CONFIRMING) and now >= window.closes:
                self._refuse(window, "the link expired")
            elif window.state == CONFIRMING and now >= window.confirm_deadline:
                self._refuse(window, "not confirmed at the doorbell in time")
            elif (
                window.state in (ENROLLED, REFUSED_STATE)
                and now - window.ended > KEEP_CLOSED_SECONDS
            ):
                del self._windows[window_id]

    @property
    def open_windows(self) -> int:
        return sum(w.state in (WAITING, CONFIRMING) for w in self._windows.values())

    # -- inside -------------------------------------------------------------------------------

    def _window(self, window_id: Any) -> Window:
        window = self._windows.get(window_id) if isinstance(window_id, str) else None
        if window is None:
            raise SealingError(f"no enrolment window {str(window_id)[:16]!r}")
        return window

    def _has_owner(self) -> bool:
        return bool(self._store.load().owners)

    def _admissible(self, name: str, hello: proto.Hello, window: Window) -> str | None:
        """Why the keyring would refuse this phone, asked before any code is shown."""
        stored = self._store.load_file()
        for r in stored.keyring.recipients:
            if r.name == name:
                return f"a phone named {name!r} is enrolled already; choose another name"
            if r.key == hello.identity.key or r.signing == hello.identity.signing:
                return f"this phone is enrolled already, as {r.name!r}"
        try:
            _add(stored, window, hello, name, datetime.fromtimestamp(self._wall(), UTC))
        except SealingError as exc:
            return str(exc).removeprefix("refused: ")
        return None

    def _enrol(self, window: Window) -> None:
        assert window.hello is not None
        hello = window.hello
        name = window.name or hello.name
        now = datetime.fromtimestamp(self._wall(), UTC)
        with_recovery = (
            hello.recovery is not None
            and window.role is Role.OWNER
            and not any(r.role is Role.RECOVERY for r in self._store.load().recipients)
        )
        try:
            _add(self._store, window, hello, name, now)
        except SealingError as exc:
            self._refuse(window, str(exc))
            return
        if with_recovery:
            assert hello.recovery is not None
            try:
                self._store.add(
                    RECOVERY_NAME,
                    hello.recovery.key,
                    now,
                    role=Role.RECOVERY,
                    signing=hello.recovery.signing,
                )
            except SealingError as exc:
                # The phone is enrolled all the same; it can make one later.
                log.warning(
                    "enrolment window %s: recovery key not added: %s", window.window_id, exc
                )
                with_recovery = False
        sealed = self._publish_keyring()
        keyrings = [s for s in sealed if s.kind is Kind.KEYRING]
        window.state, window.outcome, window.ended = ENROLLED, name, self._clock()
        log.info("enrolment window %s: enrolled %r as %s", window.window_id, name, window.role)
        reply: dict[str, Any] = {"type": proto.WELCOME, "name": name, "role": window.role.value}
        if with_recovery:
            reply["recovery"] = True
        if keyrings:
            reply["keyring"] = proto.b64(bytes(keyrings[-1].data))
        self._send(window, reply)

    def _refuse(self, window: Window, reason: str) -> None:
        window.state, window.outcome, window.ended = REFUSED_STATE, reason, self._clock()
        log.warning("enrolment window %s refused: %s", window.window_id, reason)
        if window.hello is not None:
            self._send(window, {"type": proto.REFUSED, "reason": reason})

    def _failed(self, window: Window, why: str) -> None:
        window.failures += 1
        log.warning(
            "enrolment window %s: a bad message (%s), %d of %d",
            window.window_id,
            why,
            window.failures,
            MAX_FAILURES,
        )
        if window.failures >= MAX_FAILURES:
            self._refuse(window, "too many failed attempts; the link no longer works")

    def _send(self, window: Window, message: dict[str, Any], phone_nonce: Any = None) -> None:
        """Answer the phone whose hello carried ``phone_nonce`` (by default, the window's):
        every phone that saw the link reads this topic, and each keeps only its answers."""
        if phone_nonce is None and window.hello is not None:
            phone_nonce = proto.b64(window.hello.nonce)
        if not isinstance(phone_nonce, str):
            return  # nobody to answer: the message named no hello of its own
        message = {**message, "phone_nonce": phone_nonce[:64]}
        link = window.link
        topic = link.topic(proto.DOORBELL_LEAF)
        window.replies.append(str(message["type"]))
        try:
            self._publish(topic, proto.seal_message(link.keys.doorbell_to_phone, topic, message))
        except (OSError, RuntimeError) as exc:
            log.error("enrolment window %s: could not answer: %s", window.window_id, exc)


def _add(
    into: KeyringFile | KeyringStore, window: Window, hello: proto.Hello, name: str, now: datetime
) -> None:
    """Enrol the window's phone into the keyring file ``into`` (a copy in memory, to ask
    whether it would be refused, or the store itself)."""
    into.add(
        name,
        hello.identity.key,
        now,
        allow_classical=window.allow_classical,
        role=window.role,
        signing=hello.identity.signing,
        expires=None if window.guest_for is None else now + window.guest_for,
    )


def _role(value: Any) -> Role:
    if value not in (Role.OWNER.value, Role.MEMBER.value, Role.GUEST.value):
        raise SealingError("the role is owner, member or guest")
    return Role(value)
