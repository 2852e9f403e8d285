"""The daemon's MQTT link: sealed events and the keyring out, availability, Home Assistant.

Topics, for ``topic_prefix`` P and the 16-hex device id D:

- ``P/D/event``        each sealed EVENT object, byte for byte, QoS 1, not retained;
- ``P/D/keyring``      the latest sealed KEYRING object, QoS 1, retained;
- ``P/D/availability`` ``online`` (retained) on every connect, ``offline`` (retained)
  on a clean stop and, as the last will, when the connection dies;
- ``P/D/ha/...``       cleartext states, only when Home Assistant discovery is on.

The payload of an event is the sealed object and nothing else: the topic says which
doorbell, never what happened. The link is also the spool's "mqtt" sink: ``deliver``
returns once the broker acknowledged, and raises ``SinkUnavailable`` at once when
there is no connection, so the spool keeps the object and retries it in order.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from doorbell.common.mqtt_client import (
    TlsSetupError,
    connect_options,
    disconnect_reason,
    new_client,
)
from doorbell.common.topics import DEVICE_ID, EVENT_LEAF, KEYRING_LEAF
from doorbell.config.errors import ConfigError, ConfigIssue
from doorbell.config.secret import read_secret
from doorbell.config.settings import MqttSettings
from doorbell.sealing import Kind
from doorbell.transport import homeassistant as ha
from doorbell.transport.sink import SinkUnavailable

log = logging.getLogger(__name__)

AVAILABILITY_LEAF = "availability"
PUBLISH_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
# Home Assistant's birth message is "online"; anything much longer is not from it.
MAX_STATUS_PAYLOAD = 64
# Sealed objects wait in the spool, not here: this only bounds what a stalled
# connection can pile up in paho's memory (availability, discovery, states).
MAX_QUEUED = 100
# Hostile publishers must not be able to flood the log: one warning a minute.
WARN_INTERVAL = 60.0

ProblemHook = Callable[[str], None]
ENROL_LEAF = "enroll"
COMMAND_LEAF = "command"
ANSWER_LEAF = "answer"
LIVE_LEAF = "live"
_WINDOW_ID = re.compile(r"[0-9a-f]{16}")
# An enrolment message is a few KiB; anything larger is not one (PROTOCOL.md section 3).
# It is the largest message the link can legitimately receive (its other subscription
# is Home Assistant's status), so the broker is told to send nothing bigger.
MAX_ENROL_PAYLOAD = 16 * 1024


@dataclass(frozen=True)
class DeviceTopics:
    """Where one doorbell publishes, under the configured topic prefix."""

    prefix: str
    device_id: str

    def _leaf(self, leaf: str) -> str:
        return f"{self.prefix}/{self.device_id}/{leaf}"

    @property
    def event(self) -> str:
        return self._leaf(EVENT_LEAF)

    @property
    def keyring(self) -> str:
        return self._leaf(KEYRING_LEAF)

    @property
    def availability(self) -> str:
        return self._leaf(AVAILABILITY_LEAF)

    @property
    def home_assistant(self) -> str:
        return self._leaf("ha")

    @property
    def enrolment(self) -> str:
        """Every enrolment window's messages from phones (docs/PROTOCOL.md section 3)."""
        return self._leaf(f"{ENROL_LEAF}/+/phone")

    @property
    def command(self) -> str:
        """Signed commands from enrolled phones (docs/PROTOCOL.md section 7)."""
        return self._leaf(COMMAND_LEAF)

    def answer(self, nonce: bytes) -> str:
        """Where the answer to the command with ``nonce`` goes."""
        return self._leaf(f"{ANSWER_LEAF}/{nonce.hex()}")

    def live(self, nonce: bytes) -> str:
        """Where the live session the command with ``nonce`` asked for is sent."""
        return self._leaf(f"{LIVE_LEAF}/{nonce.hex()}")

    def enrolment_window(self, topic: str) -> str | None:
        """The window id of a topic ``enrolment`` matches, or None."""
        head, tail = self._leaf(f"{ENROL_LEAF}/"), "/phone"
        if not topic.startswith(head) or not topic.endswith(tail):
            return None
        window = topic[len(head) : -len(tail)]
        return window if _WINDOW_ID.fullmatch(window) else None


