"""Measure the daemon's own CPU and memory on 720p30 synthetic video (part of scripts/bench).

Generating and encoding the picture is work a Pi's camera and hardware encoder do,
not the daemon. So the synthetic picture is encoded once, before the run, and the
daemon replays it from a file in real time (``camera.source: file`` passes H.264
through without re-encoding); the same file source then runs alone for the same
time in another process, and its CPU is subtracted. What is left is what the
daemon adds: segmenting, sealing, the recorder, delivery, the main loop.
The replaying source also decodes every frame in the background so a ring's
snapshot is instant (on a Pi the camera's low-resolution stream does that job):
about 4 s a minute, subtracted with the rest of the source, against ~18 s for
encoding on the fly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doorbell.capture import Segmenter, SyntheticSource
from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command
from doorbell.sealing import KeyringStore, RecipientPrivateKey, Suite, prepare_state_dir

TARGETS = {"daemon_cpu_share": 0.02, "daemon_rss_mb": 120.0}
WIDTH, HEIGHT, FPS = 1280, 720, 30
VIDEO_SECONDS = 20
_SOURCE_ALONE = """
from doorbell.capture.file import FileSource
source = FileSource({path!r}, realtime=True)
frames = source.frames()
next(frames)
print("ready", flush=True)
for _ in frames:
    pass
"""


def synthetic_video(path: Path, seconds: int = VIDEO_SECONDS) -> Path:
    """The synthetic test picture, encoded once into a fragmented MP4 to replay."""
    source = SyntheticSource(WIDTH, HEIGHT, FPS, seconds=seconds, realtime=False)
    segmenter = Segmenter(source.format, 2.0)
    with path.open("wb") as out:
        for unit in source.frames():
            for segment in segmenter.feed(unit):
                out.write(segment.data)
        for segment in segmenter.flush():
            out.write(segment.data)
    return path


@dataclass(frozen=True)
class DaemonCost:
    seconds: float
    daemon_cpu_s: float
    source_cpu_s: float
    rss_mb: float
    objects: int

    @property
    def share(self) -> float:
        return max(0.0, self.daemon_cpu_s - self.source_cpu_s) / self.seconds


def process_cpu_s(pid: int) -> float:
    """User + system CPU of a whole process (all threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _poll(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not reach {what} within {timeout:.0f} s")
        time.sleep(0.1)


def measure_daemon(seconds: float, workdir: Path) -> DaemonCost:
    """Run the daemon for ``seconds`` of video with one ring, then the source alone."""
    video = synthetic_video(workdir / "synthetic-720p30.mp4")
    state = prepare_state_dir(workdir / "daemon-state")
    phone = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
    with KeyringStore(state).editing() as box:
        box[0] = box[0].add("bench-phone", phone.public_key(), datetime.now(UTC))
    runtime = workdir / "daemon-run"
    config = {
        "state_dir": str(state),
        "runtime_dir": str(runtime),
        "camera": {"source": "file", "file": str(video)},
        "gpio": {"pin_factory": "mock"},
        "sinks": {"local": {"directory": str(workdir / "daemon-bucket")}},
        "logging": {"level": "warning"},
    }
    config_path = workdir / "daemon.yaml"
    config_path.write_text(json.dumps(config))
    socket_path = runtime / SOCKET_NAME

    def status() -> dict[str, Any]:
        try:
            return dict(send_command(socket_path, "status")["status"])
        except ControlError:
            return {}

    daemon = subprocess.Popen(
        [sys.executable, "-m", "doorbell", "run", "-c", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _poll(lambda: bool(status().get("ready")), 60, "its first frame")
        cpu0, start = process_cpu_s(daemon.pid), time.monotonic()
        # A realistic minute: idle pre-roll, then one ring and its clip.
        time.sleep(seconds / 3)
        send_command(socket_path, "ring")
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        daemon_cpu = process_cpu_s(daemon.pid) - cpu0
        elapsed = time.monotonic() - start
        rss = peak_rss_mb(daemon.pid)
        objects = int(status().get("objects_sealed", 0))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)

    source = subprocess.Popen(
        [sys.executable, "-c", _SOURCE_ALONE.format(path=str(video))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert source.stdout is not None
        if source.stdout.readline().strip() != "ready":
            raise RuntimeError("the synthetic source did not start")
        cpu0, start = process_cpu_s(source.pid), time.monotonic()
        time.sleep(elapsed)
        source_cpu = (process_cpu_s(source.pid) - cpu0) * elapsed / (time.monotonic() - start)
    finally:
        source.kill()
        source.wait()
    return DaemonCost(elapsed, daemon_cpu, source_cpu, rss, objects)
