"""Durations as people type them on a command line: ``90s``, ``10m``, ``2h``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"([0-9]{1,7})([smhdw])")
# Longer than anyone means and short enough that adding it to now never overflows.
LONGEST = timedelta(days=3660)


def parse_duration(text: str) -> timedelta:
    """``<number><unit>`` with unit s, m, h, d or w, or several in a row (``1h30m``);
    ValueError naming the text when it is not one, is zero or is over ten years."""
    compact = text.strip().lower()
    position = 0
    seconds = 0
    for match in _PATTERN.finditer(compact):
        if match.start() != position:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not compact or position != len(compact):
        raise ValueError(f"{text!r} is not a duration: write it like 90s, 10m, 2h, 7d or 1h30m")
    duration = timedelta(seconds=seconds)
    if not duration:
        raise ValueError(f"{text!r} is no time at all")
    if duration > LONGEST:
        raise ValueError(f"{text!r} is longer than ten years")
    return duration


def format_duration(duration: timedelta) -> str:
    """The shortest exact spelling ``parse_duration`` reads back, such as ``1h30m``."""
    seconds = int(duration.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
