"""The sealer: turns a payload into a signed, encrypted, chained object for the keyring."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from doorbell.common.locks import LockBusy, hold_lock
from doorbell.sealing import format as fmt
from doorbell.sealing.errors import KeyFileError, SealingError
from doorbell.sealing.format import Kind
from doorbell.sealing.keyring import Keyring
from doorbell.sealing.keys import DevicePublicKey, DeviceSigningKey, RecipientPublicKey
from doorbell.sealing.state import (
    ChainHead,
    KeyringStore,
    LiveFile,
    SequenceFile,
    load_device_key,
    prepare_state_dir,
)

log = logging.getLogger(__name__)


class NoRecipients(SealingError):
    """The keyring is empty: nothing can be sealed because nobody could open it."""


@dataclass(frozen=True, slots=True)
class SealedObject:
    """A finished object. ``kind`` is known on the device only; on the wire it is encrypted."""

    device_id: bytes
    seq: int
    kind: Kind
    # A bytearray straight from the sealer: copying 2 MiB into a bytes object
    # would cost a tenth of the sealing time. Treat it as immutable.
    data: bytes | bytearray

    @property
    def name(self) -> str:
        return object_name(self.device_id, self.seq)


def object_name(device_id: bytes, seq: int) -> str:
    """File or object-store name: device id prefix and zero-padded sequence number."""
    return f"{device_id.hex()[:16]}-{seq:020d}.sealed"


Deliver = Callable[["SealedObject", Callable[[], None]], None]
"""``deliver(obj, commit)``: store ``obj`` durably, call ``commit()`` once it is stored
and before anyone else can see it, and return. Raising before ``commit`` spends nothing.

