"""Home Assistant MQTT discovery: the config messages that make the doorbell appear, and its states.

Everything here is a pure function of the device's identity and topics, so the
messages can be checked without a broker; ``MqttLink`` publishes them. Discovery is
off by default because it tells the broker, in cleartext, when someone rings.

Per-component discovery topics (``<prefix>/<component>/<node_id>/<object_id>/config``)
work on every Home Assistant release; device-based discovery needs 2024.12 or newer.
Neither ``object_id`` (deprecated in 2025.10, ignored from 2026.4) nor its successor
``default_entity_id`` (2025.10 and newer only) is sent: Home Assistant then names the
entities after the device, e.g. ``event.front_door_doorbell``, on every release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from doorbell import __version__

# Home Assistant publishes its birth message, "online", here under its discovery prefix.
STATUS_TOPIC = "status"
BIRTH_PAYLOAD = "online"
ONLINE = "online"
OFFLINE = "offline"
RING_EVENT = "ring"
MOTION_ON = "ON"
MOTION_OFF = "OFF"
MANUFACTURER = "Doorbell project"
MODEL = "Raspberry Pi doorbell"


@dataclass(frozen=True)
class Message:
    """One MQTT message to publish retained: a discovery config, or b"" to remove one."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class Discovery:
    """Home Assistant's view of one doorbell: where its entities are described and report.

    ``availability_topic`` is the link's own online/offline topic; ``state_base`` is
    ``<topic prefix>/<device id>/ha``, under which the cleartext states go.
    """

    discovery_prefix: str
    device_id: str
    device_name: str
    availability_topic: str
    state_base: str

    @property
    def node_id(self) -> str:
        return f"doorbell_{self.device_id}"

    @property
    def status_topic(self) -> str:
        """Where Home Assistant announces that it (re)started."""
        return f"{self.discovery_prefix}/{STATUS_TOPIC}"

    @property
    def ring_topic(self) -> str:
        return f"{self.state_base}/doorbell"

    @property
    def motion_topic(self) -> str:
        return f"{self.state_base}/motion"

    @property
    def event_config_topic(self) -> str:
        return f"{self.discovery_prefix}/event/{self.node_id}/doorbell/config"

    @property
    def motion_config_topic(self) -> str:
        return f"{self.discovery_prefix}/binary_sensor/{self.node_id}/motion/config"

    def device(self) -> dict[str, Any]:
        """The device block both entities share, so Home Assistant groups them."""
        return {
            "identifiers": [f"doorbell-{self.device_id}"],
            "name": self.device_name,
            "manufacturer": MANUFACTURER,
            "model": MODEL,
            "sw_version": __version__,
        }

    def _common(self) -> dict[str, Any]:
        return {
            "availability_topic": self.availability_topic,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": self.device(),
            "origin": {"name": "doorbell", "sw_version": __version__},
            # QoS 1 for Home Assistant's own subscription: a ring must not be lost.
            "qos": 1,
        }

    def event_config(self) -> dict[str, Any]:
        """An ``event`` entity: one ``ring`` per press of the button."""
        return {
            "name": "Doorbell",
            "unique_id": f"{self.node_id}_doorbell",
            "state_topic": self.ring_topic,
            "event_types": [RING_EVENT],
            "device_class": "doorbell",
            **self._common(),
        }

    def motion_config(self) -> dict[str, Any]:
        """A ``binary_sensor`` entity for the PIR sensor."""
        return {
            "name": "Motion",
            "unique_id": f"{self.node_id}_motion",
            "state_topic": self.motion_topic,
            "device_class": "motion",
            "payload_on": MOTION_ON,
            "payload_off": MOTION_OFF,
            **self._common(),
        }

    def configs(self) -> tuple[Message, ...]:
        """The retained discovery messages that create (or update) both entities."""
        return (
            Message(self.event_config_topic, _json(self.event_config())),
            Message(self.motion_config_topic, _json(self.motion_config())),
        )

    def removals(self) -> tuple[Message, ...]:
        """Empty retained payloads: Home Assistant deletes the entities of an earlier run,
        and the broker forgets the last motion state it kept in cleartext."""
        return (
            Message(self.event_config_topic, b""),
            Message(self.motion_config_topic, b""),
            Message(self.motion_topic, b""),
        )


def ring_payload() -> bytes:
    """The ``event`` entity's state message for one press."""
    return _json({"event_type": RING_EVENT})


def motion_payload(on: bool) -> bytes:
    return (MOTION_ON if on else MOTION_OFF).encode()


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
