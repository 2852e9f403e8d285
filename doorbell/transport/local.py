"""The local-directory sink: one ``*.sealed`` file per object, written crash-safely."""

from __future__ import annotations

from pathlib import Path

from doorbell.sealing import Kind, write_atomic
from doorbell.transport.sink import SinkUnavailable


class LocalDirectorySink:
    """A folder on this machine (a NAS or USB mount): the layout ``doorbell-phone`` reads."""

    name = "local"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def wants(self, kind: Kind) -> bool:
        return True

    def deliver(self, name: str, data: bytes | bytearray, kind: Kind) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Sealed objects are ciphertext: readable by others is fine, and a NAS needs it.
            write_atomic(self.directory / name, data, mode=0o644)
        except OSError as exc:
            # An unmounted NAS or a full disk: the spool keeps the object and retries.
            raise SinkUnavailable(f"cannot write {self.directory / name}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release: every write is complete when ``deliver`` returns."""
