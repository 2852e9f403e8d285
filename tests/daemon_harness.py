"""Runs the real daemon in a subprocess on a small synthetic camera, for the daemon tests.

The daemon is another process, so waiting on it means polling its control socket
for a condition, with a deadline: never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command
from doorbell.phone.chain import Verification, verify_source
from doorbell.phone.export import ExportReport, export_clips
from doorbell.phone.home import PhoneHome
from doorbell.phone.objects import DirectorySource
from doorbell.sealing import KeyringStore, Suite, load_device_key, prepare_state_dir

SEGMENT = 1.0
PRE_ROLL = 2.0
POST_ROLL = 2.0
FPS = 15


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class DaemonRig:
    """A state directory with one enrolled phone, a config, and the daemon process."""

    def __init__(
        self,
        root: Path,
        *,
        enrol: bool = True,
        suite: Suite = Suite.X25519,
        extra: dict[str, Any] | None = None,
        **recording: Any,
    ) -> None:
        self.root = root
        self.state = prepare_state_dir(root / "state")
        self.bucket = root / "bucket"
        self.runtime = root / "run"
        self.tmp = root / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.log = root / "daemon.log"
        self.home = PhoneHome(root / "phone")
        identity = self.home.init(suite)
        if enrol:
            with KeyringStore(self.state).editing() as box:
                box[0] = box[0].add("test-phone", identity.public_key(), datetime.now(UTC))
        device, _ = load_device_key(self.state)
        self.home.trust(device.public_key, "test doorbell")
        config = {
            "state_dir": str(self.state),
            "runtime_dir": str(self.runtime),
            "device_name": "test",
            "camera": {
                "source": "synthetic",
                "width": 320,
                "height": 240,
                "fps": FPS,
                "bitrate": 300_000,
                "keyframe_seconds": SEGMENT,
                "snapshot_width": 160,
            },
            "recording": {
                "segment_seconds": SEGMENT,
                "pre_roll_seconds": PRE_ROLL,
                "post_roll_seconds": POST_ROLL,
                "max_clip_seconds": 30.0,
                "cooldown_seconds": 0.0,
                **recording,
            },
            "gpio": {"pin_factory": "mock"},
            "sinks": {"local": {"directory": str(self.bucket)}},
            "logging": {"level": "debug"},
        }
        for section, values in (extra or {}).items():
            if isinstance(values, dict) and isinstance(config.get(section), dict):
                config[section] = {**config[section], **values}
            else:
                config[section] = values
        self.config = root / "doorbell.yaml"
        self.config.write_text(json.dumps(config, indent=2))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None, *, entry: list[str] | None = None) -> None:
        """Start the daemon; ``entry`` runs it through a test harness instead (which is
        handed the configuration's path)."""
        argv = ["-m", "doorbell", "run", "-c", str(self.config)]
        if entry is not None:
            argv = [*entry[:1], str(self.config), *entry[1:]]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *argv],
                stdout=log,
                stderr=log,
                # Any temp file the daemon made would land here, where the tests look.
                env={**os.environ, "TMPDIR": str(self.tmp), **(env or {})},
            )

    def status(self) -> dict[str, Any]:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"daemon exited with {self.process.returncode}:\n{self.log_text()}"
            )
        try:
            return dict(send_command(self.runtime / SOCKET_NAME, "status")["status"])
        except ControlError:
            return {}

    def command(self, name: str) -> dict[str, Any]:
        return send_command(self.runtime / SOCKET_NAME, name)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: bool(self.status().get("ready")), timeout, "the first frames")

    def wait_preroll(self, timeout: float = 60) -> None:
        wait_for(lambda: self.status().get("preroll_seconds", 0) >= PRE_ROLL, timeout, "pre-roll")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def verify(self) -> tuple[Verification, DirectorySource]:
        source = DirectorySource(self.bucket)
        return verify_source(source, self.home.reader()), source

    def export(self) -> tuple[Verification, ExportReport]:
        result, source = self.verify()
        return result, export_clips(source, self.home.reader(), result, self.root / "clips")


_BOX = re.compile(rb"(?s)(.{4})(ftyp|moov|moof|mdat)")


def mp4_boxes(content: bytes) -> list[str]:
    """MP4 box headers in ``content``: a box type behind a size that fits the data.

    The size test keeps text such as base32 key strings, which can spell "ftyp",
    from passing for a box: their four letters before it read as a huge size.
    """
    found = []
    for match in _BOX.finditer(content):
        size = int.from_bytes(match.group(1), "big")
        if 8 <= size <= len(content) - match.start():
            found.append(match.group(2).decode())
    return found
