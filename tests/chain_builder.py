"""Sealed objects for the phone's tests: valid meta for every kind, and a device that signs
whatever a test asks for, to break one rule of FORMAT.md at a time.

`Forger` holds a test device key generated here and seals with the real
``seal_bytes``: its objects are authentic, exactly as a doorbell (or a thief holding
the doorbell's key) would make them. Nothing here checks a rule; the phone does.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vectors.chains import quota_meta, restart_meta

from doorbell.phone.cli import main
from doorbell.phone.home import PhoneHome
from doorbell.sealing import (
    DeviceSigningKey,
    Keyring,
    Kind,
    RecipientPrivateKey,
    Suite,
    object_name,
)
from doorbell.sealing.format import ZERO_PREV, chain_hash, encode_meta
from doorbell.sealing.sealer import _seal, _wrappers

__all__ = ["quota_meta", "restart_meta"]  # the vectors' notice meta, shared

ADDED = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
TIME_US = 1_795_000_000_000_000


def new_id() -> str:
    return uuid.uuid4().hex


def event_meta(
    kind: str = "ring", *, clip: str | None = None, stream: str | None = None, first: int = 0
) -> dict[str, Any]:
    return {
        "type": kind,
        "clip": clip or new_id(),
        "stream": new_id() if stream is None else stream,
        "first_index": first,
        "position": 1.5,
    }


def init_meta(stream: str) -> dict[str, Any]:
    return {"stream": stream, "codec": "h264", "width": 320, "height": 240, "fps": 15}


def segment_meta(stream: str, index: int) -> dict[str, Any]:
    return {"stream": stream, "index": index, "start": 2.0 * index, "duration": 2.0, "frames": 30}


def clip_end_meta(clip: str, stream: str, last: int) -> dict[str, Any]:
    return {
        "notice": "clip-end",
        "clip": clip,
        "stream": stream,
        "last_index": last,
        "reason": "post-roll",
    }


@dataclass
class Forger:
    """A test doorbell: a device key made here, a keyring, and one phone home that trusts it.

    ``objects`` maps seq to the sealed bytes made so far; ``seal`` makes any object at any
    seq with any prev, ``append`` continues the chain from the newest object."""

    root: Path
    device: DeviceSigningKey = field(default_factory=DeviceSigningKey.generate)
    phone: RecipientPrivateKey = field(
        default_factory=lambda: RecipientPrivateKey.generate(Suite.X25519)
    )
    objects: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keyring = Keyring().add("test-phone", self.phone.public_key(), ADDED)
        self.home = PhoneHome(self.root / "phone")
        self.home.directory.mkdir(parents=True, exist_ok=True)
        (self.home.directory / "identity.key").write_text(self.phone.to_string() + "\n")
        self.home.trust(self.device.public_key, "test door")
        self.bucket = self.root / "bucket"
        self.bucket.mkdir(parents=True, exist_ok=True)

    @property
    def device_id(self) -> bytes:
        return self.device.public_key.device_id

    @property
    def short(self) -> str:
        return self.device_id.hex()[:16]

    def name(self, seq: int) -> str:
        return object_name(self.device_id, seq)

    def hash(self, seq: int) -> bytes:
        return chain_hash(self.objects[seq][-64:])

    def seal(
        self,
        seq: int,
        prev: bytes,
        kind: Kind,
        meta: dict[str, Any],
        body: bytes = b"",
        *,
        keyring: Keyring | None = None,
    ) -> bytes:
        return self.seal_raw_meta(seq, prev, kind, encode_meta(meta), body, keyring=keyring)

    def seal_raw_meta(
        self,
        seq: int,
        prev: bytes,
        kind: Kind,
        meta: bytes,
        body: bytes = b"",
        *,
        keyring: Keyring | None = None,
    ) -> bytes:
        """An object whose meta bytes are exactly ``meta``, even JSON ``seal_bytes`` refuses."""
        used = keyring or self.keyring
        time_us = TIME_US + seq % 1_000_000
        data = bytes(
            _seal(
                self.device,
                used.epoch,
                _wrappers(used),
                seq,
                prev,
                kind,
                meta,
                body,
                time_us,
                os.urandom,
            )
        )
        self.objects[seq] = data
        return data

    def append(self, kind: Kind, meta: dict[str, Any], body: bytes = b"", **options: Any) -> int:
        seq = max(self.objects) + 1 if self.objects else 0
        prev = self.hash(seq - 1) if seq else ZERO_PREV
        self.seal(seq, prev, kind, meta, body, **options)
        return seq

    def keyring_object(self, keyring: Keyring | None = None) -> int:
        keyring = keyring or self.keyring
        return self.append(
            Kind.KEYRING, {"epoch": keyring.epoch}, keyring.to_json(), keyring=keyring
        )

    def start(self, events: int = 2) -> None:
        """Seq 0: the keyring, then ``events`` ring events: a clean first run."""
        self.keyring_object()
        for _ in range(events):
            self.append(Kind.EVENT, event_meta(stream=""))

    def write(self, *, skip: tuple[int, ...] = ()) -> Path:
        """Every object into the bucket under its proper name, except ``skip``."""
        for path in self.bucket.iterdir():
            path.unlink()
        for seq, data in self.objects.items():
            if seq not in skip:
                (self.bucket / self.name(seq)).write_bytes(data)
        return self.bucket

    def verify(self, *argv: str) -> int:
        """``doorbell-phone verify`` on the bucket, through the real CLI entry point."""
        return main(["--home", str(self.home.directory), "verify", str(self.bucket), *argv])
