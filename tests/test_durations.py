"""Durations typed on a command line (``--expires``, ``--window``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from doorbell.common.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("7d", 604800), ("1w", 604800),
     ("1h30m", 5400), (" 3S ", 3), ("1d2h3m4s", 93784)],
)  # fmt: skip
def test_durations_people_type(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "not a duration"), ("10", "not a duration"), ("m", "not a duration"),
     ("1.5h", "not a duration"), ("-1h", "not a duration"), ("1h 30m", "not a duration"),
     ("0s", "no time at all"), ("0h0m", "no time at all"), ("3661d", "longer than ten years"),
     ("99999999d", "not a duration"), ("1y", "not a duration")],
)  # fmt: skip
def test_anything_else_is_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=3660 * 86400))
def test_format_reads_back(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration
