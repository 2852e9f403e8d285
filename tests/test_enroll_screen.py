"""What ``doorbell enroll`` draws: the QR code in the terminal is the link, module for
module, with a quiet zone, and fits a phone camera (version 10 or less)."""

from __future__ import annotations

import segno

from doorbell.daemon.enroll_client import _qr_lines
from doorbell.sealing import DeviceSigningKey
from doorbell.sealing import enrolment as proto


def test_the_terminal_qr_code_is_the_link() -> None:
    link = proto.Link.new(
        DeviceSigningKey.generate().public_key,
        "doorbell-broker.example.org",
        8883,
        True,
        "home/front-door",
        2_000_000_000,
    ).to_string()
    code = segno.make(link, error="m")
    assert code.version <= 10, code.version
    lines = _qr_lines(link)
    # Each character is two modules: upper and lower half, light drawn, dark blank.
    halves = {"█": (False, False), "▀": (False, True), "▄": (True, False), " ": (True, True)}
    rows: list[list[bool]] = []
    for line in lines:
        pairs = [halves[c] for c in line]
        rows.append([upper for upper, _ in pairs])
        rows.append([lower for _, lower in pairs])
    border = 4  # the quiet zone the QR standard asks for
    matrix = [[bool(m) for m in row] for row in code.matrix]
    size = len(matrix)
    drawn = [row[border : border + size] for row in rows[border : border + size]]
    assert drawn == matrix
    # The quiet zone is light all round.
    assert not any(rows[0]) and not any(row[0] or row[-1] for row in rows)
