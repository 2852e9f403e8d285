"""What a broker, and whoever may publish on it, can do to the running daemon and to
``doorbell-phone watch``: messages far larger than anything a doorbell sends, and an
outage. Everything goes through a real Mosquitto to the real processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonRig, wait_for

from doorbell.common.topics import DEVICE_ID
from doorbell.phone.watch import subscriptions
from doorbell.transport import homeassistant as ha
from doorbell.transport.mqtt import MqttLink

# These tests use mqtt_fixture as a plugin (pytest_plugins below); registered before
# the import so that its asserts are rewritten like a conftest's.
pytest.register_assert_rewrite("mqtt_fixture")
from mqtt_fixture import Listener, Mosquitto, Watch, mqtt_settings  # noqa: E402

pytest_plugins = ["mqtt_fixture"]  # persistent_mosquitto, listen

Listen = Callable[..., Listener]
MIB = 1024 * 1024
# Mosquitto's default message_size_limit lets anyone publish this much.
FLOOD = 50 * MIB
# Peak resident memory may grow by this much across the flood: less than one copy of
# one message. Before the Maximum Packet Size, this test measured watch going from 45
# to 200 MiB and the daemon from 76 to 237 MiB.
MAX_GROWTH = 16 * MIB
# Peak resident memory of each process after the flood; measured here with the
# packet bound: watch 46 MiB, the daemon 79 MiB (a 320x240 synthetic camera).
MAX_WATCH_RSS = 80 * MIB
MAX_DAEMON_RSS = 160 * MIB
# The broker is down this long: paho's default backoff (1, 2, 4, 8, 16 s...) would next
# try 31 s after the outage began, 13 s after the broker came back.
OUTAGE = 18.0
# A ring pressed during the outage reaches a running watch this soon after the broker is
# back: both reconnect within 2 s, the daemon sends what waited at once, and the broker
# queues it in the watch's session if the daemon was back first.
BACK_WITHIN = 5.0


@pytest.fixture
def mosquitto(persistent_mosquitto: Mosquitto) -> Mosquitto:
    """Brokers here keep sessions across a restart, as Debian's configuration does."""
    return persistent_mosquitto


@pytest.fixture
def doorbell(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[DaemonRig]:
    """The real daemon with MQTT and Home Assistant discovery on, ready and connected."""
    mqtt = {
        "enabled": True,
        "host": mosquitto.host,
        "port": mosquitto.port,
        "keepalive": 5,
        "homeassistant": {"discovery": True},
    }
    rig = DaemonRig(tmp_path / "doorbell", extra={"mqtt": mqtt})
    rig.start()
    try:
        rig.wait_ready()
        wait_for(lambda: rig.status()["mqtt"]["connected"], 20, "the daemon's MQTT link")
        yield rig
    finally:
        rig.kill()


def device_id(rig: DaemonRig) -> str:
    """The 16 hex digits that name the daemon's doorbell in topics."""
    [trusted] = rig.home.trusted()
    return trusted.key.device_id.hex()[:16]


def subscribed_topics(rig: DaemonRig, broker: Mosquitto) -> list[str]:
    """A concrete topic for each subscription of the daemon and of a watch, as the code
    makes them: this doorbell's id where a watch subscribes for every doorbell."""
    device = device_id(rig)
    assert DEVICE_ID.fullmatch(device)
    link = MqttLink(mqtt_settings(broker, discovery=True), device, "test")
    daemon = link.subscriptions
    watch = [topic.replace("+", device) for topic in subscriptions("doorbell")]
    assert daemon and watch
    return daemon + watch


def memory(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of a running process, in bytes: VmHWM is its peak resident size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            number, unit = value.split()
            assert unit == "kB"
            return int(number) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def rings(watch: Watch) -> list[tuple[float, dict[str, object]]]:
    """The rings a watch printed (with --json), each with the time it arrived."""
    printed = [(when, json.loads(line)) for when, line in watch.timed_lines("out")]
    return [(when, line) for when, line in printed if line["type"] == "ring"]


def test_50_mb_on_every_subscribed_topic_leaves_daemon_and_watch_small_and_working(
    doorbell: DaemonRig, mosquitto: Mosquitto, listen: Listen
) -> None:
    assert doorbell.process is not None
    discovery = listen("homeassistant/+/+/+/config")
    discovery.wait("the daemon's discovery", lambda ms: len(ms) >= 2, 10)
    watch = Watch(doorbell.home, mosquitto, "--json", "--timeout", "300")
    try:
        before = {"daemon": memory(doorbell.process.pid), "watch": memory(watch.pid)}
        attacker = listen()
        for topic in subscribed_topics(doorbell, mosquitto):
            attacker.publish(topic, bytes(FLOOD))

        # After the flood, from the same publisher on the same topic: once the daemon
        # sends its discovery again, it had the flood's turn, and survived it.
        configs = len(discovery.messages)
        attacker.publish("homeassistant/status", ha.BIRTH_PAYLOAD)
        discovery.wait("discovery sent again", lambda ms: len(ms) >= configs + 2, 10)
        # A ring after the flood: the watch verifies and prints it.
        doorbell.command("ring")
        wait_for(lambda: bool(rings(watch)), 30, "the ring at the watch")
        after = {"daemon": memory(doorbell.process.pid), "watch": memory(watch.pid)}
    finally:
        watch.stop()
    [(_, ring)] = rings(watch)
    assert ring["device"] == device_id(doorbell)
    for name, limit in (("daemon", MAX_DAEMON_RSS), ("watch", MAX_WATCH_RSS)):
        figures = f"{name}: peak RSS {before[name] / MIB:.0f} -> {after[name] / MIB:.0f} MiB"
        print(figures)
        assert after[name] - before[name] <= MAX_GROWTH, figures
        assert after[name] <= limit, figures
    assert doorbell.status()["mqtt"]["connected"]
    # The flood never reached the watch: not even a size rejection to report.
    assert [line for _, line in watch.timed_lines("err")][1:] == []


def test_a_ring_during_an_outage_reaches_the_watch_soon_after_the_broker_is_back(
    doorbell: DaemonRig, mosquitto: Mosquitto
) -> None:
    assert doorbell.process is not None
    watch = Watch(doorbell.home, mosquitto, "--json", "--timeout", "300")
    try:
        mosquitto.stop()
        wait_for(lambda: not doorbell.status()["mqtt"]["connected"], 10, "the outage noticed")
        doorbell.command("ring")
        wait_for(
            lambda: doorbell.status()["sinks"]["mqtt"]["failures"] > 0,
            10,
            "the ring refused by the offline link",
        )
        # The outage itself, long enough for paho's default backoff to show.
        time.sleep(OUTAGE)
        mosquitto.start()
        back = time.monotonic()
        try:
            wait_for(lambda: bool(rings(watch)), 60, "the ring at the watch")
        except AssertionError as exc:
            said = [line for stream in ("out", "err") for _, line in watch.timed_lines(stream)]
            raise AssertionError(f"{exc}; the watch said {said}") from None
    finally:
        watch.stop()
    [(arrived, ring)] = rings(watch)
    assert ring["device"] == device_id(doorbell)
    assert [line for _, line in watch.timed_lines("err")][1:] == [
        "doorbell-phone: lost the broker (connection lost); reconnecting"
    ]
    assert arrived - back <= BACK_WITHIN, f"the ring came {arrived - back:.1f} s after the broker"