class MqttLink:
    """One doorbell's connection to its broker, kept up by paho's network thread.

    ``start`` returns at once; paho connects in the background and reconnects with
    a backoff of 1 to 2 s for as long as the link lives. ``on_problem`` hears, as
    one line, why the broker cannot be reached or refused us. ``when_connected``, if
    set, is called (on paho's thread) after every connect: whoever waits to deliver,
    such as an uploader backing off after an outage, can try again at once.
    """

    name = "mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        device_id: str,
        device_name: str,
        *,
        on_problem: ProblemHook | None = None,
        publish_timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        if not DEVICE_ID.fullmatch(device_id):
            raise ValueError(f"device id must be 16 lowercase hex digits, got {device_id!r}")
        self.settings = settings
        self.device_id = device_id
        self.device_name = device_name
        self.topics = DeviceTopics(settings.topic_prefix, device_id)
        self.discovery = ha.Discovery(
            discovery_prefix=settings.homeassistant.prefix,
            device_id=device_id,
            device_name=device_name,
            availability_topic=self.topics.availability,
            state_base=self.topics.home_assistant,
        )
        self._on_problem = on_problem
        self.when_connected: Callable[[], None] | None = None
        # Set before ``start``: hears ``(window id, payload)`` of each enrolment message,
        # and the payload of each signed command from a phone.
        self.on_enrolment: Callable[[str, bytes], None] | None = None
        self.on_command: Callable[[bytes], None] | None = None
        self._publish_timeout = publish_timeout
        self._client: paho.Client | None = None
        self._online = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._motion = False
        self._delivered = 0
        self._connects = 0
        self._last_problem: str | None = None
        self._last_warning = -WARN_INTERVAL

    @property
    def broker(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def connected(self) -> bool:
        return self._online.is_set()

    @property
    def discovery_enabled(self) -> bool:
        return self.settings.homeassistant.discovery

    @property
    def subscriptions(self) -> list[str]:
        """Every topic the link subscribes to: Home Assistant's status, with discovery on,
        and the enrolment windows' messages from phones."""
        topics = [self.discovery.status_topic] if self.discovery_enabled else []
        if self.on_enrolment is not None:
            topics.append(self.topics.enrolment)
        if self.on_command is not None:
            topics.append(self.topics.command)
        return topics

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish one message (not retained) if connected; dropped otherwise. Live view
        sends at QoS 0: a late frame is worth less than the next one."""
        self._publish_now(topic, payload, retain=False, qos=qos)

    def start(self) -> None:
        """Configure the client and let paho connect in the background; never blocks."""
        if self._client is not None:
            return
        self._closing = False
        settings = self.settings
        password = None
        if settings.username and settings.password_file is not None:
            password = read_secret(settings.password_file, "mqtt.password_file")
        try:
            client = new_client(
                f"doorbell-{self.device_id}",
                username=settings.username,
                password=password,
                tls=settings.tls,
                ca_file=settings.ca_file,
            )
        except TlsSetupError as exc:
            where = "mqtt.ca_file" if settings.ca_file is not None else "mqtt.tls"
            raise ConfigError([ConfigIssue(where, None, f"cannot set up TLS: {exc}")]) from None
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.will_set(self.topics.availability, ha.OFFLINE, qos=1, retain=True)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._guarded(self._connected)
        client.on_connect_fail = self._guarded(self._connect_failed)
        client.on_disconnect = self._guarded(self._disconnected)
        client.on_message = self._guarded(self._message)
        client.connect_async(
            settings.host,
            settings.port,
            keepalive=settings.keepalive,
            **connect_options(MAX_ENROL_PAYLOAD),
        )
        self._client = client
        client.loop_start()
        log.info("MQTT: connecting to %s as doorbell-%s", self.broker, self.device_id)

    def close(self) -> None:
        """Say "offline" (a clean disconnect sends no last will), disconnect, stop paho."""
        with self._lock:
            client, self._client = self._client, None
            self._closing = True
        if client is None:
            return
        if self._online.is_set():
            info = client.publish(self.topics.availability, ha.OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(CLOSE_TIMEOUT)
            except (ValueError, RuntimeError) as exc:
                log.debug("MQTT: offline message not sent: %s", exc)
        self._online.clear()
        client.disconnect()
        client.loop_stop()
        log.info("MQTT: disconnected from %s", self.broker)

    # --- the spool's sink ------------------------------------------------------------

    def wants(self, kind: Kind) -> bool:
        return kind in (Kind.EVENT, Kind.KEYRING)

    def deliver(self, name: str, data: bytes | bytearray, kind: Kind) -> None:
        """Publish one sealed object and return once the broker acknowledged it."""
        if kind is Kind.EVENT:
            topic, retain = self.topics.event, False
        elif kind is Kind.KEYRING:
            # Retained: a phone that subscribes later still learns who can read.
            topic, retain = self.topics.keyring, True
        else:
            raise ValueError(f"the MQTT sink carries events and keyrings, not {kind.name}")
        client = self._client
        if client is None or not self._online.is_set():
            raise SinkUnavailable(f"not connected to the MQTT broker {self.broker}")
        info = client.publish(topic, data, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise SinkUnavailable(f"MQTT publish of {name} failed: {paho.error_string(info.rc)}")
        self._await_ack(info, name)
        self._delivered += 1
        log.debug("MQTT: %s delivered to %s", name, topic)

    def _await_ack(self, info: paho.MQTTMessageInfo, name: str) -> None:
        # Waiting in slices lets a lost connection end the wait now rather than after
        # the whole timeout; paho re-sends the message itself if it reconnects first.
        deadline = time.monotonic() + self._publish_timeout
        try:
            while not info.is_published():
                if not self._online.is_set():
                    raise SinkUnavailable(f"lost the broker {self.broker} while sending {name}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SinkUnavailable(
                        f"the MQTT broker {self.broker} did not acknowledge {name} "
                        f"within {self._publish_timeout:g} s"
                    )
                info.wait_for_publish(min(remaining, 0.25))
        except (ValueError, RuntimeError) as exc:
            raise SinkUnavailable(f"MQTT publish of {name} failed: {exc}") from None

    # --- Home Assistant states -------------------------------------------------------

    def ring(self) -> None:
        """Tell Home Assistant about a press, in cleartext; only with discovery on."""
        if self.discovery_enabled:
            # Not retained, and dropped when offline: a ring replayed later would lie.
            self._publish_now(self.discovery.ring_topic, ha.ring_payload(), retain=False)

    def motion(self, on: bool) -> None:
        """Tell Home Assistant the PIR state; only with discovery on."""
        self._motion = on
        if self.discovery_enabled:
            self._publish_now(self.discovery.motion_topic, ha.motion_payload(on), retain=True)

    def _publish_now(self, topic: str, payload: bytes, *, retain: bool, qos: int = 1) -> None:
        client = self._client
        if client is None or not self._online.is_set():
            log.debug("MQTT: not connected, %s not published", topic)
            return
        client.publish(topic, payload, qos=qos, retain=retain)

    def status(self) -> dict[str, Any]:
        return {
            "broker": self.broker,
            "tls": self.settings.tls,
            "connected": self.connected,
            "connects": self._connects,
            "delivered": self._delivered,
            "discovery": self.discovery_enabled,
            "last_problem": self._last_problem,
        }

    # --- paho callbacks (paho's network thread) --------------------------------------

    def _guarded(self, callback: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception:
                log.exception("MQTT: error in %s (the link keeps running)", callback.__name__)

        guarded.__name__ = callback.__name__
        return guarded

    def _connected(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._problem(f"the MQTT broker {self.broker} refused the connection: {reason}")
            return
        self._connects += 1
        self._last_problem = None
        self._online.set()
        log.info("MQTT: connected to %s", self.broker)
        client.publish(self.topics.availability, ha.ONLINE, qos=1, retain=True)
        if self.subscriptions:
            # Subscribing on every connect: a clean start forgets subscriptions.
            client.subscribe([(topic, 1) for topic in self.subscriptions])
        if self.discovery_enabled:
            self._send_discovery(client)
        else:
            self._publish_all(client, self.discovery.removals())
        if self.when_connected is not None:
            self.when_connected()

    def _send_discovery(self, client: paho.Client) -> None:
        self._publish_all(client, self.discovery.configs())
        client.publish(
            self.discovery.motion_topic, ha.motion_payload(self._motion), qos=1, retain=True
        )

    def _publish_all(self, client: paho.Client, messages: Sequence[ha.Message]) -> None:
        for message in messages:
            client.publish(message.topic, message.payload, qos=1, retain=True)

    def _connect_failed(self, client: paho.Client, userdata: Any) -> None:
        self._problem(f"cannot connect to the MQTT broker {self.broker}; retrying")

    def _disconnected(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_online = self._online.is_set()
        self._online.clear()
        if not self._closing and was_online:
            why = disconnect_reason(flags, reason)
            self._problem(f"lost the MQTT broker {self.broker} ({why}); reconnecting")

    def _message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # Everything that arrives is hostile: the only thing we asked for is Home
        # Assistant's status, and even that may be anything from anyone on the broker.
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self._hostile("a message on a topic that is not UTF-8")
            return
        payload = message.payload
        if topic == self.topics.command and self.on_command is not None:
            if len(payload) > MAX_ENROL_PAYLOAD:
                self._hostile(f"a {len(payload)}-byte command, limit {MAX_ENROL_PAYLOAD}")
                return
            self.on_command(bytes(payload))
            return
        window = self.topics.enrolment_window(topic)
        if window is not None and self.on_enrolment is not None:
            if len(payload) > MAX_ENROL_PAYLOAD:
                self._hostile(f"a {len(payload)}-byte enrolment message, limit {MAX_ENROL_PAYLOAD}")
                return
            self.on_enrolment(window, bytes(payload))
            return
        if not self.discovery_enabled or topic != self.discovery.status_topic:
            log.debug("MQTT: ignored a message on %r (not subscribed to it)", topic[:200])
            return
        if len(payload) > MAX_STATUS_PAYLOAD:
            self._hostile(f"a {len(payload)}-byte message on {topic}, limit {MAX_STATUS_PAYLOAD}")
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self._hostile(f"a message on {topic} that is not UTF-8")
            return
        if text == ha.BIRTH_PAYLOAD:
            log.info("MQTT: Home Assistant came online, sending discovery again")
            self._send_discovery(client)
        elif text == ha.OFFLINE:
            log.debug("MQTT: Home Assistant went offline")
        else:
            self._hostile(f"an unexpected status {text[:32]!r} on {topic}")

    def _hostile(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            log.warning("MQTT: ignored %s", what)
        else:
            log.debug("MQTT: ignored %s", what)

    def _problem(self, message: str) -> None:
        # paho retries every few seconds: say each new problem once, not every retry.
        if message == self._last_problem:
            log.debug("MQTT: %s", message)
            return
        self._last_problem = message
        log.warning("MQTT: %s", message)
        if self._on_problem is not None:
            try:
                self._on_problem(message)
            except Exception:
                log.exception("MQTT: the on_problem hook failed")
