"""The local control socket: ``ring``, ``motion`` and ``status`` for tools and tests.

One JSON object per line each way over a Unix stream socket in the runtime
directory. Requests are hostile input: one thread reads every client at once,
each with a deadline for its whole request, so a slow client holds up nobody;
requests are size-limited and strictly parsed, and a bad one gets an error
reply, never a crash.

A request carries its client's deadline on the machine's monotonic clock
(``{"command": "ring", "deadline": 1234.5}``). The daemon runs a command only
while its client still waits for the answer: one that arrives late, or that the
main loop cannot take up in time, is refused and never run later.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
COMMANDS = (
    "ring",
    "motion",
    "status",
    # doorbell enroll: open a window, follow it, confirm it on the terminal, close it
    "enroll-open",
    "enroll-state",
    "enroll-confirm",
    "enroll-cancel",
)
# A command's arguments: one flat object of at most this many strings, numbers or booleans.
MAX_ARGS = 16
MAX_REQUEST = 4096
# Replies carry the status, which grows with the phones' names and the sinks.
MAX_REPLY = 1024 * 1024
# Clients connected at once; beyond that a client is told to try again, not queued.
MAX_CLIENTS = 128
# Commands answered at once (each waits for the main loop on a thread of its own).
MAX_ANSWERING = 16
# A whole request must arrive within this long of its connection being accepted.
REQUEST_SECONDS = 5.0
# The longest a command waits for the main loop to take it up, whatever its deadline.
ANSWER_SECONDS = 10.0
# Kept free before the client's deadline to run the command and send the answer.
REPLY_MARGIN = 1.0
# How long past its deadline a client still reads, for an answer already under way.
REPLY_GRACE = 1.0
# A command the main loop has taken up normally finishes in milliseconds.
RUNNING_SECONDS = 30.0

# The client's deadline for the command the current answering thread serves:
# `Mailbox.wait` reads it, so the daemon's handler never waits past it.
_client_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("client_deadline")


class ControlError(Exception):
    """The control socket could not be reached or answered with an error."""


class RequestError(ValueError):
    """A request the server refuses; its message goes back to the client."""


Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


def shared_clock() -> float:
    """Seconds on CLOCK_MONOTONIC, which every process on one machine shares.

    A Unix socket never leaves the machine, so a client's deadline on this clock
    means the same instant to the daemon, and no wall-clock step can move it.
    """
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class ControlServer:
    """Accepts commands and answers each with ``handler(command)``'s result.

    One thread reads every client's request at once, so a slow or silent client
    holds up nobody; each complete request is answered on a thread of its own.
    The daemon's handler forwards to its main loop through a `Mailbox` and waits
    for the answer, so state is touched in one place.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.bind(str(path))
        # The mode is set on the path after bind and before listen, without touching
        # the process-wide umask that other threads' files depend on. That is race-free:
        # connect() on a socket that is not listening yet is refused whatever its mode,
        # so nobody can connect before the mode is right.
        os.chmod(path, 0o660)
        self._sock.listen(MAX_CLIENTS)
        self._sock.setblocking(False)
        self._stop = threading.Event()
        self._answering = threading.BoundedSemaphore(MAX_ANSWERING)
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
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                now = shared_clock()
                waiting = [key for key in selector.get_map().values() if key.data is not None]
                for key in waiting:
                    if key.data.deadline <= now:
                        selector.unregister(key.data.conn)
                        late = f"the request was not complete within {REQUEST_SECONDS:g} s"
                        _refuse(key.data.conn, late)
                timeout = min([0.5, *(key.data.deadline - now for key in waiting)])
                for key, _ in selector.select(max(0.0, timeout)):
                    if key.data is None:
                        self._accept(selector)
                    else:
                        self._receive(selector, key.data)
            for key in list(selector.get_map().values()):
                if key.data is not None:
                    key.data.conn.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                # Out of file descriptors, say: try again shortly rather than spin.
                log.warning("control socket: cannot accept a client: %s", exc)
                self._stop.wait(0.1)
                return
            if len(selector.get_map()) > MAX_CLIENTS:
                _refuse(conn, f"{MAX_CLIENTS} control clients already; try again")
                continue
            conn.setblocking(False)
            selector.register(
                conn, selectors.EVENT_READ, _Request(conn, shared_clock() + REQUEST_SECONDS)
            )

    def _receive(self, selector: selectors.BaseSelector, request: _Request) -> None:
        conn = request.conn
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            selector.unregister(conn)
            conn.close()
            return
        request.data += chunk
        line, newline, _ = bytes(request.data).partition(b"\n")
        if len(line) > MAX_REQUEST:
            problem = f"request longer than {MAX_REQUEST} bytes"
        elif not chunk:
            problem = "the request ended before its newline"
        elif not newline:
            return
        elif not self._answering.acquire(blocking=False):
            problem = f"{MAX_ANSWERING} commands already under way; try again"
        else:
            selector.unregister(conn)
            threading.Thread(
                target=self._answer, args=(conn, line), name="control-answer", daemon=True
            ).start()
            return
        selector.unregister(conn)
        _refuse(conn, problem)

    def _answer(self, conn: socket.socket, line: bytes) -> None:
        try:
            with conn:
                try:
                    reply = self._run(line)
                except RequestError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception:
                    # Whatever went wrong, this client gets an answer and the others are served.
                    log.exception("control socket: a request failed")
                    reply = {"ok": False, "error": "the daemon failed to answer; see its log"}
                conn.settimeout(REQUEST_SECONDS)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")
        finally:
            self._answering.release()

    def _run(self, line: bytes) -> dict[str, Any]:
        command, args, deadline = _parse(line)
        if deadline - shared_clock() - REPLY_MARGIN <= 0:
            # Its client has given up or is about to: running it now would be a ghost.
            log.warning("control socket: %s arrived after its client gave up; not run", command)
            return {
                "ok": False,
                "error": f"{command!r} arrived after its client's deadline; not run",
            }
        _client_deadline.set(deadline)
        return self._handler(command, args)


