"""Measure enrolment over the network (part of scripts/bench).

- ``enroll_to_first_object_s``: from ``doorbell-phone enroll LINK`` starting (a new
  process, interpreter start-up included) to the first object sealed to the new phone
  being in the doorbell's bucket (a local folder, polled every 20 ms). In between: the
  phone connects to a Mosquitto on loopback and sends its hello, the real daemon answers
  with the code, and the owner's ``yes`` is typed into ``doorbell enroll`` the moment its
  code appears (a person comparing codes takes longer; that time is not the doorbell's).
  The first object sealed to the phone is the keyring object the doorbell seals on
  confirmation. The figure is the slowest of the runs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks.delivery import TOPIC_PREFIX, BenchDaemon, running_broker
from doorbell.phone.home import PhoneHome
from doorbell.sealing import Reader, SealingError

TARGETS = {"enroll_to_first_object_s": 2.0}
POLL_SECONDS = 0.02
TIMEOUT = 60.0


@dataclass(frozen=True)
class EnrolRun:
    code_s: float  # the phone printed the code
    first_object_s: float  # the first object sealed to it was in the bucket
    enrolled_s: float  # the phone printed that it is enrolled


@dataclass(frozen=True)
class EnrolmentCost:
    runs: tuple[EnrolRun, ...]

    def headline(self) -> dict[str, float]:
        return {"enroll_to_first_object_s": max(r.first_object_s for r in self.runs)}

    def meets_targets(self) -> dict[str, bool]:
        return {k: v <= TARGETS[k] for k, v in self.headline().items()}

    def details(self) -> dict[str, Any]:
        def summary(values: list[float]) -> dict[str, float]:
            return {"median": statistics.median(values), "max": max(values)}

        return {
            "runs": len(self.runs),
            "code_s": summary([r.code_s for r in self.runs]),
            "first_object_s": summary([r.first_object_s for r in self.runs]),
            "enrolled_s": summary([r.enrolled_s for r in self.runs]),
        }


class _JsonLines:
    """A child's stdout, one JSON object per line, each stamped when it arrived."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append((time.perf_counter(), json.loads(line)))
                self._changed.notify_all()

    def wait(self, key: str, timeout: float = TIMEOUT) -> tuple[float, dict[str, Any]]:
        def found() -> tuple[float, dict[str, Any]] | None:
            return next(((t, d) for t, d in self.lines if key in d), None)

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout):
                raise RuntimeError(f"no {key!r} within {timeout:.0f} s: {self.lines}")
            hit = found()
        assert hit is not None
        return hit


def _first_for(bucket: Path, reader: Reader, seen: set[str]) -> bool:
    for path in bucket.glob("*.sealed"):
        if path.name in seen:
            continue
        try:
            if reader.can_open(reader.verify(path.read_bytes())):
                return True
        except (SealingError, OSError):
            pass
        seen.add(path.name)
    return False


def _one(daemon: BenchDaemon, bucket: Path, home: PhoneHome, number: int) -> EnrolRun:
    owner = subprocess.Popen(
        [sys.executable, "-m", "doorbell", "enroll", "-c", str(daemon.config), "--json",
         "--name", f"bench-new-{number}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert owner.stdin is not None and owner.stdout is not None
    said = _JsonLines(owner.stdout)
    _, opened = said.wait("link")
    seen = {path.name for path in bucket.glob("*.sealed")}
    start = time.perf_counter()
    phone = subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "--home", str(home.directory), "enroll",
         opened["link"], "--json"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert phone.stdout is not None
    shown = _JsonLines(phone.stdout)
    said.wait("code")
    owner.stdin.write("yes\n")
    owner.stdin.flush()
    code_at, _ = shown.wait("code")
    deadline = time.monotonic() + TIMEOUT
    # The phone made its keys before its hello: it has them by the time it shows a code.
    reader = Reader([home.identity()], [daemon.device])
    while not _first_for(bucket, reader, seen):
        if time.monotonic() > deadline:
            raise RuntimeError("no object sealed to the new phone reached the bucket")
        time.sleep(POLL_SECONDS)
    first_at = time.perf_counter()
    enrolled_at, _ = shown.wait("enrolled")
    for process in (owner, phone):
        if process.wait(timeout=TIMEOUT) != 0:
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}")
    return EnrolRun(code_at - start, first_at - start, enrolled_at - start)


def measure_enrolment(workdir: Path, runs: int = 3) -> EnrolmentCost:
    """``runs`` phones enrolled one after another into one running daemon."""
    with running_broker(workdir / "enrol-mosquitto") as broker:
        root = workdir / "enrol-daemon"
        bucket = root / "bucket"
        daemon = BenchDaemon(
            root,
            sinks={"local": {"directory": str(bucket)}},
            mqtt={
                "enabled": True,
                "host": broker.host,
                "port": broker.port,
                "topic_prefix": TOPIC_PREFIX,
            },
        )
        with daemon:
            daemon.wait_until(lambda s: bool((s.get("mqtt") or {}).get("connected")), "MQTT")
            results = tuple(
                _one(daemon, bucket, PhoneHome(workdir / f"enrol-phone-{n}"), n)
                for n in range(runs)
            )
    return EnrolmentCost(results)
