"""``doorbell-phone watch``: sealed events and keyrings live from the MQTT broker, opened here.

Every message is hostile input: the broker, and anyone who may publish on it, can
send anything on any topic. A message is size-checked, then verified against the
pinned doorbells and decrypted; whatever fails is reported on stderr, naming the
topic and the reason, and the watch goes on.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from doorbell.config.errors import ConfigError
from doorbell.config.secret import read_secret
from doorbell.phone.home import PhoneHome
from doorbell.phone.memory import (
    NOTHING,
    Head,
    KnownKeyring,
    PhoneMemory,
    Remembered,
    seqs_as_runs,
)
from doorbell.phone.rules import check_contents, epoch_rollback, stanza_mismatch
from doorbell.sealing import (
    Envelope,
    Keyring,
    Kind,
    Opened,
    Reader,
    RecipientPublicKey,
    SealingError,
    write_atomic,
)
from doorbell.transport.mqtt import EVENT_LEAF, KEYRING_LEAF, all_devices, split_topic

# A sealed event is a JPEG snapshot of at most 1920 px plus a few hundred bytes; a
# keyring is at most 256 KiB. Anything bigger is not from a doorbell.
MAX_MESSAGE = 8 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
KEEPALIVE = 30
# (device, seq) pairs remembered for duplicate and fork detection.
MAX_REMEMBERED = 65536
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
CLIP_ID = re.compile(r"[0-9a-f]{32}")
JPEG_START = b"\xff\xd8\xff"


class WatchError(Exception):
    """The watch cannot start: bad options, no broker, or the broker refused us."""


@dataclass(frozen=True)
class WatchOptions:
    """What ``doorbell-phone watch`` was asked to do."""

    host: str
    port: int | None = None
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    prefix: str = "doorbell"
    out: Path | None = None
    json: bool = False
    count: int | None = None
    timeout: float | None = None

    @property
    def use_tls(self) -> bool:
        return self.tls or self.ca_file is not None

    @property
    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.use_tls else 1883

    @property
    def address(self) -> str:
        return f"{self.host}:{self.broker_port}"

    def check(self) -> None:
        if not self.host:
            raise WatchError("--host must name the MQTT broker")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise WatchError(f"--port {self.port} is outside 1..65535")
        prefix = self.prefix
        if not prefix or any(c in prefix for c in "#+\0") or prefix[0] == "/" or prefix[-1] == "/":
            raise WatchError(f"--prefix must be a plain topic without wildcards, got {prefix!r}")
        if self.password_file is not None and not self.username:
            raise WatchError("--password-file needs --username")
        if self.count is not None and self.count < 1:
            raise WatchError(f"--count must be at least 1, got {self.count}")
        if self.timeout is not None and not self.timeout > 0:
            raise WatchError(f"--timeout must be more than 0 seconds, got {self.timeout}")


class Watcher:
    """Turns what arrives on the broker into lines: one per new event or keyring.

    With ``memory`` (the phone's ``seen.json``) it remembers across runs the newest object
    and keyring of each doorbell: an event that is not newer than what the phone has seen
    is a replay, never a ring, and a keyring older than the newest seen is a rollback.

    Not thread-safe: paho's network thread is the only caller of ``handle``.
    """

    def __init__(
        self,
        reader: Reader,
        names: dict[bytes, str],
        *,
        prefix: str,
        own_key: RecipientPublicKey | None = None,
        out_dir: Path | None = None,
        as_json: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        memory: PhoneMemory | None = None,
    ) -> None:
        self._reader = reader
        self._memory = memory
        self._remembered: dict[bytes, Remembered] = {} if memory is None else memory.load()
        self._names = names
        self._prefix = prefix
        self._own_key = own_key
        self._out_dir = out_dir
        self._json = as_json
        # Looked up now, not at import: tests and callers swap sys.stdout.
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        self._seen: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()
        self._keyrings: dict[bytes, tuple[int, int]] = {}
        self.events = 0

    @classmethod
    def for_home(cls, home: PhoneHome, *, prefix: str, **options: Any) -> Watcher:
        """A watcher with this phone's key and the doorbells it pinned, by their names."""
        own_key = home.identity().public_key()
        trusted = home.trusted()
        if not trusted:
            raise WatchError("this phone trusts no doorbell yet: run 'doorbell-phone trust' first")
        names = {d.key.device_id: d.name for d in trusted}
        reader = home.reader()
        return cls(reader, names, prefix=prefix, own_key=own_key, memory=home.memory(), **options)

    def handle(self, topic: str, payload: bytes | bytearray) -> None:
        """Check, open and print one message; report and drop anything wrong with it."""
        if len(payload) > MAX_MESSAGE:
            self._skip(topic, f"{len(payload)} bytes, more than the {MAX_MESSAGE} a doorbell sends")
            return
        parts = split_topic(self._prefix, topic)
        if parts is None or parts[1] not in (EVENT_LEAF, KEYRING_LEAF):
            self._skip(topic, f"not a {self._prefix}/<device>/event or /keyring topic")
            return
        device, leaf = parts
        try:
            envelope = self._reader.verify(payload)
            opened = self._reader.open_envelope(envelope)
        except SealingError as exc:
            self._skip(topic, str(exc))
            return
        try:
            when = opened.time
        except (ValueError, OverflowError, OSError):
            self._skip(topic, f"object {opened.seq}: time {opened.time_us} µs is not a date")
            return
        if opened.device_id.hex()[:16] != device:
            self._skip(topic, f"object signed by device {opened.device_id.hex()[:16]}")
            return
        expected = Kind.EVENT if leaf == EVENT_LEAF else Kind.KEYRING
        if opened.kind is not expected:
            what = f"object {opened.seq} is of kind {opened.kind.name}"
            self._skip(topic, f"{what}; this topic carries {leaf} objects")
            return
        if not self._first_sighting(topic, opened):
            return
        try:
            keyring = check_contents(opened)
        except SealingError as exc:
            self._skip(topic, f"object {opened.seq}: {exc}")
            return
        if keyring is not None and self._known_keyring(opened.device_id, opened.seq, keyring):
            return  # retained on the broker, or late: not news
        problem = self._against_memory(envelope, opened, keyring)
        if problem is not None:
            self._skip(topic, problem)
            return
        if keyring is None:
            self._event(opened, when)
        else:
            self._keyring(opened, keyring, when)
        self._remember(opened, keyring)

    def _against_memory(
        self, envelope: Envelope, opened: Opened, keyring: Keyring | None
    ) -> str | None:
        """The rules that need what this phone saw before: replays, forks, rollbacks, and
        stanzas against the keyring of the object's epoch. None when the object passes."""
        remembered = self._remembered.get(opened.device_id, NOTHING)
        head, known = remembered.head, remembered.keyring
        if keyring is None and head is not None and opened.seq <= head.seq:
            if opened.seq == head.seq and opened.chain_hash != head.hash:
                return f"FORK: object {opened.seq} differs from the one this phone saw before"
            return (
                f"REPLAY: event {opened.seq} is not newer than seq {head.seq}, which this phone "
                "has already seen (replayed or held back by the broker): not a new ring"
            )
        if keyring is not None and known is not None and opened.seq == known.seq:
            return f"FORK: keyring object {opened.seq} differs from the one seen before"
        rollback = epoch_rollback(opened.seq, opened.epoch, None, known)
        if rollback is not None:
            return rollback
        if keyring is None and known is not None and opened.epoch > known.epoch:
            # The device publishes (retained) the keyring object before any object sealed
            # under a changed keyring: this phone would have seen it first.
            return (
                f"event {opened.seq} is sealed under keyring epoch {opened.epoch}, but the "
                f"newest keyring published is epoch {known.epoch}: a keyring never published"
            )
        sealed_under = keyring if keyring is not None else known.keyring if known else None
        if sealed_under is not None and sealed_under.epoch == opened.epoch:
            return stanza_mismatch(envelope, sealed_under)
        return None

    def _known_keyring(self, device: bytes, seq: int, keyring: Keyring) -> bool:
        """Whether this keyring object is the newest one seen, or older than it."""
        known = self._remembered.get(device, NOTHING).keyring
        if known is None or seq > known.seq:
            return False
        return seq < known.seq or keyring == known.keyring

    def _remember(self, opened: Opened, keyring: Keyring | None) -> None:
        device = opened.device_id
        known = None if keyring is None else KnownKeyring(opened.seq, keyring)
        runs = seqs_as_runs([opened.seq])
        update = Remembered(Head(opened.seq, opened.chain_hash), known, runs, runs)
        before = self._remembered.get(device, NOTHING)
        after = before.merged(update)
        if after == before:
            return
        self._remembered[device] = after
        if self._memory is None:
            return
        try:
            # After printing: a ring shown twice after a crash beats a ring never shown.
            self._memory.update({device: update})
        except SealingError as exc:
            self._note(f"cannot remember object {opened.seq}: {exc}")

    def _first_sighting(self, topic: str, opened: Opened) -> bool:
        # QoS 1 may deliver twice and retained keyrings come back on every subscribe;
        # the same (device, seq) with other content is a forked chain, which only a
        # stolen device key or a restored device state can produce.
        key = (opened.device_id, opened.seq)
        known = self._seen.get(key)
        if known == opened.chain_hash:
            return False
        if known is not None:
            self._skip(
                topic,
                f"FORK: object {opened.seq} arrived again with different content "
                "(a copied or restored doorbell state, or a stolen device key)",
            )
            return False
        self._seen[key] = opened.chain_hash
        if len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        return True

    def _event(self, opened: Opened, when: datetime) -> None:
        meta = opened.meta
        kind = meta.get("type")
        kind = kind if isinstance(kind, str) and EVENT_TYPE.fullmatch(kind) else "event"
        clip = meta.get("clip")
        clip = clip if isinstance(clip, str) and CLIP_ID.fullmatch(clip) else None
        snapshot = self._save_snapshot(opened, when, kind, clip)
        self.events += 1
        name = self._name(opened.device_id)
        if self._json:
            self._print_json(
                {
                    "time": _iso(when),
                    "type": kind,
                    "clip": clip,
                    "device": opened.device_id.hex()[:16],
                    "name": name,
                    "seq": opened.seq,
                    "snapshot": None if snapshot is None else str(snapshot),
                }
            )
            return
        line = f"{_stamp(when)}  {kind}  clip {clip[:8] if clip else '-'}  (doorbell {name})"
        if snapshot is not None:
            line += f"  snapshot {snapshot}"
        print(line, file=self._stdout, flush=True)

    def _save_snapshot(
        self, opened: Opened, when: datetime, kind: str, clip: str | None
    ) -> Path | None:
        body = opened.body
        if self._out_dir is None or not body.nbytes:
            return None
        if body[: len(JPEG_START)].tobytes() != JPEG_START:
            self._note(f"object {opened.seq}: the event's body is not a JPEG; not saved")
            return None
        stem = f"{when:%Y%m%dT%H%M%SZ}-{kind}-{clip[:8] if clip else 'noclip'}"
        path = self._out_dir / f"{stem}.jpg"
        if path.exists():
            path = self._out_dir / f"{stem}-{opened.seq}.jpg"
        try:
            self._out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Decrypted footage: this phone's user only.
            write_atomic(path, body.tobytes(), mode=0o600)
        except OSError as exc:
            self._note(f"cannot save the snapshot as {path}: {exc.strerror or exc}")
            return None
        return path

    def _keyring(self, opened: Opened, keyring: Keyring, when: datetime) -> None:
        shown = self._keyrings.get(opened.device_id)
        self._keyrings[opened.device_id] = (opened.seq, keyring.epoch)
        if shown is not None and keyring.epoch == shown[1]:
            return
        phones = [r.name for r in keyring.recipients]
        mine = next((r.name for r in keyring.recipients if r.key == self._own_key), None)
        name = self._name(opened.device_id)
        if self._json:
            self._print_json(
                {
                    "time": _iso(when),
                    "type": "keyring",
                    "device": opened.device_id.hex()[:16],
                    "name": name,
                    "seq": opened.seq,
                    "epoch": keyring.epoch,
                    "phones": phones,
                    "this_phone": mine,
                }
            )
            return
        readers = ", ".join(_printable(p) + (" (this phone)" if p == mine else "") for p in phones)
        print(
            f"{_stamp(when)}  keyring  epoch {keyring.epoch}, readable by {readers}  "
            f"(doorbell {name})",
            file=self._stdout,
            flush=True,
        )

    def _name(self, device_id: bytes) -> str:
        return _printable(self._names.get(device_id, device_id.hex()[:16]))

    def _print_json(self, document: dict[str, Any]) -> None:
        print(json.dumps(document, ensure_ascii=False), file=self._stdout, flush=True)

    def _skip(self, topic: str, reason: str) -> None:
        self._note(f"skipped a message on {_printable(topic)}: {reason}")

    def _note(self, message: str) -> None:
        print(f"doorbell-phone: {message}", file=self._stderr, flush=True)


def watch(
    home: PhoneHome,
    options: WatchOptions,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> bool:
    """Watch until ``count`` events arrived (True), the timeout ran out (False unless
    no count was asked for), or Ctrl-C. Raises `WatchError` when it cannot start."""
    started = time.monotonic()
    stderr = stderr or sys.stderr
    options.check()
    watcher = Watcher.for_home(
        home,
        prefix=options.prefix,
        out_dir=options.out,
        as_json=options.json,
        stdout=stdout,
        stderr=stderr,
    )
    deadline = started + (options.timeout if options.timeout is not None else CONNECT_TIMEOUT)
    session = _Session(options, watcher, stderr)
    session.connect(deadline)
    try:
        session.wait_subscribed(deadline)
        end = None if options.timeout is None else started + options.timeout
        if session.finished.wait(None if end is None else max(0.0, end - time.monotonic())):
            return True
    finally:
        session.close()
    if options.count is None:
        return True
    print(
        f"doorbell-phone: timed out after {options.timeout:g} s: "
        f"{watcher.events} of {options.count} event(s) arrived",
        file=stderr,
    )
    return False


class _Session:
    """The paho client behind one watch: connects, subscribes, feeds the watcher."""

    def __init__(self, options: WatchOptions, watcher: Watcher, stderr: TextIO) -> None:
        self.options = options
        self.watcher = watcher
        self.stderr = stderr
        self.finished = threading.Event()
        self._ready = threading.Event()
        self._refused: str | None = None
        self._subscribed = False
        # A random client id: two phones of one household must not keep
        # disconnecting each other.
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"doorbell-phone-{os.urandom(4).hex()}"
        )
        client.suppress_exceptions = True
        if options.username:
            password = None
            if options.password_file is not None:
                try:
                    password = read_secret(options.password_file, "--password-file")
                except ConfigError as exc:
                    raise WatchError(str(exc)) from None
            client.username_pw_set(options.username, password)
        if options.use_tls:
            ca = None if options.ca_file is None else str(options.ca_file)
            try:
                # Without --ca-file, the system's trust store verifies the broker.
                client.tls_set(ca_certs=ca)
            except (OSError, ssl.SSLError, ValueError) as exc:
                source = "the system's CA certificates" if ca is None else f"--ca-file {ca}"
                raise WatchError(f"cannot set up TLS with {source}: {exc}") from None
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed_to
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        self.client = client

    @property
    def topics(self) -> list[tuple[str, int]]:
        prefix = self.options.prefix
        return [(all_devices(prefix, EVENT_LEAF), 1), (all_devices(prefix, KEYRING_LEAF), 1)]

    def connect(self, deadline: float) -> None:
        options = self.options
        while True:
            try:
                self.client.connect(options.host, options.broker_port, keepalive=KEEPALIVE)
                break
            except (OSError, ValueError) as exc:
                if time.monotonic() >= deadline:
                    raise WatchError(
                        f"cannot reach the MQTT broker at {self.options.address}: {exc}"
                    ) from None
            # Retry pacing while the broker is still starting or the network coming up.
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        self.client.loop_start()

    def wait_subscribed(self, deadline: float) -> None:
        if not self._ready.wait(max(0.0, deadline - time.monotonic())):
            raise WatchError(f"the MQTT broker at {self.options.address} did not answer in time")
        if self._refused is not None:
            raise WatchError(self._refused)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _connected(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refused = f"the MQTT broker at {self.options.address} refused us: {reason}"
            self._ready.set()
            return
        # Subscribing on every connect: a clean session forgets subscriptions.
        client.subscribe(self.topics)

    def _subscribed_to(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [
            topic for (topic, _), r in zip(self.topics, reasons, strict=False) if r.is_failure
        ]
        if refused:
            self._refused = f"the MQTT broker refused the subscription to {', '.join(refused)}"
            self._ready.set()
            return
        if not self._subscribed:
            self._subscribed = True
            print(
                f"doorbell-phone: watching {self.topics[0][0]} on {self.options.address}",
                file=self.stderr,
                flush=True,
            )
        self._ready.set()

    def _disconnected(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._subscribed and not self.finished.is_set():
            print(
                f"doorbell-phone: lost the broker ({reason}); reconnecting",
                file=self.stderr,
                flush=True,
            )

    def _message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self.finished.is_set():
            return
        try:
            try:
                topic = message.topic
            except UnicodeDecodeError:
                topic = repr(message._topic)  # the raw bytes are all there is
            self.watcher.handle(topic, message.payload)
        except BrokenPipeError:
            self.finished.set()  # nobody reads our output any more
            return
        except Exception as exc:  # one bad message must not end the watch
            print(f"doorbell-phone: internal error on a message: {exc!r}", file=self.stderr)
        count = self.options.count
        if count is not None and self.watcher.events >= count:
            self.finished.set()


def _stamp(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S} UTC"


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _printable(text: str, limit: int = 200) -> str:
    """Text from the wire or from files, safe to put on a terminal."""
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")
