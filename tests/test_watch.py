"""``doorbell-phone watch``: sealed events from a real broker, verified, decrypted, printed;
forged, foreign, duplicated and forked messages reported and skipped."""

from __future__ import annotations

import dataclasses
import io
import json
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import av
import pytest
from daemon_harness import wait_for

from doorbell.phone.cli import main
from doorbell.phone.home import PhoneHome
from doorbell.phone.watch import MAX_MESSAGE, SHOWN_PER_REASON, Watcher
from doorbell.sealing import (
    DeviceSigningKey,
    Keyring,
    KeyringStore,
    Kind,
    RecipientPrivateKey,
    SealedObject,
    Suite,
    load_device_key,
)
from doorbell.sealing.sealer import seal_bytes
from doorbell.transport.mqtt import MqttLink

# These tests use mqtt_fixture as a plugin (pytest_plugins below); registered before
# the import so that its asserts are rewritten like a conftest's.
pytest.register_assert_rewrite("mqtt_fixture")
from mqtt_fixture import (  # noqa: E402
    USER,
    Listener,
    Mosquitto,
    SealingDoorbell,
    Watch,
    mqtt_settings,
    only,
    small_jpeg,
)

pytest_plugins = ["mqtt_fixture"]  # mosquitto, secure_mosquitto, listen, link, bell

MakeLink = Callable[..., MqttLink]
Listen = Callable[..., Listener]
# 2025-11-29 21:00:00 UTC
WHEN_US = 1_764_450_000_250_000


@pytest.fixture
def watching(bell: SealingDoorbell, mosquitto: Mosquitto) -> Iterator[Callable[..., Watch]]:
    started: list[Watch] = []

    def start(*options: str) -> Watch:
        watch = Watch(bell.home, mosquitto, *options)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.stop()


def test_an_event_is_verified_decrypted_printed_and_its_snapshot_saved(
    bell: SealingDoorbell, link: MakeLink, watching: Callable[..., Watch], tmp_path: Path
) -> None:
    out = tmp_path / "snapshots"
    watch = watching("--count", "1", "--json", "--out", str(out))
    made = link(device=bell.device_id)
    sealed = bell.event("ring", small_jpeg(), time_us=WHEN_US)
    keyring, event = only(sealed, Kind.KEYRING), only(sealed, Kind.EVENT)
    made.deliver(keyring.name, keyring.data, Kind.KEYRING)
    made.deliver(event.name, event.data, Kind.EVENT)

    code, stdout, stderr = watch.finish()
    assert code == 0, stderr
    assert stderr == ""
    first, second = (json.loads(line) for line in stdout.splitlines())
    assert first == {
        "time": "2025-11-29T21:00:00Z",
        "type": "keyring",
        "device": bell.device_id,
        "name": "front door",
        "seq": keyring.seq,
        "epoch": 1,
        "phones": ["test-phone"],
        "this_phone": "test-phone",
    }
    meta = bell.home.reader().open(event.data).meta
    snapshot = out / f"20251129T210000Z-ring-{meta['clip'][:8]}.jpg"
    assert second == {
        "time": "2025-11-29T21:00:00Z",
        "type": "ring",
        "clip": meta["clip"],
        "device": bell.device_id,
        "name": "front door",
        "seq": event.seq,
        "snapshot": str(snapshot),
    }
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
    with av.open(str(snapshot)) as container:
        picture = next(container.decode(video=0))
    assert (picture.width, picture.height) == (64, 48)


def test_forged_foreign_and_garbage_are_reported_and_duplicates_printed_once(
    bell: SealingDoorbell,
    link: MakeLink,
    listen: Listen,
    watching: Callable[..., Watch],
    tmp_path: Path,
) -> None:
    watch = watching("--count", "2")
    made = link(device=bell.device_id)
    first = only(bell.event("ring", time_us=WHEN_US), Kind.EVENT)
    second = only(bell.event("motion", time_us=WHEN_US + 5_000_000), Kind.EVENT)
    stranger = SealingDoorbell(tmp_path / "stranger", trusted=False)
    try:
        foreign = only(stranger.event("ring"), Kind.EVENT)
    finally:
        stranger.close()
    tampered = bytearray(first.data)
    tampered[-100] ^= 1

    attacker = listen()
    attacker.publish(made.topics.event, b"garbage")
    attacker.publish(made.topics.event, bytes(tampered))
    attacker.publish(f"doorbell/{stranger.device_id}/event", bytes(foreign.data))
    # QoS 1 may deliver twice, and the spool re-sends after a crash.
    made.deliver(first.name, first.data, Kind.EVENT)
    made.deliver(first.name, first.data, Kind.EVENT)
    made.deliver(second.name, second.data, Kind.EVENT)

    code, stdout, stderr = watch.finish()
    assert code == 0, stderr
    clips = [bell.home.reader().open(s.data).meta["clip"][:8] for s in (first, second)]
    assert stdout.splitlines() == [
        f"2025-11-29 21:00:00 UTC  ring  clip {clips[0]}  (doorbell front door)",
        f"2025-11-29 21:00:05 UTC  motion  clip {clips[1]}  (doorbell front door)",
    ]
    topic = made.topics.event
    assert stderr.splitlines() == [
        f"doorbell-phone: skipped a message on {topic}: not a Doorbell sealed object (bad magic)",
        f"doorbell-phone: skipped a message on {topic}: device signature does not verify",
        f"doorbell-phone: skipped a message on doorbell/{stranger.device_id}/event: signed by "
        f"device {stranger.device_id}, which this phone does not trust",
    ]


