"""Running ``doorbell enroll`` and ``doorbell-phone`` commands as children, and reading
their JSON lines as they come (the enrolment and phone-command tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from daemon_harness import DaemonRig, wait_for

from doorbell.sealing import Suite

pytest.register_assert_rewrite("mqtt_fixture")
from mqtt_fixture import Mosquitto  # noqa: E402


class Lines:
    """A child's stdout, one JSON object per line, read as it comes."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self._lines.append(json.loads(line) if line.startswith("{") else {"text": line})
                self._changed.notify_all()
        with self._changed:
            self._lines.append({"eof": True})
            self._changed.notify_all()

    def wait_for(self, key: str, timeout: float = 30) -> dict[str, Any]:
        def there() -> bool:
            return any(key in line or "eof" in line for line in self._lines)

        with self._changed:
            if not self._changed.wait_for(there, timeout):
                raise AssertionError(f"no {key!r} within {timeout} s; got {self._lines}")
            found = next(line for line in self._lines if key in line or "eof" in line)
        assert key in found, f"ended without {key!r}: {self._lines}"
        return found

    @property
    def lines(self) -> list[dict[str, Any]]:
        with self._changed:
            return list(self._lines)


def broker_rig(root: Path, mosquitto: Mosquitto, *, enrol: bool = True) -> DaemonRig:
    """A daemon with MQTT on ``mosquitto`` and, with ``enrol``, one hybrid phone."""
    mqtt = {"enabled": True, "host": mosquitto.host, "port": mosquitto.port, "keepalive": 5}
    return DaemonRig(root, enrol=enrol, suite=Suite.MLKEM768_X25519, extra={"mqtt": mqtt})


def started(rig: DaemonRig) -> Iterator[DaemonRig]:
    """Start ``rig``, wait until it is connected, and kill it at the end."""
    rig.start()
    try:
        rig.wait_ready()
        wait_for(lambda: rig.status()["mqtt"]["connected"], 20, "the daemon's MQTT link")
        yield rig
    finally:
        rig.kill()


def phone_command(
    home: Path, *argv: str, stdin: str | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``doorbell-phone --home HOME ARGV... --json`` to its end."""
    run = subprocess.run(
        [sys.executable, "-m", "doorbell.phone", "--home", str(home), *argv],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return run.returncode, lines, run.stderr


def enroll(rig: DaemonRig, *options: str) -> tuple[subprocess.Popen[str], Lines]:
    process = subprocess.Popen(
        [sys.executable, "-m", "doorbell", "enroll", "-c", str(rig.config), "--json", *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, Lines(process.stdout)


def new_phone(home: Path, link: str, *options: str) -> tuple[subprocess.Popen[str], Lines]:
    process = subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "--home", str(home), "enroll", link, "--json",
         *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    return process, Lines(process.stdout)


def finish(process: subprocess.Popen[str]) -> int:
    code = process.wait(timeout=30)
    return code


def join(rig: DaemonRig, home: Path, *options: str) -> None:
    """Enrol a phone at the doorbell's terminal, as `doorbell enroll` does."""
    owner, said = enroll(rig, *options)
    joining, shown = new_phone(home, said.wait_for("link")["link"])
    shown.wait_for("code")
    assert owner.stdin is not None
    owner.stdin.write("yes\n")
    owner.stdin.flush()
    shown.wait_for("enrolled")
    assert finish(owner) == 0 and finish(joining) == 0


def owned_doorbell(root: Path, mosquitto: Mosquitto) -> Iterator[DaemonRig]:
    """A running doorbell whose first phone, ``owner`` (in ``root/owner``), joined over
    the network; killed at the end."""
    rig = broker_rig(root / "doorbell", mosquitto, enrol=False)
    for running in started(rig):
        join(running, root / "owner", "--name", "owner")
        yield running
