"""What this CPU offers the sealer: its model and its AES instructions."""

from __future__ import annotations

from pathlib import Path


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first value of each /proc/cpuinfo field (all cores are alike on a Pi)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_flags(info: dict[str, str] | None = None) -> set[str] | None:
    """x86 lists its extensions under ``flags``, Arm under ``Features``; None if neither."""
    info = cpuinfo() if info is None else info
    value = info.get("flags", info.get("Features"))
    return None if value is None else set(value.split())


def has_aes(info: dict[str, str] | None = None) -> bool | None:
    flags = cpu_flags(info)
    return None if flags is None else "aes" in flags