def test_watch_over_tls_with_a_password(
    bell: SealingDoorbell, secure_mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = secure_mosquitto
    secrets = ["--ca-file", str(broker.ca_file), "--username", USER]
    watch = Watch(
        bell.home, broker, *secrets, "--password-file", str(broker.password_file), "--count", "1"
    )
    settings = mqtt_settings(
        broker, tls=True, ca_file=broker.ca_file, username=USER, password_file=broker.password_file
    )
    made = MqttLink(settings, bell.device_id, "Front door")
    try:
        made.start()
        wait_for(lambda: made.connected, 10, "the link to connect over TLS")
        event = only(bell.event("ring", time_us=WHEN_US), Kind.EVENT)
        made.deliver(event.name, event.data, Kind.EVENT)
        code, stdout, stderr = watch.finish()
    finally:
        made.close()
        watch.stop()
    assert code == 0, stderr
    assert stdout.startswith("2025-11-29 21:00:00 UTC  ring  clip ")

    wrong = bell.state.parent / "wrong-password"
    wrong.write_text("guess\n")
    assert _watch(bell.home, broker, *secrets, "--password-file", str(wrong)) == 2
    err = capsys.readouterr().err
    assert err == (
        f"doorbell-phone: the MQTT broker at {broker.host}:{broker.port} refused us: "
        "Not authorized\n"
    )


def test_fewer_events_than_asked_for_before_the_timeout_exits_1(
    bell: SealingDoorbell, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _watch(bell.home, mosquitto, "--count", "1", "--timeout", "1")
    assert code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == "doorbell-phone: timed out after 1 s: 0 of 1 event(s) arrived"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--password-file", "/nonexistent"], "--password-file needs --username"),
        (["--prefix", "doorbell/#"], "--prefix must be a plain topic without wildcards"),
        (["--count", "0"], "--count must be at least 1, got 0"),
        (["--username", "u", "--password-file", "/nonexistent"], "cannot read the secret file"),
        (["--ca-file", "/nonexistent"], "cannot set up TLS with --ca-file /nonexistent"),
    ],
)
def test_usage_errors_exit_2(
    bell: SealingDoorbell,
    mosquitto: Mosquitto,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    assert _watch(bell.home, mosquitto, *options) == 2
    err = capsys.readouterr().err
    assert err.startswith("doorbell-phone: ") and message in err, err


def test_an_unreachable_broker_exits_2_without_a_traceback(
    bell: SealingDoorbell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = Mosquitto(tmp_path)  # configured, never started
    assert _watch(bell.home, dead, "--timeout", "0.5") == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"doorbell-phone: cannot reach the MQTT broker at {dead.host}:{dead.port}"
    )
    assert "Connection refused" in err and "Traceback" not in err


def test_no_phone_key_or_no_trusted_doorbell_exits_2(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    home = PhoneHome(tmp_path / "phone")
    assert _watch(home, mosquitto) == 2
    assert "no phone key in" in capsys.readouterr().err
    home.init(Suite.X25519)
    assert _watch(home, mosquitto) == 2
    assert "trusts no doorbell yet" in capsys.readouterr().err


def _watch(home: PhoneHome, broker: Mosquitto, *options: str) -> int:
    argv = ["--home", str(home.directory), "watch", "--host", broker.host]
    return main([*argv, "--port", str(broker.port), *options])


# --- the watcher alone: every message is hostile input ---------------------------------


class Screen:
    """A watcher on text streams, fed by hand."""

    def __init__(self, bell: SealingDoorbell, **options: object) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.watcher = Watcher.for_home(
            bell.home, prefix="doorbell", stdout=self.out, stderr=self.err, **options
        )

    def lines(self) -> tuple[list[str], list[str]]:
        """What was printed since the last call: (stdout lines, stderr lines)."""
        printed = []
        for stream in (self.out, self.err):
            printed.append(stream.getvalue().splitlines())
            stream.seek(0)
            stream.truncate()
        return printed[0], printed[1]


def test_a_forked_chain_is_reported(bell: SealingDoorbell) -> None:
    screen = Screen(bell)
    event = only(bell.event("ring", time_us=WHEN_US), Kind.EVENT)
    topic = f"doorbell/{bell.device_id}/event"
    key, _ = load_device_key(bell.state)
    keyring = KeyringStore(bell.state).load()
    meta = {"type": "ring", "clip": "0" * 32, "stream": "1" * 32, "first_index": 0}
    # Validly signed, same sequence number, other content: only a copied device can.
    fork = seal_bytes(key, keyring, event.seq, bytes(32), Kind.EVENT, meta, b"", WHEN_US)
    screen.watcher.handle(topic, event.data)
    screen.watcher.handle(topic, event.data)
    assert len(screen.lines()[0]) == 1
    screen.watcher.handle(topic, fork)
    out, err = screen.lines()
    assert out == []
    assert err == [
        f"doorbell-phone: skipped a message on {topic}: FORK: object {event.seq} arrived again "
        "with different content (a copied or restored doorbell state, or a stolen device key)"
    ]
    assert screen.watcher.events == 1


def test_misplaced_oversized_and_strange_messages_are_skipped(bell: SealingDoorbell) -> None:
    screen = Screen(bell)
    sealed = bell.event("ring", time_us=WHEN_US)
    keyring, event = only(sealed, Kind.KEYRING), only(sealed, Kind.EVENT)
    own = f"doorbell/{bell.device_id}"
    other = "doorbell/00000000000000aa/event"
    screen.watcher.handle(f"{own}/event", keyring.data)
    screen.watcher.handle(f"{own}/keyring", event.data)
    screen.watcher.handle(other, event.data)
    screen.watcher.handle(f"{own}/event", bytes(MAX_MESSAGE + 1))
    screen.watcher.handle(f"{own}/snapshot", event.data)
    screen.watcher.handle("doorbell/\x1b[2J/event", event.data)
    out, err = screen.lines()
    assert out == []
    skipped = "doorbell-phone: skipped a message on"
    assert err == [
        f"{skipped} {own}/event: object {keyring.seq} is of kind KEYRING; "
        "this topic carries event objects",
        f"{skipped} {own}/keyring: object {event.seq} is of kind EVENT; "
        "this topic carries keyring objects",
        f"{skipped} {other}: object signed by device {bell.device_id}",
        f"{skipped} {own}/event: {MAX_MESSAGE + 1} bytes, more than the {MAX_MESSAGE} "
        "a doorbell sends",
        f"{skipped} {own}/snapshot: not a doorbell/<device>/event or /keyring topic",
        f"{skipped} doorbell/\\x1b[2J/event: not a doorbell/<device>/event or /keyring topic",
    ]
    assert screen.watcher.events == 0


def test_keyring_changes_are_shown_once_each(bell: SealingDoorbell) -> None:
    screen = Screen(bell)
    topic = f"doorbell/{bell.device_id}/keyring"
    first = only(bell.event(time_us=WHEN_US), Kind.KEYRING)
    screen.watcher.handle(topic, first.data)
    screen.watcher.handle(topic, first.data)  # retained: comes back on every subscribe
    partner = RecipientPrivateKey.generate(Suite.X25519).public_key()
    with KeyringStore(bell.state).editing() as box:
        box[0] = box[0].add("partner", partner, datetime.now(UTC))
    second = only(bell.event(time_us=WHEN_US), Kind.KEYRING)
    screen.watcher.handle(topic, second.data)
    screen.watcher.handle(topic, first.data)  # older: not news
    out, err = screen.lines()
    assert err == []
    assert out == [
        "2025-11-29 21:00:00 UTC  keyring  epoch 1, readable by test-phone (this phone)  "
        "(doorbell front door)",
        "2025-11-29 21:00:00 UTC  keyring  epoch 2, readable by test-phone (this phone), "
        "partner  (doorbell front door)",
    ]
    assert screen.watcher.events == 0


def test_an_event_without_out_dir_or_snapshot_has_none(bell: SealingDoorbell) -> None:
    screen = Screen(bell, as_json=True)
    event = only(bell.event("ring", small_jpeg(), time_us=WHEN_US), Kind.EVENT)
    screen.watcher.handle(f"doorbell/{bell.device_id}/event", event.data)
    [line], err = screen.lines()
    assert err == []
    assert json.loads(line)["snapshot"] is None


# --- the phone remembers: replays, rollbacks and stanzas across restarts --------------------


def test_a_replayed_event_after_a_restart_is_a_replay_not_a_ring(
    bell: SealingDoorbell, link: MakeLink, watching: Callable[..., Watch]
) -> None:
    """Through the real broker: the first watch shows a ring; a broker replaying it (or an
    older one) to the next watch gets a REPLAY on stderr, and only the new ring is shown."""
    made = link(device=bell.device_id)
    older = only(bell.event("ring", time_us=WHEN_US), Kind.EVENT)
    shown = only(bell.event("ring", time_us=WHEN_US + 1_000_000), Kind.EVENT)
    first = watching("--count", "1")
    made.deliver(shown.name, shown.data, Kind.EVENT)
    code, stdout, stderr = first.finish()
    assert code == 0 and len(stdout.splitlines()) == 1, stderr

    new = only(bell.event("motion", time_us=WHEN_US + 2_000_000), Kind.EVENT)
    second = watching("--count", "1")
    for sealed in (shown, older, new):
        made.deliver(sealed.name, sealed.data, Kind.EVENT)
    code, stdout, stderr = second.finish()
    assert code == 0, stderr
    assert [line.split("  ")[1] for line in stdout.splitlines()] == ["motion"]
    topic = made.topics.event
    assert stderr.splitlines() == [
        f"doorbell-phone: skipped a message on {topic}: REPLAY: event {seq} is not newer than "
        f"seq {shown.seq}, which this phone has already seen (replayed or held back by the "
        "broker): not a new ring"
        for seq in (shown.seq, older.seq)
    ]


def test_a_keyring_rolled_back_after_a_restart_is_refused(bell: SealingDoorbell) -> None:
    topic = f"doorbell/{bell.device_id}/keyring"
    first = only(bell.event(time_us=WHEN_US), Kind.KEYRING)
    partner = RecipientPrivateKey.generate(Suite.X25519).public_key()
    with KeyringStore(bell.state).editing() as box:
        box[0] = box[0].add("partner", partner, datetime.now(UTC))
    second = only(bell.event(time_us=WHEN_US), Kind.KEYRING)
    screen = Screen(bell)
    screen.watcher.handle(topic, first.data)
    screen.watcher.handle(topic, second.data)
    assert len(screen.lines()[0]) == 2

    # The device state is restored from a backup: epoch 1 again, at a higher seq.
    key, _ = load_device_key(bell.state)
    old = bell.home.reader().open(first.data)
    keyring = KeyringStore(bell.state).load().revoke("partner")
    rolled = dataclasses.replace(keyring, epoch=1)
    data = seal_bytes(
        key,
        rolled,
        second.seq + 5,
        bytes(32),
        Kind.KEYRING,
        {"epoch": 1},
        bytes(old.body),
        WHEN_US,
    )
    restarted = Screen(bell)
    restarted.watcher.handle(topic, first.data)  # retained and older: not news, no alarm
    restarted.watcher.handle(topic, data)
    out, err = restarted.lines()
    assert out == []
    assert err == [
        f"doorbell-phone: skipped a message on {topic}: keyring rollback: seq {second.seq + 5} "
        f"is sealed under epoch 1, but this phone has already seen keyring epoch 2 "
        f"(seq {second.seq})"
    ]


def _ring_shown(
    bell: SealingDoorbell,
) -> tuple[Screen, str, SealedObject, DeviceSigningKey, Keyring, bytes]:
    """A watcher that showed the doorbell's keyring and one ring: (screen, event topic,
    that event, the device key, its keyring, the event's chain hash)."""
    screen = Screen(bell)
    topic = f"doorbell/{bell.device_id}/event"
    keyring_object, event = bell.event("ring", time_us=WHEN_US)
    screen.watcher.handle(f"doorbell/{bell.device_id}/keyring", keyring_object.data)
    screen.watcher.handle(topic, event.data)
    assert len(screen.lines()[0]) == 2
    key, _ = load_device_key(bell.state)
    keyring = KeyringStore(bell.state).load()
    prev = bell.home.reader().verify(event.data).chain_hash
    return screen, topic, event, key, keyring, prev


def test_live_events_are_held_to_the_keyring_and_the_meta_rules(bell: SealingDoorbell) -> None:
    screen, topic, event, key, keyring, prev = _ring_shown(bell)
    stranger = RecipientPrivateKey.generate(Suite.X25519).public_key()
    extra = dataclasses.replace(
        keyring.add("mallory", stranger, datetime.now(UTC)), epoch=keyring.epoch
    )
    meta = {"type": "ring", "clip": "0" * 32, "stream": "", "first_index": 0}
    spied = seal_bytes(key, extra, event.seq + 1, prev, Kind.EVENT, meta, b"", WHEN_US)
    screen.watcher.handle(topic, spied)
    sloppy = seal_bytes(key, keyring, event.seq + 2, prev, Kind.EVENT, {"type": "ring"}, b"", 0)
    screen.watcher.handle(topic, sloppy)
    out, err = screen.lines()
    assert out == []
    assert err == [
        f"doorbell-phone: skipped a message on {topic}: seq {event.seq + 1}: stanzas are not "
        "exactly the keyring: 1 stanza(s) for keys not in the keyring",
        f"doorbell-phone: skipped a message on {topic}: object {event.seq + 2}: event meta: "
        "'clip' is missing",
    ]


def test_a_live_event_under_a_keyring_never_published_is_refused(bell: SealingDoorbell) -> None:
    """The device publishes a changed keyring before any object sealed under it: an event of a
    newer epoch than every keyring seen adds recipients nobody was shown."""
    screen, topic, event, key, keyring, prev = _ring_shown(bell)
    spy = RecipientPrivateKey.generate(Suite.X25519).public_key()
    spied = keyring.add("spy", spy, datetime.now(UTC))
    meta = {"type": "ring", "clip": "0" * 32, "stream": "", "first_index": 0}
    sealed = seal_bytes(key, spied, event.seq + 1, prev, Kind.EVENT, meta, b"", WHEN_US)
    screen.watcher.handle(topic, sealed)
    out, err = screen.lines()
    assert out == []
    assert err == [
        f"doorbell-phone: skipped a message on {topic}: event {event.seq + 1} is sealed under "
        f"keyring epoch {spied.epoch}, but the newest keyring published is epoch "
        f"{keyring.epoch}: a keyring never published"
    ]


# --- floods: a bounded number of lines, whatever arrives -------------------------------


def test_a_flood_of_bad_messages_is_summarised_not_printed_line_by_line(
    bell: SealingDoorbell, link: MakeLink, listen: Listen, watching: Callable[..., Watch]
) -> None:
    watch = watching("--count", "1")
    made = link(device=bell.device_id)
    attacker = listen()
    stray = "doorbell/not-a-device/event"
    for _ in range(1000):
        attacker.publish(made.topics.event, b"garbage")
        attacker.publish(stray, b"garbage")
    # After the flood, the watch still shows a ring, and then summarises as it exits.
    event = only(bell.event("ring", time_us=WHEN_US), Kind.EVENT)
    made.deliver(event.name, event.data, Kind.EVENT)

    code, stdout, stderr = watch.finish()
    assert code == 0, stderr
    assert stdout.startswith("2025-11-29 21:00:00 UTC  ring  clip ")
    skipped = "doorbell-phone: skipped a message on"
    malformed = f"{skipped} {made.topics.event}: not a Doorbell sealed object (bad magic)"
    misplaced = f"{skipped} {stray}: not a doorbell/<device>/event or /keyring topic"
    assert stderr.splitlines() == [
        malformed,
        misplaced,
        malformed,
        misplaced,
        malformed,
        misplaced,
        "doorbell-phone: skipped 997 more message(s): not a well-formed sealed object",
        "doorbell-phone: skipped 997 more message(s): "
        "not a doorbell/<device>/event or /keyring topic",
    ]


def test_summaries_count_only_what_was_not_yet_said(bell: SealingDoorbell) -> None:
    screen = Screen(bell)
    topic = f"doorbell/{bell.device_id}/event"
    for _ in range(5):
        screen.watcher.handle(topic, b"garbage")
    screen.watcher.rejections.summarise()
    out, err = screen.lines()
    assert out == [] and len(err) == SHOWN_PER_REASON + 1
    assert err[-1] == (
        f"doorbell-phone: skipped {5 - SHOWN_PER_REASON} more message(s): "
        "not a well-formed sealed object"
    )
    screen.watcher.rejections.summarise()
    assert screen.lines() == ([], [])
    # Past the first few, the same kind of rejection is only counted, in the next summary.
    screen.watcher.handle(topic, b"garbage")
    assert screen.lines() == ([], [])
    screen.watcher.rejections.summarise()
    assert screen.lines() == (
        [],
        ["doorbell-phone: skipped 1 more message(s): not a well-formed sealed object"],
    )
