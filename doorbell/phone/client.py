"""The phone's MQTT client, as watch, enroll and the owner's commands set it up."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from doorbell.common.mqtt_client import TlsSetupError, connect_options, end_session, new_client
from doorbell.common.secrets import SecretFileError, read_secret


class ClientSetupError(Exception):
    """The client cannot be made: an unreadable password file, unusable CA certificates."""


def phone_client(
    *, username: str | None, password_file: Path | None, tls: bool, ca_file: Path | None
) -> paho.Client:
    """A client with a random id (two phones of one household must not keep disconnecting
    each other), the password read from ``password_file``, and TLS when asked."""
    password = None
    if username and password_file is not None:
        try:
            password = read_secret(password_file, "--password-file")
        except SecretFileError as exc:
            raise ClientSetupError(str(exc)) from None
    try:
        return new_client(
            f"doorbell-phone-{os.urandom(4).hex()}",
            username=username,
            password=password,
            tls=tls,
            ca_file=ca_file,
        )
    except TlsSetupError as exc:
        source = "the system's CA certificates" if ca_file is None else f"--ca-file {ca_file}"
        raise ClientSetupError(f"cannot set up TLS with {source}: {exc}") from None


class BrokerSession:
    """A phone's connection to one doorbell's broker. ``open`` returns once the broker
    accepted it and stands the subscriptions to ``topics``; every message that arrives,
    up to ``max_payload`` bytes, waits in order for ``next``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool,
        username: str | None,
        password_file: Path | None,
        ca_file: Path | None,
        topics: list[str],
        max_payload: int,
    ) -> None:
        self.address = f"{host}:{port}"
        self._host, self._port = host, port
        self._topics = topics
        self._max_payload = max_payload
        self._inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._problem: str | None = None
        client = phone_client(
            username=username, password_file=password_file, tls=tls, ca_file=ca_file
        )
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        self.client = client

    def open(self, timeout: float) -> None:
        try:
            self.client.connect(self._host, self._port, **connect_options(self._max_payload))
        except (OSError, ValueError) as exc:
            raise ClientSetupError(
                f"cannot reach the doorbell's broker at {self.address}: {exc}"
            ) from None
        self.client.loop_start()
        if not self._ready.wait(timeout) or self._problem is not None:
            self.close()
            raise ClientSetupError(
                self._problem or f"the doorbell's broker at {self.address} did not answer in time"
            )

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def next(self, deadline: float) -> tuple[str, bytes] | None:
        """The next message, or None when none came before ``deadline`` (monotonic)."""
        try:
            return self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.disconnect(properties=end_session())
        self.client.loop_stop()

    def _connected(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:  # fmt: skip
        if reason.is_failure:
            self._problem = f"the broker at {self.address} refused us: {reason}"
            self._ready.set()
        elif self._topics:
            client.subscribe([(topic, 1) for topic in self._topics])
        else:
            self._ready.set()

    def _subscribed(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:  # fmt: skip
        if any(r.is_failure for r in reasons):
            self._problem = f"the broker at {self.address} refused the subscription"
        self._ready.set()

    def _message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if len(message.payload) <= self._max_payload:
            self._inbox.put((message.topic, bytes(message.payload)))
