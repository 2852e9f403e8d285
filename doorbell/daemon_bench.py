"""Measure the daemon's own CPU and memory on 720p30 synthetic video (part of scripts/bench).

The synthetic source generates and encodes the picture in software, work a Pi's
camera and hardware encoder do instead. So the same source runs alone for the
same time in another process, and its CPU is subtracted: what is left is what
the daemon adds (segmenting, sealing, the recorder, delivery, the main loop).
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

from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command
from doorbell.sealing import KeyringStore, RecipientPrivateKey, Suite, prepare_state_dir

TARGETS = {"daemon_cpu_share": 0.02, "daemon_rss_mb": 120.0}
WIDTH, HEIGHT, FPS = 1280, 720, 30
_SOURCE_ALONE = """
import sys
from doorbell.capture import SyntheticSource
source = SyntheticSource({width}, {height}, {fps}, realtime=True)
frames = source.frames()
next(frames)
print("ready", flush=True)
for _ in frames:
    pass
"""


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
    state = prepare_state_dir(workdir / "daemon-state")
    phone = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
    with KeyringStore(state).editing() as box:
        box[0] = box[0].add("bench-phone", phone.public_key(), datetime.now(UTC))
    runtime = workdir / "daemon-run"
    config = {
        "state_dir": str(state),
        "runtime_dir": str(runtime),
        "camera": {"source": "synthetic", "width": WIDTH, "height": HEIGHT, "fps": FPS},
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
        [sys.executable, "-c", _SOURCE_ALONE.format(width=WIDTH, height=HEIGHT, fps=FPS)],
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
