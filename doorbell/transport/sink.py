"""What every sink is: somewhere sealed objects go, named so the spool can track it."""

from __future__ import annotations

from typing import Protocol

from doorbell.sealing import Kind


class SinkUnavailable(Exception):
    """The sink cannot take the object now (network, server, disk); the spool retries."""


class Sink(Protocol):
    """A destination the spool drains into, at its own pace.

    ``name`` is stable across restarts (the spool keeps one queue per name).
    ``deliver`` must be idempotent (the same object may be delivered twice after a
    crash) and raise ``SinkUnavailable`` (or ``OSError``) when it did not take the
    object; it returns only once the object is safely stored or sent.
    """

    name: str

    def wants(self, kind: Kind) -> bool: ...

    def deliver(self, name: str, data: bytes | bytearray, kind: Kind) -> None: ...

    def close(self) -> None: ...
