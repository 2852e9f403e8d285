"""The MQTT topics a doorbell publishes under, as both the device and the phone name them.

For ``topic_prefix`` P and the 16-hex device id D, a doorbell publishes its sealed
events on ``P/D/event`` and its keyring on ``P/D/keyring``; a phone subscribes to
``P/+/event`` and ``P/+/keyring`` and learns D from the topic.
"""

from __future__ import annotations

import re

EVENT_LEAF = "event"
KEYRING_LEAF = "keyring"
DEVICE_ID = re.compile(r"[0-9a-f]{16}")


def valid_prefix(prefix: str) -> bool:
    """Whether ``prefix`` can head our topics: not empty, no wildcard or NUL, and no
    leading or trailing '/' (which would make an empty topic level)."""
    return (
        bool(prefix)
        and not any(c in prefix for c in "#+\0")
        and not prefix.startswith("/")
        and not prefix.endswith("/")
    )


def all_devices(prefix: str, leaf: str) -> str:
    """The subscription that matches ``leaf`` for every doorbell under ``prefix``."""
    return f"{prefix}/+/{leaf}"


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(device id, leaf)`` of a topic under ``prefix``, or None when it is not one of ours."""
    head = f"{prefix}/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or not DEVICE_ID.fullmatch(parts[0]):
        return None
    return parts[0], parts[1]
