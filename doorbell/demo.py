"""``doorbell demo``: the real daemon on embedded defaults, rung once, its clip exported.

No Pi, broker or cloud: the synthetic camera, gpiozero's mock pins and the local
directory sink. The daemon runs as a child process exactly as systemd would run
it; the demo talks to it over its control socket like any other tool.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command
from doorbell.phone.chain import verify_source
from doorbell.phone.export import export_clips
from doorbell.phone.home import PhoneHome
from doorbell.phone.objects import DirectorySource
from doorbell.sealing import KeyringStore, Suite, load_device_key, prepare_state_dir

PHONE_NAME = "demo-phone"
PRE_ROLL = 4.0
POST_ROLL = 4.0
SEGMENT = 2.0


class DemoError(Exception):
    """The daemon did not do what the demo waited for."""


def demo_config(directory: Path) -> dict[str, Any]:
    """Embedded defaults, with every path inside the demo directory."""
    state = directory / "doorbell"
    return {
        "state_dir": str(state),
        "runtime_dir": str(state / "run"),
        "device_name": "demo",
        "camera": {"source": "synthetic"},
        "recording": {
            "segment_seconds": SEGMENT,
            "pre_roll_seconds": PRE_ROLL,
            "post_roll_seconds": POST_ROLL,
        },
        "gpio": {"pin_factory": "mock"},
        "sinks": {"local": {"directory": str(directory / "bucket")}},
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    """Poll ``condition`` until it holds; the daemon is another process, so polling it is."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def run_demo(directory: Path, *, out: TextIO = sys.stdout) -> int:
    directory = Path(directory).absolute()
    state = prepare_state_dir(directory / "doorbell")
    home = PhoneHome(directory / "phone")
    bucket = directory / "bucket"
    bucket.mkdir(parents=True, exist_ok=True)
    clips = directory / "clips"

    identity = home.identity() if home.identity_path.exists() else home.init(Suite.MLKEM768_X25519)
    store = KeyringStore(state)
    if not any(r.key == identity.public_key() for r in store.load().recipients):
        with store.editing() as box:
            box[0] = box[0].add(PHONE_NAME, identity.public_key(), datetime.now(UTC))
    device, _ = load_device_key(state)
    home.trust(device.public_key, "demo doorbell")
    print(f"Doorbell demo in {directory}/", file=out)
    print(f"  device key  {device.public_key.to_string()}", file=out)
    print(
        f"  phone       {PHONE_NAME} ({identity.suite.label}): enrolled, trusts the doorbell",
        file=out,
    )

    config = state / "demo.yaml"
    config.write_text(json.dumps(demo_config(directory), indent=2) + "\n")
    socket_path = state / "run" / SOCKET_NAME
    log_path = state / "daemon.log"
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "doorbell", "run", "-c", str(config)],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        ring_status = _drive(daemon, socket_path, out)
    except (DemoError, ControlError) as exc:
        daemon.kill()
        daemon.wait()
        print(f"demo failed: {exc}; the daemon's log is {log_path}", file=sys.stderr)
        return 1
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=60)
    print(f"  stopped     the daemon with SIGTERM: exit {code} ({ring_status})", file=out)

    source = DirectorySource(bucket)
    reader = home.reader()
    result = verify_source(source, reader)
    for finding in result.findings:
        print(f"  {'FAIL' if finding.problem else 'note'}        {finding}", file=out)
    status = "all verified" if result.ok else f"{len(result.problems)} problem(s)"
    print(f"  verified    {len(result.entries)} objects in {bucket}/: {status}", file=out)
    report = export_clips(source, reader, result, clips)
    for clip in report.clips:
        extra = f" + snapshot {clip.snapshot.name}" if clip.snapshot else ""
        before = (
            ""
            if clip.pre_roll is None
            else f", starts {clip.pre_roll:.1f} s before the {clip.label}"
        )
        print(
            f"  exported    {clip.path} ({clip.label}, {clip.segments} segments, "
            f"{clip.seconds:.1f} s{before}){extra}",
            file=out,
        )
    for line in report.skipped:
        print(f"  skipped     {line}", file=out)
    return 0 if code == 0 and result.ok and report.clips and not report.skipped else 1


def _drive(daemon: subprocess.Popen[bytes], socket_path: Path, out: TextIO) -> str:
    def status() -> dict[str, Any]:
        if daemon.poll() is not None:
            raise DemoError(f"the daemon exited with code {daemon.returncode}")
        try:
            reply = send_command(socket_path, "status")
        except ControlError:
            return {}
        result = reply["status"]
        assert isinstance(result, dict)
        return result

    wait_for(lambda: bool(status().get("ready")), 60, "the camera's first frames")
    print(
        f"  running     the daemon: synthetic 1280x720 camera, mock pins, {PRE_ROLL:g} s pre-roll",
        file=out,
    )
    wait_for(lambda: status().get("preroll_seconds", 0) >= PRE_ROLL, 60, "the pre-roll to fill")
    send_command(socket_path, "ring")
    print("  rang        the doorbell through its control socket", file=out)
    wait_for(
        lambda: status().get("clips", 0) >= 1 and status().get("clip") is None,
        120,
        "the clip to end",
    )
    final = status()
    return f"{final['objects_delivered']} objects delivered"
