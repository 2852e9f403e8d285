"""The daemon's MQTT link against a real Mosquitto: availability, the last will, sealed
events and keyrings as the spool's sink, outages, hostile messages, Home Assistant."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_harness import wait_for

import doorbell as package
from doorbell.common.topics import split_topic
from doorbell.config.settings import MqttSettings
from doorbell.sealing import Kind
from doorbell.sealing.format import MAGIC
from doorbell.transport import homeassistant as ha
from doorbell.transport.mqtt import MAX_STATUS_PAYLOAD, MqttLink
from doorbell.transport.sink import SinkUnavailable

# These tests use mqtt_fixture as a plugin (pytest_plugins below); registered before
# the import so that its asserts are rewritten like a conftest's.
pytest.register_assert_rewrite("mqtt_fixture")
from mqtt_fixture import (  # noqa: E402
    USER,
    Listener,
    Mosquitto,
    SealingDoorbell,
    mqtt_settings,
    only,
    small_jpeg,
)

pytest_plugins = ["mqtt_fixture"]  # mosquitto, secure_mosquitto, listen, link, bell

DEVICE = "0123456789abcdef"
Listen = Callable[..., Listener]
MakeLink = Callable[..., MqttLink]
# HA's discovery topic pattern (homeassistant/components/mqtt/discovery.py, TOPIC_MATCHER).
HA_TOPIC = re.compile(
    r"homeassistant/(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?"
    r"(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
# Keys HA's MQTT platform schemas accept (MQTT_RO_SCHEMA, MQTT_ENTITY_COMMON_SCHEMA and
# the availability schemas, plus each platform's own); discovery drops anything else.
COMMON_KEYS = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "enabled_by_default",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_topic",
    "json_attributes_template",
    "default_entity_id",
    "unique_id",
    "name",
    "state_topic",
    "value_template",
    "qos",
    "encoding",
}
EVENT_KEYS = COMMON_KEYS | {"device_class", "event_types"}
BINARY_SENSOR_KEYS = COMMON_KEYS | {
    "device_class",
    "expire_after",
    "force_update",
    "off_delay",
    "payload_on",
    "payload_off",
}
DEVICE_KEYS = {
    "identifiers",
    "connections",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "hw_version",
    "serial_number",
    "sw_version",
    "via_device",
    "suggested_area",
    "configuration_url",
}


def discovery_for(device: str = DEVICE) -> ha.Discovery:
    return ha.Discovery(
        discovery_prefix="homeassistant",
        device_id=device,
        device_name="Front door",
        availability_topic=f"doorbell/{device}/availability",
        state_base=f"doorbell/{device}/ha",
    )


# --- connection, availability, last will ---------------------------------------------


def test_connects_and_says_online_retained(link: MakeLink, listen: Listen) -> None:
    made = link()
    # A client that subscribes after the fact gets "online" from the broker's store.
    late = listen(made.topics.availability)
    [message] = late.wait_on(made.topics.availability)
    assert (message.payload, message.retain, message.qos) == (b"online", True, 1)
    assert made.status() == {
        "broker": f"127.0.0.1:{made.settings.port}",
        "tls": False,
        "connected": True,
        "connects": 1,
        "delivered": 0,
        "discovery": False,
        "last_problem": None,
    }


def test_close_says_offline(link: MakeLink, listen: Listen) -> None:
    made = link()
    made.close()
    assert not made.connected
    [message] = listen(made.topics.availability).wait_on(made.topics.availability)
    assert (message.payload, message.retain) == (b"offline", True)


LINK_PROCESS = textwrap.dedent(
    """
    import sys, time
    from doorbell.config.settings import MqttSettings
    from doorbell.transport.mqtt import MqttLink

    settings = MqttSettings(enabled=True, host="127.0.0.1", port=int(sys.argv[1]), keepalive=5)
    link = MqttLink(settings, sys.argv[2], "Front door")
    link.start()
    deadline = time.monotonic() + 10
    while not link.connected:
        if time.monotonic() > deadline:
            sys.exit("never connected")
        time.sleep(0.02)
    print("connected", flush=True)
    sys.stdin.read()
    """
)


def test_last_will_says_offline_when_the_process_dies(mosquitto: Mosquitto, listen: Listen) -> None:
    topic = f"doorbell/{DEVICE}/availability"
    watcher = listen(topic)
    process = subprocess.Popen(
        [sys.executable, "-c", LINK_PROCESS, str(mosquitto.port), DEVICE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "connected\n"
        watcher.wait("online", lambda ms: [m.payload for m in ms] == [b"online"])
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The broker saw the socket close without a DISCONNECT: it publishes the will.
    watcher.wait("the last will", lambda ms: [m.payload for m in ms] == [b"online", b"offline"])
    [kept] = listen(topic).wait_on(topic)
    assert (kept.payload, kept.retain) == (b"offline", True)


def test_start_never_blocks_and_the_problem_is_reported(tmp_path: Path) -> None:
    problems: list[str] = []
    heard = threading.Event()

    def on_problem(message: str) -> None:
        problems.append(message)
        heard.set()

    dead = Mosquitto(tmp_path)  # configured, never started: nothing listens on its port
    made = MqttLink(mqtt_settings(dead), DEVICE, "Front door", on_problem=on_problem)
    try:
        began = time.monotonic()
        made.start()
        assert time.monotonic() - began < 0.5
        with pytest.raises(SinkUnavailable, match="not connected to the MQTT broker"):
            made.deliver("x.sealed", b"sealed", Kind.EVENT)
        assert heard.wait(5)
        assert problems == [f"cannot connect to the MQTT broker 127.0.0.1:{dead.port}; retrying"]
        assert made.status()["last_problem"] == problems[0]
        assert not made.connected
    finally:
        made.close()


def test_tls_with_a_password(
    secure_mosquitto: Mosquitto, bell: SealingDoorbell, tmp_path: Path
) -> None:
    broker = secure_mosquitto
    settings = mqtt_settings(
        broker, tls=True, ca_file=broker.ca_file, username=USER, password_file=broker.password_file
    )
    made = MqttLink(settings, bell.device_id, "Front door")
    try:
        made.start()
        wait_for(lambda: made.connected, 10, "the link to connect over TLS")
        event = only(bell.event(), Kind.EVENT)
        made.deliver(event.name, event.data, Kind.EVENT)
    finally:
        made.close()
    assert made.status()["tls"] is True


def test_a_wrong_password_is_reported(secure_mosquitto: Mosquitto, tmp_path: Path) -> None:
    problems: list[str] = []
    heard = threading.Event()

    def on_problem(message: str) -> None:
        problems.append(message)
        heard.set()

    wrong = tmp_path / "wrong-password"
    wrong.write_text("not the password\n")
    broker = secure_mosquitto
    settings = mqtt_settings(
        broker, tls=True, ca_file=broker.ca_file, username=USER, password_file=wrong
    )
    made = MqttLink(settings, DEVICE, "Front door", on_problem=on_problem)
    try:
        made.start()
        assert heard.wait(10)
        assert problems == [
            f"the MQTT broker 127.0.0.1:{broker.port} refused the connection: Not authorized"
        ]
        assert not made.connected
    finally:
        made.close()


def test_device_id_is_checked() -> None:
    with pytest.raises(ValueError, match="16 lowercase hex digits"):
        MqttLink(MqttSettings(), "doorbell/#", "Front door")


# --- the spool's sink ------------------------------------------------------------------


def test_wants_events_and_keyrings_only(link: MakeLink) -> None:
    made = link(start=False)
    assert made.name == "mqtt"
    assert [k for k in Kind if made.wants(k)] == [Kind.EVENT, Kind.KEYRING]
    with pytest.raises(ValueError, match="not SEGMENT"):
        made.deliver("x.sealed", b"x", Kind.SEGMENT)


def test_an_event_arrives_byte_identical_and_opaque(
    link: MakeLink, listen: Listen, bell: SealingDoorbell
) -> None:
    made = link(device=bell.device_id)
    watcher = listen(made.topics.event)
    snapshot = small_jpeg()
    event = only(bell.event("ring", snapshot), Kind.EVENT)
    made.deliver(event.name, event.data, Kind.EVENT)
    [message] = watcher.wait_on(made.topics.event)
    assert message.payload == bytes(event.data)
    assert (message.qos, message.retain) == (1, False)
    # The broker learns which doorbell, never what happened: no cleartext meta.
    payload = message.payload
    assert payload.startswith(MAGIC)
    # Needles long enough that random ciphertext (a 64 KiB size class) never holds them
    # by chance: the snapshot's first 32 bytes, and the meta as the sealer encodes it.
    for needle in (snapshot[:32], b'"type":"ring"', b'"first_index":', b'"clip":"'):
        assert needle not in payload
    assert "ring" not in message.topic
    assert made.status()["delivered"] == 1


def test_the_keyring_is_retained(link: MakeLink, listen: Listen, bell: SealingDoorbell) -> None:
    made = link(device=bell.device_id)
    keyring = only(bell.event(), Kind.KEYRING)
    made.deliver(keyring.name, keyring.data, Kind.KEYRING)
    [message] = listen(made.topics.keyring).wait_on(made.topics.keyring)
    assert (message.payload, message.retain, message.qos) == (bytes(keyring.data), True, 1)


def test_outage_refuses_fast_then_reconnects_and_delivers_in_order(
    mosquitto: Mosquitto,
    link: MakeLink,
    listen: Listen,
    bell: SealingDoorbell,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="doorbell.transport.mqtt")
    made = link(device=bell.device_id)
    first, second, third = (only(bell.event(), Kind.EVENT) for _ in range(3))
    made.deliver(first.name, first.data, Kind.EVENT)

    reconnected = threading.Event()
    made.when_connected = reconnected.set
    mosquitto.stop()
    wait_for(lambda: not made.connected, 5, "the link to notice the outage")
    began = time.monotonic()
    with pytest.raises(SinkUnavailable, match="not connected to the MQTT broker"):
        made.deliver(second.name, second.data, Kind.EVENT)
    assert time.monotonic() - began < 0.5
    lost = f"MQTT: lost the MQTT broker 127.0.0.1:{mosquitto.port} (connection lost); reconnecting"
    assert lost in [r.getMessage() for r in caplog.records]

    assert not reconnected.is_set()
    mosquitto.start()
    wait_for(lambda: made.connected, 15, "the link to reconnect by itself")
    # Whoever waits to deliver hears of it: the uploader tries again at once.
    assert reconnected.wait(5)
    watcher = listen(made.topics.event, made.topics.availability)
    # The spool retries the refused object first, then goes on in sequence order.
    for sealed in (second, third):
        made.deliver(sealed.name, sealed.data, Kind.EVENT)
    watcher.wait_on(made.topics.event, 2)
    assert [m.payload for m in watcher.on(made.topics.event)] == [
        bytes(second.data),
        bytes(third.data),
    ]
    # A broker without persistence lost "online": the reconnect said it again.
    assert [m.payload for m in watcher.on(made.topics.availability)] == [b"online"]
    assert made.status()["connects"] == 2


# --- Home Assistant discovery ----------------------------------------------------------


def test_discovery_messages_follow_home_assistants_schemas() -> None:
    discovery = discovery_for()
    configs = {m.topic: json.loads(m.payload) for m in discovery.configs()}
    event_topic = f"homeassistant/event/doorbell_{DEVICE}/doorbell/config"
    motion_topic = f"homeassistant/binary_sensor/doorbell_{DEVICE}/motion/config"
    assert list(configs) == [event_topic, motion_topic]
    for topic in configs:
        match = HA_TOPIC.fullmatch(topic)
        assert match is not None, topic
        assert match["node_id"] == f"doorbell_{DEVICE}"

    event, motion = configs[event_topic], configs[motion_topic]
    assert set(event) <= EVENT_KEYS, set(event) - EVENT_KEYS
    assert set(motion) <= BINARY_SENSOR_KEYS, set(motion) - BINARY_SENSOR_KEYS
    # The event platform requires state_topic and event_types.
    assert event["state_topic"] == f"doorbell/{DEVICE}/ha/doorbell"
    assert event["event_types"] == ["ring"]
    assert event["device_class"] == "doorbell"
    assert motion["state_topic"] == f"doorbell/{DEVICE}/ha/motion"
    assert motion["device_class"] == "motion"
    assert (motion["payload_on"], motion["payload_off"]) == ("ON", "OFF")
    for config in (event, motion):
        assert "availability" not in config  # exclusive with availability_topic
        assert config["availability_topic"] == f"doorbell/{DEVICE}/availability"
        assert (config["payload_available"], config["payload_not_available"]) == (
            "online",
            "offline",
        )
        assert config["qos"] in (0, 1, 2)
        assert isinstance(config["name"], str) and config["name"]
        assert config["origin"]["name"] == "doorbell"
        assert not any(c in config["state_topic"] for c in "#+")
        device = config["device"]
        assert set(device) <= DEVICE_KEYS
        assert device == {
            "identifiers": [f"doorbell-{DEVICE}"],
            "name": "Front door",
            "manufacturer": ha.MANUFACTURER,
            "model": ha.MODEL,
            "sw_version": package.__version__,
        }
    assert event["unique_id"] != motion["unique_id"]
    assert event["state_topic"] != motion["state_topic"]
    # Another doorbell's entities must not collide with these.
    other = discovery_for("fedcba9876543210")
    assert {m.topic for m in other.configs()}.isdisjoint(configs)
    assert other.event_config()["unique_id"] != event["unique_id"]
    # The states the link sends match what the configs announce.
    assert json.loads(ha.ring_payload()) == {"event_type": "ring"}
    assert json.loads(ha.ring_payload())["event_type"] in event["event_types"]
    assert ha.motion_payload(True).decode() == motion["payload_on"]
    assert ha.motion_payload(False).decode() == motion["payload_off"]
    assert discovery.status_topic == "homeassistant/status"


def test_removals_empty_both_configs_and_the_motion_state() -> None:
    discovery = discovery_for()
    assert [(m.topic, m.payload) for m in discovery.removals()] == [
        (f"homeassistant/event/doorbell_{DEVICE}/doorbell/config", b""),
        (f"homeassistant/binary_sensor/doorbell_{DEVICE}/motion/config", b""),
        (f"doorbell/{DEVICE}/ha/motion", b""),
    ]


def test_discovery_is_published_and_resent_when_home_assistant_starts(
    link: MakeLink, listen: Listen
) -> None:
    discovery = discovery_for()
    watcher = listen("homeassistant/#", f"doorbell/{DEVICE}/ha/#")
    made = link(discovery=True)
    event_topic, motion_topic = discovery.event_config_topic, discovery.motion_config_topic
    watcher.wait_on(event_topic)
    [config] = watcher.wait_on(motion_topic)
    assert json.loads(config.payload) == discovery.motion_config()
    assert config.retain is False  # live delivery; the broker keeps it retained:
    [kept] = listen(event_topic).wait_on(event_topic)
    assert (json.loads(kept.payload), kept.retain) == (discovery.event_config(), True)
    [motion] = watcher.wait_on(discovery.motion_topic)
    assert motion.payload == b"OFF"

    listen().publish("homeassistant/status", "online")
    watcher.wait_on(event_topic, 2)
    watcher.wait_on(motion_topic, 2)

    made.ring()
    [ring] = watcher.wait_on(discovery.ring_topic)
    assert (json.loads(ring.payload), ring.retain) == ({"event_type": "ring"}, False)
    made.motion(True)
    watcher.wait("motion on", lambda _: watcher.on(discovery.motion_topic)[-1].payload == b"ON")
    [kept] = listen(discovery.motion_topic).wait_on(discovery.motion_topic)
    assert (kept.payload, kept.retain) == (b"ON", True)


def test_disabled_discovery_removes_earlier_entities_and_sends_no_state(
    link: MakeLink, listen: Listen, bell: SealingDoorbell
) -> None:
    discovery = discovery_for(bell.device_id)
    earlier = link(discovery=True, device=bell.device_id)
    earlier.motion(True)
    earlier.close()
    watcher = listen("homeassistant/#", f"doorbell/{bell.device_id}/#")
    # The earlier run's retained configs and state reach the new subscriber first.
    watcher.wait_on(discovery.motion_topic)

    made = link(device=bell.device_id)
    for topic in (discovery.event_config_topic, discovery.motion_config_topic):
        assert watcher.wait_on(topic, 2)[-1].payload == b""
    made.ring()
    made.motion(True)
    event = only(bell.event(), Kind.EVENT)
    made.deliver(event.name, event.data, Kind.EVENT)
    watcher.wait_on(made.topics.event)
    # Ordered per publisher: had ring() or motion() sent anything, it would be here.
    assert watcher.on(discovery.ring_topic) == []
    assert [m.payload for m in watcher.on(discovery.motion_topic)] == [b"ON", b""]

    # The broker keeps nothing for Home Assistant: a new subscriber gets only the
    # marker, published retained after the removals.
    listen().publish("homeassistant/zz-marker", "x", retain=True)
    fresh = listen(
        discovery.event_config_topic, discovery.motion_config_topic, "homeassistant/zz-marker"
    )
    fresh.wait_on("homeassistant/zz-marker")
    assert [m.topic for m in fresh.messages] == ["homeassistant/zz-marker"]


def test_hostile_status_messages_do_not_harm_the_link(
    link: MakeLink, listen: Listen, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="doorbell.transport.mqtt")
    discovery = discovery_for()
    made = link(discovery=True)
    watcher = listen(discovery.event_config_topic)
    watcher.wait_on(discovery.event_config_topic)
    attacker = listen()
    # The 1,000,006-byte message exceeds the Maximum Packet Size the link sent in
    # CONNECT: the broker drops it for the link. The 1,006-byte one fits in a packet
    # (room is left for long topics) and meets the link's own limit.
    oversized = b"online" + b"x" * 1_000_000
    long = b"online" + b"x" * 1_000
    for payload in (b"\xff\xfe\x00garbage", oversized, long, b"reboot", b""):
        attacker.publish("homeassistant/status", payload)
    attacker.publish("homeassistant/status", "online")
    # Messages from one publisher on one topic are handled in order: once the
    # discovery came again, the link had seen all the garbage, and survived it.
    watcher.wait_on(discovery.event_config_topic, 2)
    assert made.connected
    with pytest.raises(ValueError):
        made.deliver("x", b"x", Kind.NOTICE)
    made.deliver("probe.sealed", b"still working", Kind.EVENT)
    logged = [r.getMessage() for r in caplog.records if r.name == "doorbell.transport.mqtt"]
    assert "MQTT: ignored a message on homeassistant/status that is not UTF-8" in logged
    assert any(
        f"1006-byte message on homeassistant/status, limit {MAX_STATUS_PAYLOAD}" in m
        for m in logged
    )
    assert not any("1000006" in m for m in logged)
    assert any("unexpected status 'reboot'" in m for m in logged)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # One warning a minute: the rest went to debug.
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "doorbell.transport.mqtt"
    ]
    assert len(warnings) == 1


def test_topics_are_split_strictly() -> None:
    assert split_topic("doorbell", f"doorbell/{DEVICE}/event") == (DEVICE, "event")
    for topic in (
        f"doorbell/{DEVICE}/event/x",
        f"doorbell/{DEVICE.upper()}/event",
        "doorbell/../event",
        f"other/{DEVICE}/event",
        f"doorbellx/{DEVICE}/event",
    ):
        assert split_topic("doorbell", topic) is None, topic
