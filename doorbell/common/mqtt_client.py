"""The paho client as the doorbell and the phone both set it up: MQTT v5, a packet size
bound the broker must respect, a short reconnect delay, credentials and TLS.

Each side connects with ``connect_options(max_payload)``, where ``max_payload`` is the
largest message it can legitimately receive. The Maximum Packet Size sent in CONNECT
makes the broker drop any larger message for this client instead of sending it, so a
50 MB publish never reaches paho, which would otherwise buffer a packet of up to
256 MB before our own size checks see it.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

# A PUBLISH packet beyond its payload: fixed header (1 + at most 4 length bytes), the
# topic (2 length bytes + at most 65,535), the packet id (2) and the properties length
# (1: our publishers send no properties). Allowing the longest topic MQTT can carry
# keeps the bound a function of the payload alone, whatever prefix is configured.
PACKET_OVERHEAD = 5 + 2 + 65_535 + 2 + 1
# paho doubles the delay after each failed attempt from the first to the second value.
# Its default grows to 2 minutes, so a broker back from an outage would meet a doorbell
# and phones that try again only much later; at 2 s they are back within 2 s of it.
RECONNECT_MIN_DELAY = 1
RECONNECT_MAX_DELAY = 2


class TlsSetupError(Exception):
    """TLS cannot be set up with the CA certificates asked for (unreadable, not PEM)."""


def new_client(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    ca_file: Path | None = None,
) -> paho.Client:
    """A v5 client with our reconnect delay, credentials and, with ``tls``, TLS verified
    against ``ca_file`` or, without one, the system's trust store."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    # Our callbacks catch everything themselves; this is the belt to those braces, so
    # nothing a message or a bug does can end paho's network thread.
    client.suppress_exceptions = True
    client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)
    if username:
        client.username_pw_set(username, password)
    if tls:
        try:
            client.tls_set(ca_certs=None if ca_file is None else str(ca_file))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsSetupError(str(exc)) from None
    return client


def connect_options(max_payload: int, *, session_expiry: int = 0) -> dict[str, Any]:
    """Keyword arguments for paho's ``connect`` and ``connect_async``, for messages of
    at most ``max_payload`` bytes.

    With ``session_expiry`` 0, every connect starts a clean session. With more, every
    connect asks to resume the session (the caller's client id is fresh, so the first
    finds none): the broker keeps the subscriptions and queues QoS 1 messages for that
    many seconds while we are away, and, if it persists sessions, across its own
    restart. Mosquitto 2.0 persists only sessions that were never started clean, so
    the first connect must not ask for a clean start either. Subscriptions are made
    again in ``on_connect`` either way.
    """
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.MaximumPacketSize = max_payload + PACKET_OVERHEAD
    if not session_expiry:
        return {"clean_start": True, "properties": properties}
    properties.SessionExpiryInterval = session_expiry
    return {"clean_start": False, "properties": properties}


def end_session() -> Properties:
    """DISCONNECT properties that make the broker forget our session now."""
    properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0
    return properties


def disconnect_reason(flags: paho.DisconnectFlags, reason: ReasonCode) -> str:
    """Why a connection ended, in words: the broker's reason code when it sent one
    (MQTT 5 brokers may say why they disconnect us), otherwise a lost connection."""
    if flags.is_disconnect_packet_from_server:
        return f"the broker disconnected us: {reason}"
    return "connection lost"
