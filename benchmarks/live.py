"""Measure live view (part of scripts/bench): the real daemon replaying 1280x720 30 fps
synthetic H.264 from a file (as benchmarks/daemon.py does: encoding is the camera's job),
a Mosquitto on loopback, and the real ``doorbell-phone live`` as a child process.

- ``live_first_frame_s``: from ``doorbell-phone live`` starting (a new process, the
  interpreter's start-up included) to the first complete frame (``moof`` + ``mdat``)
  it writes to its output, which it writes only once decrypted and verified.
- ``live_latency_ms_p50`` / ``_p99``: the phone's own figures (``--stats``): from the
  frame leaving the encoder on the doorbell to the phone having it decrypted, for the
  frames captured after the session began (the GOP a session starts with is older by
  design, and counted apart). The
  camera's exposure and the Pi encoder's own latency come before that and are not in
  it; nor is a real network's.
- ``live_cpu_share``: the daemon's extra CPU with one viewer, as a share of one core:
  its CPU in windows with a viewer watching, minus windows without, alternating.
"""

from __future__ import annotations

import json
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from benchmarks.daemon import process_cpu_s, synthetic_video
from benchmarks.delivery import TOPIC_PREFIX, running_broker
from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command
from doorbell.phone.home import Broker, PhoneHome
from doorbell.sealing import KeyringStore, Suite, load_device_key, prepare_state_dir

TARGETS = {"live_first_frame_s": 1.0, "live_latency_ms_p99": 150.0, "live_cpu_share": 0.02}
FIGURES = ("live_first_frame_s", "live_latency_ms_p50", "live_latency_ms_p99", "live_cpu_share")
TIMEOUT = 60.0


@dataclass(frozen=True)
class LivePlan:
    viewers: int = 5  # phones watching one after another, for the first-frame figure
    watch_seconds: float = 10.0  # each watches this long, for the latency figures
    windows: int = 3  # CPU windows with and without a viewer, alternating
    window_seconds: float = 10.0


@dataclass(frozen=True)
class LiveCost:
    first_frame_s: list[float]
    latency_p50_ms: list[float]
    latency_p99_ms: list[float]
    frames: list[int]
    cpu_with: list[float]
    cpu_without: list[float]
    window_seconds: float

    def headline(self) -> dict[str, float]:
        return {
            "live_first_frame_s": max(self.first_frame_s),
            "live_latency_ms_p50": statistics.median(self.latency_p50_ms),
            "live_latency_ms_p99": max(self.latency_p99_ms),
            "live_cpu_share": (
                statistics.median(self.cpu_with) - statistics.median(self.cpu_without)
            )
            / self.window_seconds,
        }

    def meets_targets(self) -> dict[str, bool]:
        figures = self.headline()
        return {key: figures[key] <= bound for key, bound in TARGETS.items()}

    def details(self) -> dict[str, Any]:
        return {
            "viewers": len(self.first_frame_s),
            "first_frame_s": self.first_frame_s,
            "latency_ms_p50": self.latency_p50_ms,
            "latency_ms_p99": self.latency_p99_ms,
            "frames": self.frames,
            "cpu_with_viewer_s": self.cpu_with,
            "cpu_without_viewer_s": self.cpu_without,
            "window_seconds": self.window_seconds,
        }