``commit`` records the chain head without a sync, so the store keeps the newest
committed object on stable storage, even once nobody needs it any more, until a newer
one is committed or ``Sealer.sync_head`` (or ``close``) returned: after a power cut the
chain continues from it (``adopt_head``)."""


class Sealer:
    """Seals payloads for the state directory's keyring, one sequence number each.

    One sealer per state directory at a time (an exclusive lock enforces it). The
    keyring file is re-read whenever it changes, so the object sealed after
    ``doorbell keys add`` or ``revoke`` already follows the new keyring; a keyring
    object announcing the change is sealed first. Data keys live only inside
    ``seal`` and are never stored: the device cannot open what it sealed.

    A sequence number is spent only on an object that was delivered: with a
    ``deliver`` callback, ``seal`` hands each object over and spends its number
    (recording the chain head) only when the callback commits it, so an object that
    could not be stored leaves no gap in the chain.

    The head is recorded on every spend without a sync, and made durable by
    ``sync_head``, ``adopt_head`` and ``close``: an fdatasync per object would cost a
    tenth of the sealing time. In between, the durable head is the newest object the
    caller holds on stable storage: the ``deliver`` callback's store keeps it (see
    ``Deliver``). Without ``deliver`` the caller keeps the objects it is handed
    durably, and only ``close`` syncs the head.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
        block: int = fmt.RESERVATION_BLOCK,
    ) -> None:
        self._dir = prepare_state_dir(state_dir)
        self._lock = _lock_exclusive(self._dir / ".sealer.lock")
        self._clock = clock
        self._random = random
        self._prev = fmt.ZERO_PREV
        self._last_seq: int | None = None
        self._sealed_any = False
        self._announce: list[tuple[Kind, dict[str, Any], bytes]] = []
        self._announced: Keyring | None = None
        self._wrappers: tuple[Keyring | None, tuple[_Wrapper, ...]] = (None, ())
        self._bad_keyring: bytes | None = None
        self._store = KeyringStore(self._dir)
        self._keyring_file = LiveFile(self._store.path)
        try:
            self._key, _ = load_device_key(self._dir)
            self.device_id = self._key.public_key.device_id
            self._keyring_raw = self._keyring_file.read()
            self.keyring = self._store.parse(self._keyring_raw).keyring
            self._sequence = SequenceFile(self._dir, block=block)
            self._resume()
        except BaseException:
            # A sealer that failed to start must not keep others out of the directory.
            self._keyring_file.close()
            self._lock.close()
            raise

    @property
    def device_key(self) -> DevicePublicKey:
        return self._key.public_key

    @property
    def head(self) -> ChainHead | None:
        """The newest object of the chain (recorded, or adopted): what the next object's
        ``prev`` names. None while the device has delivered nothing."""
        return None if self._last_seq is None else ChainHead(self._last_seq, self._prev)

    def _resume(self) -> None:
        reserved = self._sequence.reserved_until
        head = self._sequence.read_head()
        if head is not None and head.seq >= reserved:
            # Starting below a number already used would fork the chain for ever.
            raise KeyFileError(
                f"{self._dir}: the chain head (seq {head.seq}) is past the reserved "
                f"sequence numbers ({reserved}); the sequence file was lost or rolled back"
            )
        if head is not None:
            self._prev = head.hash
            self._last_seq = head.seq
        self._plan_restart_notice()

    def _plan_restart_notice(self) -> None:
        """Announce the numbers between the chain head and the reserved block, if any."""
        self._announce = [a for a in self._announce if a[1].get("notice") != "restart"]
        reserved = self._sequence.reserved_until
        first_skipped = 0 if self._last_seq is None else self._last_seq + 1
        # The head is the newest object on stable storage (recorded, or adopted from the
        # caller's store), so nothing above it ever left the device: a run that crashed
        # before delivering anything (its block reserved on disk) must not widen the
        # skip. It stays within one block, as phones require.
        self._sequence.next = min(reserved, first_skipped + fmt.RESERVATION_BLOCK)
        if first_skipped == reserved:
            return
        log.warning(
            "the previous run did not stop cleanly: sequence numbers %d..%d are skipped",
            first_skipped,
            self._sequence.next - 1,
        )
        previous = (
            None if self._last_seq is None else {"seq": self._last_seq, "hash": self._prev.hex()}
        )
        notice = {
            "notice": "restart",
            "previous": previous,
            "skipped": {"first": first_skipped, "last": self._sequence.next - 1},
        }
        self._announce.insert(0, (Kind.NOTICE, notice, b""))

    def adopt_head(self, head: ChainHead) -> None:
        """Take ``head`` as the chain head when it is newer than the one recorded.

        The head is recorded without a sync (see ``Deliver``): after a crash the newest
        object in the caller's durable outbox may be newer than the recorded head, and
        the outbox will still deliver it, or did, so the chain (and the restart notice)
        must continue from it. Call before sealing; the head adopted is durable when
        this returns.
        """
        if self._sealed_any:
            raise SealingError("adopt_head must be called before the first seal")
        if self._last_seq is not None and head.seq <= self._last_seq:
            return
        if head.seq >= self._sequence.reserved_until:
            raise KeyFileError(
                f"{self._dir}: an object with seq {head.seq} is past the reserved "
                f"sequence numbers ({self._sequence.reserved_until})"
            )
        log.warning(
            "the chain head was recorded at %s, but seq %d was already stored: continuing from it",
            "nothing" if self._last_seq is None else self._last_seq,
            head.seq,
        )
        self._prev = head.hash
        self._last_seq = head.seq
        self._sequence.record(head, sync=True)
        self._plan_restart_notice()

    def reload_keyring(self) -> bool:
        """Pick up an edited keyring file. Returns True when the keyring changed.

        The file's bytes are compared, not its timestamps, so no edit goes unnoticed."""
        raw: bytes | None = None
        try:
            raw = self._keyring_file.read()
            if raw == self._keyring_raw:
                return False
            keyring = self._store.parse(raw).keyring
        except SealingError as exc:
            # A broken edit must not stop the doorbell: seal to the last good keyring,
            # and read the file again before the next seal.
            if raw != self._bad_keyring:
                log.error("keyring unchanged, the edited file is unusable: %s", exc)
                self._bad_keyring = raw
            return False
        self._keyring_raw = raw
        if keyring == self.keyring:
            return False
        log.info(
            "keyring epoch %d -> %d: %d recipient(s)",
            self.keyring.epoch,
            keyring.epoch,
            len(keyring),
        )
        self.keyring = keyring
        return True

    def seal(
        self,
        kind: Kind,
        meta: Mapping[str, Any],
        body: bytes | memoryview = b"",
        *,
        time_us: int | None = None,
        deliver: Deliver | None = None,
    ) -> list[SealedObject]:
        """Seal one payload. Returns it last, after any keyring or notice objects the
        stream needs first (a changed keyring, a restart after a crash).

        Without ``deliver`` every object is spent at once: for callers that keep the
        objects themselves. With ``deliver``, see ``Deliver``: an object the
        callback does not commit is not spent and not returned, an announcement not
        committed is offered again with the next seal, and an exception from the
        callback propagates after everything committed before it stays spent.
        """
        self.reload_keyring()
        self.expire_guests()
        if not self.keyring.recipients:
            raise NoRecipients("no phone is enrolled: nothing sealed, nobody could open it")
        when = int(self._clock() * 1_000_000) if time_us is None else time_us
        # Everything that can be refused is refused before a sequence number is spent.
        fmt.check_payload(self.keyring.epoch, when, len(body))
        encoded = fmt.encode_meta(dict(meta))
        out = self._seal_announcements(when, deliver)
        if self._announce:
            return out  # one was not committed: the payload waits behind it
        sealed = self._seal_one(kind, encoded, body, when, deliver)
        if sealed is not None:
            out.append(sealed)
        return out

    def expire_guests(self) -> bool:
        """Take the guests whose time is up out of the keyring file (a new epoch): nothing
        sealed from now on is sealed to them. Returns True when any left."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        gone = self.keyring.expired(now)
        if not gone:
            return False
        log.info("guest(s) expired: %s", ", ".join(repr(r.name) for r in gone))
        try:
            with self._store.editing() as box:
                box[0] = box[0].without_expired(now)
        except (SealingError, OSError) as exc:
            # The file cannot say so now (a broken edit, a full disk): the guests leave
            # this sealer's keyring all the same, and the file follows at the next start.
            log.error("could not remove the expired guest(s) from the keyring file: %s", exc)
            self.keyring = self.keyring.without_expired(now)
            return True
        self.reload_keyring()
        return True

    def expiry_due(self) -> bool:
        """Whether a guest of the keyring has expired (on the sealer's clock)."""
        expires = self.keyring.next_expiry()
        return expires is not None and self._clock() >= expires.timestamp()

    def publish_keyring(self, *, deliver: Deliver | None = None) -> list[SealedObject]:
        """Seal the keyring object now if the keyring changed since it was last sealed
        (a guest expired, the file was edited), without waiting for the next payload."""
        self.reload_keyring()
        self.expire_guests()
        if not self.keyring.recipients:
            raise NoRecipients("no phone is enrolled: nothing sealed, nobody could open it")
        return self._seal_announcements(int(self._clock() * 1_000_000), deliver)

    def _seal_announcements(self, when: int, deliver: Deliver | None) -> list[SealedObject]:
        if self._announced != self.keyring:
            # Every run, and every keyring change, publishes the keyring in the stream.
            # A keyring object still waiting to be delivered is stale now: only the
            # keyring the objects are sealed under may be announced.
            keyring = (Kind.KEYRING, {"epoch": self.keyring.epoch}, self.keyring.to_json())
            self._announce = [a for a in self._announce if a[0] is not Kind.KEYRING]
            self._announce.append(keyring)
            self._announced = self.keyring
        out: list[SealedObject] = []
        while self._announce:
            k, m, b = self._announce[0]
            sealed = self._seal_one(k, fmt.encode_meta(m), b, when, deliver)
            if sealed is None:
                return out
            out.append(sealed)
            self._announce.pop(0)
        return out

    def seal_notice(self, meta: Mapping[str, Any]) -> list[SealedObject]:
        return self.seal(Kind.NOTICE, meta)

    def _seal_one(
        self,
        kind: Kind,
        meta: bytes,
        body: bytes | memoryview,
        time_us: int,
        deliver: Deliver | None,
    ) -> SealedObject | None:
        self._sealed_any = True
        seq = self._sequence.peek()
        if self._wrappers[0] is not self.keyring:
            self._wrappers = (self.keyring, _wrappers(self.keyring))
        data = _seal(
            self._key,
            self.keyring.epoch,
            self._wrappers[1],
            seq,
            self._prev,
            kind,
            meta,
            body,
            time_us,
            self._random,
        )
        sealed = SealedObject(self.device_id, seq, kind, data)
        if deliver is None:
            self._spend(sealed)
            return sealed
        committed: list[bool] = []

        def commit() -> None:
            if not committed:
                self._spend(sealed)
                committed.append(True)

        deliver(sealed, commit)
        return sealed if committed else None

    def _spend(self, sealed: SealedObject) -> None:
        if sealed.seq != self._sequence.next:
            raise SealingError(f"object {sealed.seq} is not the next in the chain")
        chain = fmt.chain_hash(bytes(sealed.data[-fmt.SIGNATURE_LEN :]))
        # The head first: if recording it fails, nothing is spent and the same number
        # goes to the next object. No sync: the object itself is on stable storage (see
        # ``Deliver``), so a restart never skips past it, and never reuses it either.
        self._sequence.record(ChainHead(sealed.seq, chain))
        self._sequence.take()
        self._prev = chain
        self._last_seq = sealed.seq

    def sync_head(self) -> None:
        """Put the chain head on stable storage: from now on the caller's store need not
        keep the newest object for it."""
        if self._last_seq is not None:
            self._sequence.record(ChainHead(self._last_seq, self._prev), sync=True)

    def close(self) -> None:
        """Persist the chain head and hand back unused sequence numbers."""
        self.sync_head()
        self._sequence.close()
        self._keyring_file.close()
        self._lock.close()

    def __enter__(self) -> Sealer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _Wrapper:
    """One recipient, with its pyca key and HPKE suite built once per keyring."""

    public: RecipientPublicKey
    suite: hpke.Suite
    key: x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey


def _wrappers(keyring: Keyring) -> tuple[_Wrapper, ...]:
    return tuple(_Wrapper(r.key, r.key.suite.hpke(), r.key.hpke_key()) for r in keyring.recipients)


def seal_bytes(
    key: DeviceSigningKey,
    keyring: Keyring,
    seq: int,
    prev: bytes,
    kind: Kind,
    meta: Mapping[str, Any],
    body: bytes | memoryview,
    time_us: int,
    random: Callable[[int], bytes] = os.urandom,
) -> bytearray:
    """Build one sealed object. Exposed for test vectors; the daemon uses ``Sealer``."""
    encoded = fmt.encode_meta(dict(meta))
    return _seal(
        key, keyring.epoch, _wrappers(keyring), seq, prev, kind, encoded, body, time_us, random
    )


def _seal(
    key: DeviceSigningKey,
    epoch: int,
    wrappers: tuple[_Wrapper, ...],
    seq: int,
    prev: bytes,
    kind: Kind,
    meta: bytes,
    body: bytes | memoryview,
    time_us: int,
    random: Callable[[int], bytes],
) -> bytearray:
    device_id = key.public_key.device_id
    data_key = random(32)
    nonce = random(fmt.NONCE_LEN)
    stanzas = []
    for wrapper in wrappers:
        public = wrapper.public
        tag = fmt.recipient_tag(device_id, seq, public.suite, public.raw)
        info = fmt.hpke_info(device_id, seq, public.suite, tag)
        wrapped = wrapper.suite.encrypt(data_key, wrapper.key, info=info)
        stanzas.append(fmt.Stanza(public.suite, tag, wrapped))
    prefix = fmt.inner_prefix(kind, epoch, time_us, meta, len(body))
    inner_len = fmt.padded_payload_len(kind, len(prefix) + len(body))
    ct_len = inner_len + fmt.TAG_LEN
    header = fmt.build_header(device_id, seq, prev, nonce, stanzas, ct_len)
    signed_len = len(header) + ct_len
    padding = inner_len - len(prefix) - len(body)
    out = bytearray(signed_len + fmt.SIGNATURE_LEN)
    with memoryview(out) as view:
        view[: len(header)] = header
        # Streaming GCM encrypts prefix, body and padding straight into the output:
        # the plaintext is never assembled in a second buffer.
        encryptor = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(header)
        position = len(header)
        for piece in (prefix, body, bytes(padding)):
            # update_into wants room for a block more than it writes; the bytes
            # after the piece belong to the next piece, the tag or the signature.
            encryptor.update_into(piece, view[position : position + len(piece) + 15])
            position += len(piece)
        encryptor.finalize()
        view[position:signed_len] = encryptor.tag
        view[signed_len:] = key.sign(fmt.signed_message(view[:signed_len]))
    return out


def _lock_exclusive(path: Path) -> IO[bytes]:
    try:
        return hold_lock(path, wait=False)
    except OSError as exc:
        raise KeyFileError(f"cannot open lock file {path}: {exc.strerror}") from None
    except LockBusy:
        raise KeyFileError(
            f"another doorbell process is sealing with {path.parent}; stop it first"
        ) from None
