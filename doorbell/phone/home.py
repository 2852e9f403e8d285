"""The phone's own directory: its secret key and the doorbells it has pinned."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorbell.phone.memory import PhoneMemory
from doorbell.sealing import (
    DevicePublicKey,
    KeyFileError,
    PhoneIdentity,
    PhoneSigningKey,
    Reader,
    RecipientPrivateKey,
    SealingError,
    Suite,
    check_canonical_ed25519_key,
    loads_strict,
    read_key_file,
    save_key_file,
    write_atomic,
)

IDENTITY = "identity.key"
SIGNING = "signing.key"
TRUSTED = "trusted.json"
BROKERS = "brokers.json"


def default_home() -> Path:
    configured = os.environ.get("DOORBELL_PHONE_HOME")
    if configured:
        return Path(configured)
    return Path.home() / ".config" / "doorbell-phone"


@dataclass(frozen=True)
class TrustedDevice:
    name: str
    key: DevicePublicKey


@dataclass(frozen=True)
class Broker:
    """Where this phone reaches a doorbell's broker, as its enrolment link said."""

    device: DevicePublicKey
    host: str
    port: int
    tls: bool
    prefix: str


class PhoneHome:
    """``identity.key`` (the key footage is sealed to) and ``signing.key`` (the key this
    phone signs with), both mode 0600, ``trusted.json`` and ``seen.json`` in one
    directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def identity_path(self) -> Path:
        return self.directory / IDENTITY

    def init(self, suite: Suite) -> RecipientPrivateKey:
        identity = RecipientPrivateKey.generate(suite)
        self.adopt(identity, PhoneSigningKey.generate())
        return identity

    def adopt(self, identity: RecipientPrivateKey, signing: PhoneSigningKey) -> None:
        """Make this empty home hold ``identity`` and ``signing`` (new keys, or a restored
        recovery key)."""
        if self.identity_path.exists():
            raise KeyFileError(f"{self.identity_path} already exists; this phone already has a key")
        try:
            self._private()
        except OSError as exc:
            raise KeyFileError(f"cannot create {self.directory}: {exc.strerror}") from None
        save_key_file(self.directory / SIGNING, signing.to_string())
        save_key_file(self.identity_path, identity.to_string())

    def signing_key(self) -> PhoneSigningKey:
        """This phone's signing key; a phone made before phones signed gets one now."""
        self.identity()  # a home without a phone key gets no signing key either
        path = self.directory / SIGNING
        if not path.exists():
            save_key_file(path, PhoneSigningKey.generate().to_string())
        try:
            return PhoneSigningKey.from_string(read_key_file(path))
        except SealingError as exc:
            raise KeyFileError(f"{path}: {exc}") from None

    def public_identity(self) -> PhoneIdentity:
        """What the doorbell enrols: the public halves of both keys."""
        return PhoneIdentity(self.identity().public_key(), self.signing_key().public_key)

    def identity(self) -> RecipientPrivateKey:
        if not self.identity_path.exists():
            raise KeyFileError(f"no phone key in {self.directory}: run 'doorbell-phone init' first")
        try:
            return RecipientPrivateKey.from_string(read_key_file(self.identity_path))
        except SealingError as exc:
            raise KeyFileError(f"{self.identity_path}: {exc}") from None

    def trusted(self) -> list[TrustedDevice]:
        path = self.directory / TRUSTED
        devices = self._entries(TRUSTED, "devices")
        out = []
        for index, entry in enumerate(devices):
            where = f"{path}: device {index}"
            if not isinstance(entry, dict) or set(entry) != {"name", "key"}:
                raise KeyFileError(f"{where}: expected an object with 'name' and 'key'")
            name, key = entry["name"], entry["key"]
            if not isinstance(name, str) or not isinstance(key, str):
                raise KeyFileError(f"{where}: 'name' and 'key' must be strings")
            try:
                device = DevicePublicKey.from_string(key)
                check_canonical_ed25519_key(device.raw)
            except SealingError as exc:
                raise KeyFileError(f"{where}: {exc}") from None
            out.append(TrustedDevice(name, device))
        return out

    def trust(self, key: DevicePublicKey, name: str) -> bool:
        """Pin a doorbell. Returns False when it was already pinned."""
        check_canonical_ed25519_key(key.raw)
        devices = self.trusted()
        if any(d.key == key for d in devices):
            return False
        devices.append(TrustedDevice(name, key))
        document = {"devices": [{"name": d.name, "key": d.key.to_string()} for d in devices]}
        self._write(TRUSTED, document)
        return True

    def remember_broker(self, broker: Broker) -> None:
        """Keep where a doorbell's broker is (its enrolment link), for signed commands."""
        kept = [b for b in self.brokers() if b.device != broker.device]
        kept.append(broker)
        document = {
            "brokers": [
                {"key": b.device.to_string(), "host": b.host, "port": b.port, "tls": b.tls,
                 "prefix": b.prefix}
                for b in kept
            ]
        }  # fmt: skip
        self._write(BROKERS, document)

    def brokers(self) -> list[Broker]:
        path = self.directory / BROKERS
        entries = self._entries(BROKERS, "brokers")
        out = []
        for index, entry in enumerate(entries):
            try:
                out.append(
                    Broker(
                        DevicePublicKey.from_string(entry["key"]),
                        str(entry["host"]),
                        int(entry["port"]),
                        bool(entry["tls"]),
                        str(entry["prefix"]),
                    )
                )
            except (KeyError, TypeError, ValueError, SealingError) as exc:
                raise KeyFileError(f"{path}: broker {index} is broken: {exc}") from None
        return out

    def _write(self, filename: str, document: dict[str, Any]) -> None:
        path = self.directory / filename
        try:
            self._private()
            write_atomic(path, json.dumps(document, indent=2).encode())
        except OSError as exc:
            raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None

    def _entries(self, filename: str, key: str) -> list[Any]:
        """The list under ``key`` in this home's JSON file ``filename``; none if absent."""
        path = self.directory / filename
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KeyFileError(f"{path} is unreadable: {exc.strerror or exc}") from None
        document = loads_strict(raw, lambda reason: KeyFileError(f"{path}: {reason}"))
        entries = document.get(key) if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise KeyFileError(f"{path}: expected an object with a {key!r} list")
        return entries

    def _private(self) -> None:
        """Make the directory 0700, and take back what others could reach in one this phone
        owns already (made by hand, or under a loose umask): it holds the phone's key."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self.directory.stat()
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            self.directory.chmod(stat.S_IMODE(info.st_mode) & 0o700)

    def memory(self) -> PhoneMemory:
        """What this phone has seen of each doorbell (``seen.json``)."""
        return PhoneMemory(self.directory)

    def reader(self) -> Reader:
        return Reader([self.identity()], [d.key for d in self.trusted()])