class _FirstFrame:
    """Reads a child's stdout (a fragmented MP4) and notes when its first frame was
    complete: the first ``mdat`` after the init segment, whole."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.at: float | None = None
        self.bytes = 0
        self._done = threading.Event()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        data = b""
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            self.bytes += len(chunk)
            if self.at is None:
                data += chunk
                if _has_whole_mdat(data):
                    self.at = time.perf_counter()
                    self._done.set()
        self._done.set()

    def wait(self, timeout: float) -> None:
        self._done.wait(timeout)


def _has_whole_mdat(data: bytes) -> bool:
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < 8:
            return False
        if kind == b"mdat" and offset + size <= len(data):
            return True
        offset += size
    return False


def _phone(workdir: Path, state: Path, broker_host: str, broker_port: int) -> PhoneHome:
    home = PhoneHome(workdir / "live-phone")
    home.init(Suite.MLKEM768_X25519)
    identity = home.public_identity()
    with KeyringStore(state).editing() as box:
        box[0] = box[0].add("live-phone", identity.key, datetime.now(UTC), signing=identity.signing)
    device = load_device_key(state)[0].public_key
    home.trust(device, "bench doorbell")
    home.remember_broker(Broker(device, broker_host, broker_port, False, TOPIC_PREFIX))
    return home


def _watch(home: PhoneHome, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "--home", str(home.directory), "live",
         "--out", "-", "--seconds", str(seconds), "--stats", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def measure_live(plan: LivePlan, workdir: Path) -> LiveCost:
    video = synthetic_video(workdir / "synthetic-720p30.mp4")
    with running_broker(workdir / "live-mosquitto") as broker:
        state = prepare_state_dir(workdir / "live-state")
        home = _phone(workdir, state, broker.host, broker.port)
        runtime = workdir / "live-run"
        config = {
            "state_dir": str(state),
            "runtime_dir": str(runtime),
            "camera": {"source": "file", "file": str(video)},
            "gpio": {"pin_factory": "mock"},
            "sinks": {"local": {"directory": str(workdir / "live-bucket")}},
            "mqtt": {
                "enabled": True,
                "host": broker.host,
                "port": broker.port,
                "topic_prefix": TOPIC_PREFIX,
            },
            "live": {"max_viewers": 4},
            "logging": {"level": "warning"},
        }
        path = workdir / "live-daemon.yaml"
        path.write_text(json.dumps(config))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "doorbell", "run", "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _until(lambda s: bool(s.get("ready")) and bool((s.get("mqtt") or {}).get("connected")),
                   runtime / SOCKET_NAME)  # fmt: skip
            first, p50, p99, frames = [], [], [], []
            for _ in range(plan.viewers):
                start = time.perf_counter()
                watching = _watch(home, plan.watch_seconds)
                assert watching.stdout is not None
                seen = _FirstFrame(watching.stdout)
                seen.wait(TIMEOUT)
                _, err = watching.communicate(timeout=TIMEOUT + plan.watch_seconds)
                if watching.returncode != 0 or seen.at is None:
                    raise RuntimeError(f"doorbell-phone live failed: {err.decode()[-2000:]}")
                summary = json.loads(err.decode().splitlines()[-1])["live"]
                first.append(seen.at - start)
                p50.append(float(summary["latency_ms_p50"]))
                p99.append(float(summary["latency_ms_p99"]))
                frames.append(int(summary["frames"]))
                _until(lambda s: s.get("live_sessions") == 0, runtime / SOCKET_NAME)
            cpu_with, cpu_without = [], []
            for _ in range(plan.windows):
                before = process_cpu_s(daemon.pid)
                time.sleep(plan.window_seconds)
                cpu_without.append(process_cpu_s(daemon.pid) - before)
                watching = _watch(home, plan.window_seconds + 3)
                _until(lambda s: s.get("live_sessions") == 1, runtime / SOCKET_NAME)
                before = process_cpu_s(daemon.pid)
                time.sleep(plan.window_seconds)
                cpu_with.append(process_cpu_s(daemon.pid) - before)
                watching.communicate(timeout=TIMEOUT)
                _until(lambda s: s.get("live_sessions") == 0, runtime / SOCKET_NAME)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    return LiveCost(first, p50, p99, frames, cpu_with, cpu_without, plan.window_seconds)


def _until(condition: Any, socket: Path, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = dict(send_command(socket, "status")["status"])
        except ControlError:
            status = {}
        if condition(status):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not get there in {timeout:.0f} s: {status}")
        time.sleep(0.05)
