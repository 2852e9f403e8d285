"""``doorbell enroll``: opens an enrolment window in the running daemon, shows its link as
text and as a QR code, shows the phone's confirmation code and takes the owner's
``yes`` (or waits for the button), then says how it ended."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from doorbell.daemon.control import ControlError, send_command

POLL_SECONDS = 0.2
EXIT_OK, EXIT_REFUSED = 0, 1


@dataclass(frozen=True)
class EnrolOptions:
    name: str | None
    role: str | None
    expires_seconds: float | None
    confirm: str
    window_seconds: float
    host: str | None
    port: int | None
    json: bool
    allow_classical: bool = False


class Screen:
    """What ``doorbell enroll`` prints: lines for a person, or one JSON object per line."""

    def __init__(self, out: IO[str], as_json: bool) -> None:
        self.out = out
        self.json = as_json

    def say(self, record: dict[str, Any], *lines: str) -> None:
        """Print ``lines``, or ``record`` as JSON (nothing when it is empty)."""
        if self.json:
            if record:
                print(json.dumps(record, ensure_ascii=False), file=self.out, flush=True)
        else:
            for line in lines:
                print(line, file=self.out, flush=True)


def run_enroll(
    socket: Path,
    options: EnrolOptions,
    out: IO[str],
    answers: IO[str],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    screen = Screen(out, options.json)
    args: dict[str, Any] = {"confirm": options.confirm, "seconds": options.window_seconds}
    if options.allow_classical:
        args["allow_classical"] = True
    for key, value in (
        ("name", options.name),
        ("role", options.role),
        ("expires", options.expires_seconds),
        ("host", options.host),
        ("port", options.port),
    ):
        if value is not None:
            args[key] = value
    opened = send_command(socket, "enroll-open", args=args)
    window = opened["window"]
    link = opened["link"]
    human = [
        "Scan this code with the new phone, or give it the link:",
        "",
        *_qr_lines(link),
        link,
        "",
        f"The link works once, for {options.window_seconds / 60:g} minute(s).",
    ]
    screen.say({"link": link, "window": window}, *human)
    try:
        return _follow(socket, window, options, screen, answers, clock)
    except KeyboardInterrupt:
        with contextlib.suppress(ControlError):
            send_command(socket, "enroll-cancel", args={"window": window})
        screen.say({"refused": "cancelled"}, "cancelled: the link no longer works")
        return EXIT_REFUSED


def _follow(
    socket: Path,
    window: str,
    options: EnrolOptions,
    screen: Screen,
    answers: IO[str],
    clock: Callable[[], float],
) -> int:
    shown_code = False
    # The daemon ends the window itself; this only bounds a daemon that went away.
    give_up = clock() + options.window_seconds + 600
    while clock() < give_up:
        state = send_command(socket, "enroll-state", args={"window": window})
        if state["state"] == "enrolled":
            screen.say(
                {"enrolled": state["enrolled"]},
                f"enrolled {state['enrolled']!r}: it can open everything sealed from now on",
            )
            return EXIT_OK
        if state["state"] == "refused":
            screen.say({"refused": state["refused"]}, f"refused: {state['refused']}")
            return EXIT_REFUSED
        if state["state"] == "confirming" and not shown_code:
            shown_code = True
            screen.say(
                {
                    "code": state["code"],
                    "phone": state["phone"],
                    "fingerprint": state["fingerprint"],
                },
                f"phone {state['phone']!r} ({state['fingerprint']}) asks to join.",
                f"Its screen must show the code   {state['code']}",
            )
            if options.confirm == "terminal":
                screen.say({}, "Type yes if the codes match:")
                answer = answers.readline().strip().lower()
                if answer != "yes":
                    send_command(socket, "enroll-cancel", args={"window": window})
                    continue
                try:
                    send_command(socket, "enroll-confirm", args={"window": window})
                except ControlError:
                    continue  # expired meanwhile: the next state says so
                continue
            screen.say(
                {},
                f"Press the doorbell button within {state.get('press_within', 60):.0f} s "
                "if the codes match.",
            )
        time.sleep(POLL_SECONDS)
    screen.say({"refused": "the daemon stopped answering"}, "refused: the daemon stopped answering")
    return EXIT_REFUSED


def _qr_lines(text: str) -> list[str]:
    """The link as a QR code drawn with half blocks, two modules a character."""
    import segno

    code = segno.make(text, error="m")
    matrix = [[bool(cell) for cell in row] for row in code.matrix]
    border = 4  # the quiet zone the QR standard asks for
    width = len(matrix[0]) + 2 * border
    blank = [False] * width
    rows = [blank] * border + [[False] * border + r + [False] * border for r in matrix]
    rows += [blank] * (border + 1)
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=False):
        # Light modules are drawn as blocks, dark ones left blank: right on the usual
        # light-on-dark terminal. On a light background it comes out inverted, which most
        # phone cameras still read; the link itself is printed beneath.
        chars = []
        for upper, lower in zip(top, bottom, strict=True):
            chars.append({(False, False): "█", (True, False): "▄", (False, True): "▀"}.get(
                (upper, lower), " "))  # fmt: skip
        lines.append("".join(chars))
    return lines