@dataclass
class _Request:
    """A request still arriving: its client, what came so far, and by when the rest must."""

    conn: socket.socket
    deadline: float
    data: bytearray = field(default_factory=bytearray)


def _refuse(conn: socket.socket, problem: str) -> None:
    """Send a short error reply without waiting, and hang up."""
    with conn:
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"ok": False, "error": problem}).encode() + b"\n")


def _parse(line: bytes) -> tuple[str, dict[str, Any], float]:
    """The command, its arguments and the client's deadline, or `RequestError` saying
    what is wrong."""
    try:
        request = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError("request is not a JSON object on one line") from None
    except RecursionError:
        raise RequestError("request nests too deeply; expected one flat JSON object") from None
    if not isinstance(request, dict):
        raise RequestError("request is not a JSON object on one line")
    command = request.get("command")
    if command not in COMMANDS:
        raise RequestError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    now = shared_clock()
    deadline = request.get("deadline", now + ANSWER_SECONDS + REPLY_MARGIN)
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise RequestError(f"deadline must be a number, got {deadline!r}")
    if not math.isfinite(deadline):
        raise RequestError(f"deadline must be finite, got {deadline!r}")
    args = request.get("args", {})
    if not isinstance(args, dict) or len(args) > MAX_ARGS:
        raise RequestError(f"args must be an object of at most {MAX_ARGS} members")
    for key, value in args.items():
        if not isinstance(value, str | int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise RequestError(f"argument {key[:40]!r} must be a string, number or boolean")
    return command, args, min(float(deadline), now + ANSWER_SECONDS + REPLY_MARGIN)


def _read_reply(sock: socket.socket, deadline: float) -> bytes:
    """The daemon's one-line reply; `TimeoutError` when it is not complete by `deadline`."""
    data = b""
    while True:
        left = deadline - shared_clock()
        if left <= 0:
            raise TimeoutError("no reply in time")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("the daemon hung up without a complete reply")
        end = chunk.find(b"\n")
        if end >= 0:
            return data + chunk[:end]
        data += chunk
        if len(data) > MAX_REPLY:
            raise ValueError(f"reply longer than {MAX_REPLY} bytes")


def send_command(
    path: Path, command: str, timeout: float = 10.0, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Send one command to a running daemon and return its reply.

    The daemon runs the command only if it can answer within `timeout`: when this
    raises because no answer came, a command the daemon had not started is never run.
    """
    deadline = shared_clock() + timeout
    request: dict[str, Any] = {"command": command, "deadline": deadline}
    if args:
        request["args"] = args
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = _read_reply(sock, deadline + REPLY_GRACE)
    except FileNotFoundError:
        raise ControlError(f"no daemon is listening at {path} (is doorbell running?)") from None
    except ConnectionRefusedError:
        raise ControlError(f"the daemon at {path} refused the connection (stale socket?)") from None
    except PermissionError:
        raise ControlError(
            f"no permission to use {path} (run as the doorbell user or root)"
        ) from None
    except TimeoutError:
        raise ControlError(_no_answer(path, timeout)) from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"control socket {path}: {exc}") from None
    try:
        answer = json.loads(reply.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ControlError(f"the daemon at {path} sent an unreadable reply") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the daemon at {path} sent an unreadable reply")
    if not answer.get("ok", False):
        raise ControlError(str(answer.get("error", "the daemon refused the command")))
    return answer


def _no_answer(path: Path, timeout: float) -> str:
    return (
        f"the daemon at {path} did not answer within {timeout:g} s; "
        "a command it had not started by then is never run"
    )


class Mailbox:
    """Hands a command from a connection thread to the main loop and waits for its answer.

    The command runs only if the main loop takes it up while its client still waits:
    when the wait ends first, the mailbox is abandoned and `answer` no longer runs
    it, so a client that gave up never causes a ghost ring later.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._taken = False
        self._abandoned = False
        self._answer: dict[str, Any] = {}

    def answer(self, run: Callable[[], dict[str, Any]]) -> None:
        """Run the command on the calling thread, unless its client has given up."""
        with self._lock:
            if self._abandoned:
                return
            self._taken = True
        self.reply(run())

    def reply(self, answer: dict[str, Any]) -> None:
        with self._lock:
            if self._abandoned:
                return
            self._taken = True
            self._answer = answer
        self._done.set()

    def wait(self, timeout: float) -> dict[str, Any]:
        """The answer, waiting at most `timeout` and never past the client's deadline."""
        deadline = _client_deadline.get(math.inf)
        budget = min(timeout, deadline - shared_clock() - REPLY_MARGIN)
        if self._done.wait(max(0.0, budget)):
            return self._answer
        with self._lock:
            if not self._taken:
                self._abandoned = True
                log.warning("control socket: the main loop was busy; a command was not run")
                return {"ok": False, "error": "the daemon was busy and did not run the command"}
        # The main loop is running the command now: its answer follows shortly.
        if self._done.wait(RUNNING_SECONDS):
            return self._answer
        return {"ok": False, "error": "the daemon started the command but did not finish it"}
