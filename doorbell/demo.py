"""``doorbell demo``: the real daemon on embedded defaults, a phone enrolled through the
network, the doorbell rung once, its clip exported.

No Pi, broker or cloud: the synthetic camera, gpiozero's mock pins, the local directory
sink, and a private Mosquitto on a free loopback port for the enrolment (when Mosquitto
is installed; without it the phone is enrolled by hand, as `doorbell keys add` does).
The daemon runs as a child process exactly as systemd would run it; the demo talks to
it over its control socket like any other tool, and enrols the phone with
`doorbell-phone enroll`'s own code, typing the owner's "yes" itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command
from doorbell.phone.chain import verify_source
from doorbell.phone.enrol import EnrolOptions, enrol
from doorbell.phone.export import export_clips
from doorbell.phone.home import PhoneHome
from doorbell.phone.objects import DirectorySource
from doorbell.sealing import (
    KeyringStore,
    Suite,
    load_device_key,
    prepare_state_dir,
    write_atomic,
)

PHONE_NAME = "demo-phone"
PRE_ROLL = 4.0
WORDS_FILE = "recovery-words.txt"  # the demo doorbell's recovery key, for the web phone
POST_ROLL = 4.0
SEGMENT = 2.0


class DemoError(Exception):
    """The daemon did not do what the demo waited for."""


def demo_config(directory: Path, broker_port: int | None = None) -> dict[str, Any]:
    """Embedded defaults, with every path inside the demo directory."""
    state = directory / "doorbell"
    config: dict[str, Any] = {
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
    if broker_port is not None:
        config["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": broker_port}
    return config


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

    device, _ = load_device_key(state)
    store = KeyringStore(state)
    enrolled = home.identity_path.exists() and any(
        r.key == home.identity().public_key() for r in store.load().recipients
    )
    print(f"Doorbell demo in {directory}/", file=out)
    print(f"  device key  {device.public_key.to_string()}", file=out)
    with _private_broker(state) as broker_port:
        if broker_port is None and not enrolled:
            # No Mosquitto here: enrolled by hand, as `doorbell keys add` would.
            identity = (
                home.identity() if home.identity_path.exists() else home.init(Suite.MLKEM768_X25519)
            )
            with store.editing() as box:
                box[0] = box[0].add(
                    PHONE_NAME, identity.public_key(), datetime.now(UTC),
                    signing=home.signing_key().public_key,
                )  # fmt: skip
            home.trust(device.public_key, "demo doorbell")
            print(
                f"  phone       {PHONE_NAME}: enrolled by hand (install mosquitto to see "
                "enrolment over the network)",
                file=out,
            )
        return _run(directory, home, bucket, clips, broker_port, enrolled, out)


def _run(
    directory: Path,
    home: PhoneHome,
    bucket: Path,
    clips: Path,
    broker_port: int | None,
    enrolled: bool,
    out: TextIO,
) -> int:
    state = directory / "doorbell"
    config = state / "demo.yaml"
    config.write_text(json.dumps(demo_config(directory, broker_port), indent=2) + "\n")
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
        if broker_port is not None and not enrolled:
            _enrol_over_the_network(daemon, socket_path, home, out)
        elif enrolled:
            print(f"  phone       {PHONE_NAME}: enrolled in an earlier run", file=out)
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
    _web_phone_hint(directory, bucket, out)
    return 0 if code == 0 and result.ok and report.clips and not report.skipped else 1


def _web_phone_hint(directory: Path, bucket: Path, out: TextIO) -> None:
    """How to open this footage in the web phone: as the demo doorbell's recovery key."""
    words = directory / WORDS_FILE
    if not words.exists():
        print("  web phone   needs the recovery key of an enrolment over the network: "
              "install mosquitto and run the demo in a new folder", file=out)  # fmt: skip
        return
    device, _ = load_device_key(directory / "doorbell")
    print(
        "\nOpen this footage in the web phone (it decrypts only in your browser):\n"
        "  1. doorbell-phone web          (then open the address it prints)\n"
        "  2. Restore from recovery words: paste the words in\n"
        f"       {words}\n"
        "     and the doorbell's key\n"
        f"       {device.public_key.to_string()}\n"
        f"  3. Clips, Open a folder: {bucket}",
        file=out,
    )


def _enrol_over_the_network(
    daemon: subprocess.Popen[bytes], socket_path: Path, home: PhoneHome, out: TextIO
) -> None:
    """What `doorbell enroll` and `doorbell-phone enroll` do, with the owner's yes typed
    by the demo once both codes agree."""
    wait_for(
        lambda: _status(daemon, socket_path).get("mqtt", {}).get("connected", False),
        60,
        "the daemon's broker",
    )
    opened = send_command(
        socket_path, "enroll-open", args={"name": PHONE_NAME, "role": "owner", "seconds": 120}
    )
    window = opened["window"]
    print(f"  link        {opened['link']}", file=out)
    said = io.StringIO()
    result: list[int] = []
    phone = threading.Thread(
        target=lambda: result.append(
            enrol(home, EnrolOptions(opened["link"], PHONE_NAME, json=True), said)
        ),
        daemon=True,
    )
    phone.start()

    def state() -> dict[str, Any]:
        return send_command(socket_path, "enroll-state", args={"window": window})

    wait_for(lambda: state()["state"] != "waiting", 60, "the phone's hello")
    doorbell_code = state().get("code")
    wait_for(lambda: '"code"' in said.getvalue(), 30, "the phone's code")
    phone_code = json.loads(said.getvalue().splitlines()[0])["code"]
    if doorbell_code != phone_code:
        send_command(socket_path, "enroll-cancel", args={"window": window})
        raise DemoError(f"the codes differ: doorbell {doorbell_code}, phone {phone_code}")
    print(f"  code        {phone_code} on both screens; the demo types yes", file=out)
    send_command(socket_path, "enroll-confirm", args={"window": window})
    phone.join(timeout=60)
    if result != [0]:
        raise DemoError(f"the phone was not enrolled: {said.getvalue().strip()}")
    print(
        f"  phone       {PHONE_NAME} (mlkem768-x25519): enrolled over the broker, "
        "trusts the doorbell",
        file=out,
    )
    for line in said.getvalue().splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if "words" in record:
            # A demo's own throwaway doorbell: its recovery words are kept beside it so the
            # web phone can open its footage. A real doorbell's words live only on paper.
            words = " ".join(record["words"])
            write_atomic(home.directory.parent / WORDS_FILE, f"{words}\n".encode(), mode=0o600)


def _status(daemon: subprocess.Popen[bytes], socket_path: Path) -> dict[str, Any]:
    if daemon.poll() is not None:
        raise DemoError(f"the daemon exited with code {daemon.returncode}")
    try:
        reply = send_command(socket_path, "status")
    except ControlError:
        return {}
    result = reply["status"]
    assert isinstance(result, dict)
    return result


@contextlib.contextmanager
def _private_broker(state: Path) -> Iterator[int | None]:
    """A Mosquitto of the demo's own on a free loopback port, or None without one."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = state / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    if os.geteuid() == 0:
        lines.append("user root")  # else it drops to "mosquitto", who cannot read the state
    config.write_text("\n".join(lines) + "\n")
    with open(state / "mosquitto.log", "ab") as log:
        broker = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)
    try:
        wait_for(lambda: _accepts(port) or broker.poll() is not None, 10, "Mosquitto", 0.05)
        yield port if broker.poll() is None else None
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _drive(daemon: subprocess.Popen[bytes], socket_path: Path, out: TextIO) -> str:
    def status() -> dict[str, Any]:
        return _status(daemon, socket_path)

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
