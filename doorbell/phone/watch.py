"""``doorbell-phone watch``: sealed events and keyrings live from the MQTT broker, opened here.

Every message is hostile input: the broker, and anyone who may publish on it, can
send anything on any topic. A message is size-checked, then verified against the
pinned doorbells and decrypted; whatever fails is reported on stderr, naming the
topic and the reason, and the watch goes on. A flood of bad messages is summarised:
the first few of each kind in full, then how many more there were.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from doorbell.common.mqtt_client import (
    connect_options,
    disconnect_reason,
    end_session,
)
from doorbell.common.topics import (
    EVENT_LEAF,
    KEYRING_LEAF,
    all_devices,
    split_topic,
    valid_prefix,
)
from doorbell.phone.client import ClientSetupError, phone_client
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
    BadSignature,
    DecryptionFailed,
    Envelope,
    Keyring,
    Kind,
    MalformedObject,
    NotARecipient,
    Opened,
    Reader,
    RecipientPublicKey,
    SealingError,
    UntrustedDevice,
    write_atomic,
)

# The largest message a doorbell publishes is an event: a JPEG snapshot at most 1920 px
# wide (pure noise at the tallest camera the config allows, 1920 x 3040, makes about
# 5.5 MB at the snapshot quality) sealed with at most 64 stanzas and Padmé padding
# (at most 12%); a keyring is at most 256 KiB. Anything bigger is not from a doorbell,
# and the broker is told never to send it (the Maximum Packet Size in CONNECT).
MAX_MESSAGE = 8 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
KEEPALIVE = 30
# While the watch runs, the broker keeps its session this long after a lost connection
# (and, if it persists sessions, across its own restart): the events published before
# the watch is back are queued for it, not lost. A doorbell back from an outage may
# well reconnect first. A watch that exits ends its session at once; one that was
# killed leaves the broker queueing for it no longer than this.
SESSION_EXPIRY = 600
# (device, seq) pairs remembered for duplicate and fork detection.
MAX_REMEMBERED = 65536
# A flood of bad messages prints this many lines per kind of rejection, then counts.
SHOWN_PER_REASON = 3
# While a flood goes on, how often the watch says how many more it did not print.
SUMMARY_INTERVAL = 60.0
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
CLIP_ID = re.compile(r"[0-9a-f]{32}")
JPEG_START = b"\xff\xd8\xff"


# What a message that fails to open is, in the words of a summary line.
SEALING_REASONS: dict[type[SealingError], str] = {
    MalformedObject: "not a well-formed sealed object",
    BadSignature: "a device signature that does not verify",
    UntrustedDevice: "from a doorbell this phone does not trust",
    NotARecipient: "not sealed for this phone",
    DecryptionFailed: "does not decrypt",
}
FORKED = "FORK: a forked chain (a copied or restored doorbell state, or a stolen device key)"


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
        if not valid_prefix(self.prefix):
            raise WatchError(
                f"--prefix must be a plain topic without wildcards, got {self.prefix!r}"
            )
        if self.password_file is not None and not self.username:
            raise WatchError("--password-file needs --username")
        if self.count is not None and self.count < 1:
            raise WatchError(f"--count must be at least 1, got {self.count}")
        if self.timeout is not None and not self.timeout > 0:
            raise WatchError(f"--timeout must be more than 0 seconds, got {self.timeout}")


class Rejections:
    """What the watch dropped, on stderr: the first few of each kind of rejection in full,
    the rest only counted until ``summarise`` says how many there were.

    The kinds are the watcher's own short phrases, never text from the wire, so a
    flood of any variety prints a bounded number of lines. Thread-safe: paho's network
    thread adds, the main thread summarises.
    """

    def __init__(self, stderr: TextIO, *, shown: int = SHOWN_PER_REASON) -> None:
        self._stderr = stderr
        self._shown = shown
        self._counts: dict[str, int] = {}
        self._unsaid: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, why: str, line: str) -> None:
        with self._lock:
            count = self._counts[why] = self._counts.get(why, 0) + 1
            if count <= self._shown:
                _say(self._stderr, line)
            else:
                self._unsaid[why] = self._unsaid.get(why, 0) + 1

    def summarise(self) -> None:
        """One line for each kind with rejections not printed since the last call."""
        with self._lock:
            for why, count in self._unsaid.items():
                _say(self._stderr, f"skipped {count} more message(s): {why}")
            self._unsaid.clear()


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
        self.rejections = Rejections(self._stderr)
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
            what = f"{len(payload)} bytes, more than the {MAX_MESSAGE} a doorbell sends"
            self._skip(topic, what, "larger than a doorbell sends")
            return
        parts = split_topic(self._prefix, topic)
        if parts is None or parts[1] not in (EVENT_LEAF, KEYRING_LEAF):
            what = f"not a {self._prefix}/<device>/event or /keyring topic"
            self._skip(topic, what, what)
            return
        device, leaf = parts
        try:
            envelope = self._reader.verify(payload)
            opened = self._reader.open_envelope(envelope)
        except SealingError as exc:
            why = SEALING_REASONS.get(type(exc), "not a valid sealed object")
            self._skip(topic, str(exc), why)
            return
        try:
            when = opened.time
        except (ValueError, OverflowError, OSError):
            what = f"object {opened.seq}: time {opened.time_us} µs is not a date"
            self._skip(topic, what, "a time that is not a date")
            return
        if opened.device_id.hex()[:16] != device:
            what = f"object signed by device {opened.device_id.hex()[:16]}"
            self._skip(topic, what, "signed by another doorbell than its topic names")
            return
        expected = Kind.EVENT if leaf == EVENT_LEAF else Kind.KEYRING
        if opened.kind is not expected:
            what = f"object {opened.seq} is of kind {opened.kind.name}"
            self._skip(topic, f"{what}; this topic carries {leaf} objects", "on the wrong topic")
            return
        if not self._first_sighting(topic, opened):
            return
        try:
            keyring = check_contents(opened)
        except SealingError as exc:
            self._skip(topic, f"object {opened.seq}: {exc}", "contents a doorbell never seals")
            return
        if keyring is not None and self._known_keyring(opened.device_id, opened.seq, keyring):
            return  # retained on the broker, or late: not news
        problem = self._against_memory(envelope, opened, keyring)
        if problem is not None:
            self._skip(topic, *problem)
            return
        if keyring is None:
            self._event(opened, when)
        else:
            self._keyring(opened, keyring, when)
        self._remember(opened, keyring)

    def _against_memory(
        self, envelope: Envelope, opened: Opened, keyring: Keyring | None
    ) -> tuple[str, str] | None:
        """The rules that need what this phone saw before: replays, forks, rollbacks, and
        stanzas against the keyring of the object's epoch. ``(what, kind of rejection)``,
        or None when the object passes."""
        remembered = self._remembered.get(opened.device_id, NOTHING)
        head, known = remembered.head, remembered.keyring
        if keyring is None and head is not None and opened.seq <= head.seq:
            if opened.seq == head.seq and opened.chain_hash != head.hash:
                what = f"FORK: object {opened.seq} differs from the one this phone saw before"
                return what, FORKED
            what = (
                f"REPLAY: event {opened.seq} is not newer than seq {head.seq}, which this phone "
                "has already seen (replayed or held back by the broker): not a new ring"
            )
            return what, "REPLAY: not newer than an event this phone has seen"
        if keyring is not None and known is not None and opened.seq == known.seq:
            what = f"FORK: keyring object {opened.seq} differs from the one seen before"
            return what, FORKED
        rollback = epoch_rollback(opened.seq, opened.epoch, None, known)
        if rollback is not None:
            return rollback, "keyring rollback"
        if keyring is None and known is not None and opened.epoch > known.epoch:
            # The device publishes (retained) the keyring object before any object sealed
            # under a changed keyring: this phone would have seen it first.
            what = (
                f"event {opened.seq} is sealed under keyring epoch {opened.epoch}, but the "
                f"newest keyring published is epoch {known.epoch}: a keyring never published"
            )
            return what, "sealed under a keyring never published"
        sealed_under = keyring if keyring is not None else known.keyring if known else None
        if sealed_under is not None and sealed_under.epoch == opened.epoch:
            mismatch = stanza_mismatch(envelope, sealed_under)
            if mismatch is not None:
                return mismatch, "stanzas that are not exactly the keyring"
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
            what = (
                f"FORK: object {opened.seq} arrived again with different content "
                "(a copied or restored doorbell state, or a stolen device key)"
            )
            self._skip(topic, what, FORKED)
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

    def _skip(self, topic: str, what: str, why: str) -> None:
        """Report a dropped message: ``what`` in full while ``why``, the kind of
        rejection, is still rare; past that only counted by ``rejections``."""
        self.rejections.add(why, f"skipped a message on {_printable(topic)}: {what}")

    def _note(self, message: str) -> None:
        _say(self._stderr, message)


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
        while True:
            left = SUMMARY_INTERVAL if end is None else max(0.0, end - time.monotonic())
            if session.finished.wait(min(left, SUMMARY_INTERVAL)):
                return True
            if end is not None and time.monotonic() >= end:
                break
            watcher.rejections.summarise()
    finally:
        session.close()
        watcher.rejections.summarise()
    if options.count is None:
        return True
    print(
        f"doorbell-phone: timed out after {options.timeout:g} s: "
        f"{watcher.events} of {options.count} event(s) arrived",
        file=stderr,
    )
    return False


def subscriptions(prefix: str) -> list[str]:
    """What a watch subscribes to: every doorbell's events and keyrings under ``prefix``."""
    return [all_devices(prefix, EVENT_LEAF), all_devices(prefix, KEYRING_LEAF)]


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
        try:
            client = phone_client(
                username=options.username,
                password_file=options.password_file,
                tls=options.use_tls,
                ca_file=options.ca_file,
            )
        except ClientSetupError as exc:
            raise WatchError(str(exc)) from None
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed_to
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        self.client = client

    @property
    def topics(self) -> list[tuple[str, int]]:
        return [(topic, 1) for topic in subscriptions(self.options.prefix)]

    def connect(self, deadline: float) -> None:
        options = self.options
        while True:
            try:
                self.client.connect(
                    options.host,
                    options.broker_port,
                    keepalive=KEEPALIVE,
                    **connect_options(MAX_MESSAGE, session_expiry=SESSION_EXPIRY),
                )
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
        self.client.disconnect(properties=end_session())
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
        # Subscribing on every connect: a clean start forgets subscriptions.
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
                f"doorbell-phone: lost the broker ({disconnect_reason(flags, reason)}); "
                "reconnecting",
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


def _say(stream: TextIO, message: str) -> None:
    print(f"doorbell-phone: {message}", file=stream, flush=True)


def _stamp(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S} UTC"


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _printable(text: str, limit: int = 200) -> str:
    """Text from the wire or from files, safe to put on a terminal."""
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")
