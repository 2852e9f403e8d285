"""The local-directory sink: one ``*.sealed`` file per object, written crash-safely."""

from __future__ import annotations

from pathlib import Path

from doorbell.sealing import SealedObject, write_atomic


class LocalDirectorySink:
    """A folder on this machine (a NAS or USB mount): the layout ``doorbell-phone`` reads."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def deliver(self, sealed: SealedObject) -> Path:
        path = self.directory / sealed.name
        # Sealed objects are ciphertext: readable by others is fine, and a NAS needs it.
        write_atomic(path, sealed.data, mode=0o644)
        return path
