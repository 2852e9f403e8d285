"""The local control socket: ``ring``, ``motion`` and ``status`` for tools and tests.

One JSON object per line each way over a Unix stream socket in the runtime
directory. Requests are hostile input: size-limited, strictly parsed, and a bad
one gets an error reply, never a crash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
COMMANDS = ("ring", "motion", "status")
MAX_REQUEST = 4096


class ControlError(Exception):
    """The control socket could not be reached or answered with an error."""


Handler = Callable[[str], dict[str, Any]]


class ControlServer:
    """Accepts commands on a thread and answers with ``handler(command)``'s result.

    The handler is called on the server's thread; the daemon's handler forwards
    to its main loop and waits for the answer, so state is touched in one place.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o117)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old_umask)
        self._sock.listen(8)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            with conn:
                conn.settimeout(5)
                try:
                    reply = self._answer(_read_line(conn))
                except (OSError, ValueError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"ok": False, "error": "request is not a JSON object on one line"}
        command = request.get("command") if isinstance(request, dict) else None
        if command not in COMMANDS:
            return {
                "ok": False,
                "error": f"unknown command {command!r}; known: {', '.join(COMMANDS)}",
            }
        return self._handler(command)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    return data.split(b"\n", 1)[0]


def send_command(path: Path, command: str, timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to a running daemon and return its reply."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps({"command": command}).encode() + b"\n")
            reply = _read_line(sock)
    except FileNotFoundError:
        raise ControlError(f"no daemon is listening at {path} (is doorbell running?)") from None
    except ConnectionRefusedError:
        raise ControlError(f"the daemon at {path} refused the connection (stale socket?)") from None
    except PermissionError:
        raise ControlError(
            f"no permission to use {path} (run as the doorbell user or root)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"control socket {path}: {exc}") from None
    try:
        answer = json.loads(reply.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"the daemon at {path} sent an unreadable reply") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the daemon at {path} sent an unreadable reply")
    if not answer.get("ok", False):
        raise ControlError(str(answer.get("error", "the daemon refused the command")))
    return answer


class Mailbox:
    """Hands a request from another thread to the main loop and waits for its answer."""

    def __init__(self) -> None:
        self._answer: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)

    def reply(self, answer: dict[str, Any]) -> None:
        self._answer.put(answer)

    def wait(self, timeout: float) -> dict[str, Any]:
        try:
            return self._answer.get(timeout=timeout)
        except queue.Empty:
            return {"ok": False, "error": "the daemon did not answer in time"}
