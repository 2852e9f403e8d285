"""``doorbell doctor``: one screen of checks, each pass, warn or fail, with what to do."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from doorbell.config import ConfigError, Settings, load_settings
from doorbell.config.settings import S3SinkSettings
from doorbell.cpu import has_aes
from doorbell.sealing import (
    DEVICE_KEY,
    DeviceSigningKey,
    Keyring,
    KeyringStore,
    Kind,
    RecipientPrivateKey,
    Suite,
    seal_bytes,
)

if TYPE_CHECKING:
    # Imported where used: minio is slow to import and only the S3 checks need it.
    from doorbell.transport.s3 import S3Sink

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    detail: str


# Where the README explains how to make the bucket tamper-proof.
BUCKET_POLICY_DOC = "README.md, 'A bucket the doorbell cannot empty'"
# A sink failing for longer than this is a FAIL: the footage stays on the doorbell, where
# a thief takes it along, and the spool fills. A shorter outage (a router rebooting) is
# a WARN.
SINK_FAILING_FAIL_AFTER = 15 * 60
_SEVERITY = {PASS: 0, WARN: 1, FAIL: 2}


def run_checks(config: Path | None) -> list[Check]:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        return [
            Check(
                "config",
                FAIL,
                f"{config}: {len(exc.issues)} problem(s); run 'doorbell check-config'",
            )
        ]
    where = str(config) if config else "embedded defaults"
    checks = [Check("config", PASS, f"{where} is valid")]
    for check in (
        _state_dir,
        _keyring,
        _aes_instructions,
        _sealing_speed,
        _camera,
        _pin_factory,
        _clock_sync,
        _memory_limits,
        _free_space,
        _s3,
        _mqtt,
        _running_daemon,
    ):
        try:
            result = check(settings)
            checks.extend(result if isinstance(result, list) else [result])
        except Exception as exc:  # one broken check must not hide the others
            checks.append(
                Check(check.__name__.strip("_").replace("_", " "), FAIL, f"check failed: {exc}")
            )
    return checks


def _state_dir(settings: Settings) -> Check:
    state = settings.state_dir
    if not state.exists():
        return Check("state", WARN, f"{state} does not exist yet (created on first run)")
    if not os.access(state, os.W_OK | os.X_OK):
        return Check("state", FAIL, f"{state} is not writable by this user")
    mode = stat.S_IMODE(state.stat().st_mode)
    key = state / DEVICE_KEY
    if not key.exists():
        return Check("state", WARN, f"{state}: no device key yet ('doorbell keys show' creates it)")
    key_mode = stat.S_IMODE(key.stat().st_mode)
    if key_mode & 0o077:
        return Check("state", FAIL, f"{key} is mode {key_mode:04o}: run chmod 600 {key}")
    if mode & 0o077:
        return Check("state", WARN, f"{state} is mode {mode:04o}; 0700 keeps other users out")
    return Check("state", PASS, f"{state} (mode {mode:04o}), device key mode {key_mode:04o}")


def _keyring(settings: Settings) -> Check:
    # A state directory not made yet reads as an empty keyring.
    stored = KeyringStore(settings.state_dir).load_file()
    keyring = stored.keyring
    if not keyring.recipients:
        return Check(
            "phones",
            WARN,
            "no phone is enrolled: the doorbell rings but records nothing ('doorbell keys add')",
        )
    suites = sorted({r.key.suite.label for r in keyring.recipients})
    detail = f"{len(keyring)} phone(s), epoch {keyring.epoch}, suites {', '.join(suites)}"
    if keyring.post_quantum:
        return Check("phones", PASS, f"{detail}; footage is post-quantum protected")
    phones = []
    for r in keyring.classical:
        consent = stored.consent(r)
        allowed = "" if consent is None else f", allowed {consent.given:%Y-%m-%d} by the owner"
        phones.append(f"{r.name!r} ({r.key.suite.label}{allowed})")
    return Check(
        "phones",
        WARN,
        f"{detail}; footage is NOT post-quantum protected: every object wraps its key for "
        f"every phone, and {', '.join(phones)} would let a future quantum computer open it "
        "(revoke, or enrol again with an mlkem768-x25519 key)",
    )


def _aes_instructions(settings: Settings) -> Check:
    has = has_aes()
    machine = platform.machine()
    if has is None:
        return Check("aes", WARN, f"cannot tell whether this {machine} CPU has AES instructions")
    if has:
        return Check("aes", PASS, f"this {machine} CPU has AES instructions (AES-GCM in hardware)")
    return Check(
        "aes",
        WARN,
        f"this {machine} CPU has no AES instructions (Pi 3/4/Zero 2 W): AES-GCM runs in "
        "software; see the sealing speed below",
    )


def measure_sealing(seconds: float = 0.5, clock: Callable[[], float] = time.process_time) -> float:
    """Bytes per CPU second for sealing 1 MiB objects to one x25519 phone."""
    key = DeviceSigningKey.generate()
    phone = RecipientPrivateKey.generate(Suite.X25519).public_key()
    keyring = Keyring().add("doctor", phone, datetime.now(UTC))
    body = os.urandom(1 << 20)
    prev = bytes(32)
    done = 0
    start = clock()
    while clock() - start < seconds or done < 3:
        seal_bytes(key, keyring, done, prev, Kind.SEGMENT, {}, body, 0)
        done += 1
    return done * len(body) / max(clock() - start, 1e-9)


def _sealing_speed(settings: Settings) -> Check:
    speed = measure_sealing()
    needed = settings.camera.bitrate / 8
    share = needed / speed
    detail = (
        f"{speed / 1e6:.0f} MB/s per core; {settings.camera.bitrate / 1e6:.1f} Mbit/s video "
        f"costs {share:.2%} of one core"
    )
    if share < 0.05:
        return Check("sealing", PASS, detail)
    if share < 0.5:
        return Check("sealing", WARN, detail)
    return Check("sealing", FAIL, detail + ": too slow for this bitrate")


def _camera(settings: Settings) -> Check:
    source = settings.camera.source
    if source == "synthetic":
        return Check("camera", WARN, "camera.source is synthetic: a test picture, not a camera")
    if source == "file":
        return Check("camera", WARN, f"camera.source is file: replaying {settings.camera.file}")
    from doorbell.capture.picamera2 import camera_present

    if camera_present():
        return Check("camera", PASS, "a Pi camera is present (picamera2)")
    verdict = FAIL if source == "picamera2" else WARN
    return Check("camera", verdict, "no Pi camera found: 'auto' would use the synthetic picture")


def _pin_factory(settings: Settings) -> Check:
    from doorbell.events.sensors import make_pin_factory

    try:
        factory, warning = make_pin_factory(settings.gpio.pin_factory)
    except Exception as exc:
        return Check("gpio", FAIL, str(exc))
    name = type(factory).__name__
    if warning:
        return Check("gpio", WARN, f"{name}: {warning}")
    return Check("gpio", PASS, f"pins through {name}")


def _clock_sync(settings: Settings) -> Check:
    if shutil.which("timedatectl"):
        try:
            out = subprocess.run(
                ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if out == "yes":
            return Check("clock", PASS, "synchronised (NTP)")
        if out == "no":
            return Check("clock", WARN, "not synchronised: footage times may be wrong")
    if Path("/run/systemd/timesync/synchronized").exists():
        return Check("clock", PASS, "synchronised (systemd-timesyncd)")
    return Check("clock", WARN, "cannot tell whether the clock is synchronised")


def memory_cgroup_enabled(cgroups: Path = Path("/proc/cgroups")) -> bool | None:
    """Whether the kernel's memory controller is on (``/proc/cgroups``); None if unknown."""
    try:
        lines = cgroups.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) == 4 and fields[0] == "memory":
            return fields[3] == "1"
    return None


def _memory_limits(settings: Settings) -> Check:
    enabled = memory_cgroup_enabled()
    if enabled:
        return Check(
            "memory", PASS, "the kernel enforces the unit's MemoryMax= and MemorySwapMax=0"
        )
    problem = "is off" if enabled is False else "cannot be found"
    return Check(
        "memory",
        WARN,
        f"the kernel's memory cgroup {problem}: the unit's MemoryMax= and MemorySwapMax=0 "
        "(plaintext video never swapped to the SD card) do not apply; add "
        "cgroup_enable=memory to /boot/firmware/cmdline.txt and reboot",
    )


def _free_space(settings: Settings) -> Check:
    target = settings.state_dir if settings.state_dir.exists() else settings.state_dir.parent
    while not target.exists():
        target = target.parent
    free = shutil.disk_usage(target).free
    hours = free / (settings.camera.bitrate / 8) / 3600
    detail = f"{free / 2**30:.1f} GiB free under {target}: {hours:.0f} h of video at this bitrate"
    if hours >= 24:
        return Check("space", PASS, detail)
    if hours >= 1:
        return Check("space", WARN, detail)
    return Check("space", FAIL, detail)


def _s3(settings: Settings) -> list[Check]:
    """Whether the bucket answers, and whether the doorbell's key could empty it."""
    s3 = settings.sinks.s3
    if not s3.enabled:
        return [Check("s3", PASS, "not used (sinks.s3.enabled is false)")]
    from doorbell.transport.s3 import S3Sink

    try:
        sink = S3Sink(s3)
    except ConfigError as exc:
        return [Check("s3", FAIL, str(exc))]
    try:
        return [_bucket_reachable(sink, s3), _bucket_delete(sink, s3)]
    finally:
        sink.close()


def _bucket_reachable(sink: S3Sink, s3: S3SinkSettings) -> Check:
    from doorbell.transport.sink import SinkUnavailable

    try:
        sink.check()
    except SinkUnavailable as exc:
        return Check("s3", FAIL, f"{s3.endpoint}: {exc} (the spool keeps footage meanwhile)")
    except ConfigError as exc:
        return Check("s3", FAIL, str(exc))
    where = "https" if s3.secure else "http, no TLS"
    return Check("s3", PASS, f"bucket {s3.bucket} reachable at {s3.endpoint} ({where})")


def _bucket_delete(sink: S3Sink, s3: S3SinkSettings) -> Check:
    from doorbell.transport.sink import SinkUnavailable

    try:
        allowed = sink.can_delete()
    except SinkUnavailable as exc:
        return Check("bucket", WARN, f"cannot tell whether the credentials can delete: {exc}")
    if allowed:
        return Check(
            "bucket",
            WARN,
            f"the doorbell's credentials can delete objects in {s3.bucket}: whoever takes "
            "the doorbell (and its key) can delete footage from the bucket; give it a "
            f"put-only key and Object Lock ({BUCKET_POLICY_DOC})",
        )
    return Check("bucket", PASS, f"the doorbell's credentials cannot delete in {s3.bucket}")


def _mqtt(settings: Settings) -> Check:
    mqtt = settings.mqtt
    if not mqtt.enabled:
        return Check("mqtt", PASS, "not used (mqtt.enabled is false)")
    try:
        with socket.create_connection((mqtt.host, mqtt.port), timeout=3):
            pass
    except OSError as exc:
        return Check("mqtt", FAIL, f"cannot reach {mqtt.host}:{mqtt.port}: {exc.strerror or exc}")
    notes = []
    if not mqtt.tls:
        notes.append("no TLS: the password and metadata cross the network in clear")
    if mqtt.homeassistant.discovery:
        notes.append("Home Assistant discovery is on: the broker learns when events happen")
    detail = f"{mqtt.host}:{mqtt.port} accepts connections"
    if notes:
        return Check("mqtt", WARN, f"{detail}; " + "; ".join(notes))
    return Check("mqtt", PASS, detail)


def _running_daemon(settings: Settings) -> list[Check]:
    """The spool and the sinks, as the running daemon sees them (its control socket)."""
    from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command

    try:
        reply = send_command(settings.runtime_dir / SOCKET_NAME, "status", timeout=5)
    except ControlError as exc:
        return [Check("daemon", WARN, f"{exc}: the spool and the sinks were not checked")]
    status = reply.get("status")
    if not isinstance(status, dict):
        return [Check("daemon", WARN, "the daemon's status is unreadable")]
    return [_spool_check(status.get("spool")), _sinks_check(status.get("sinks"), time.time())]


def _spool_check(spool: object) -> Check:
    """The ``spool`` part of the daemon's status as one verdict."""
    if not isinstance(spool, dict):
        return Check("spool", WARN, "the daemon has no spool yet (starting?)")
    verdict, notes = PASS, []
    free, reserve = spool.get("free_bytes"), spool.get("reserve_bytes", 0)
    if spool.get("full"):
        verdict = FAIL
        notes.append(
            "FULL: nothing left to evict and no room for new footage or events; free space "
            "on the state directory's file system, or get a sink delivering again"
        )
    elif isinstance(free, int) and free < reserve:
        verdict = WARN
        notes.append(f"free space below the reserve of {_size(reserve)}: old footage is evicted")
    for sink, kept in sorted((spool.get("removed_sinks") or {}).items()):
        verdict = _worse(verdict, WARN)
        notes.append(
            f"{kept['objects']} object(s) wait for sink {sink!r}, which is no longer "
            "configured and whose objects no configured sink takes"
        )
    if spool.get("put_failures"):
        verdict = _worse(verdict, WARN)
        notes.append(
            f"{spool['put_failures']} object(s) could not be spooled since the daemon "
            f"started (last: {spool.get('last_put_error')})"
        )
    summary = f"{spool.get('objects', 0)} object(s), {_size(spool.get('bytes', 0))} waiting"
    if isinstance(free, int):
        summary += f", {_size(free)} free (reserve {_size(reserve)})"
    return Check("spool", verdict, "; ".join([*notes, summary]))


def _sinks_check(sinks: object, now: float) -> Check:
    """The uploaders in the daemon's status as one verdict: which sink fails, since when."""
    if not isinstance(sinks, dict) or not sinks:
        return Check("sinks", WARN, "the daemon reports no sink")
    verdict, parts = PASS, []
    for name, sink in sorted(sinks.items()):
        waiting = (
            f"{sink.get('pending', 0)} object(s), {_size(sink.get('pending_bytes', 0))} waiting"
        )
        if not sink.get("running"):
            verdict = FAIL
            parts.append(f"{name}: its uploader has stopped; {waiting}")
        elif sink.get("failures"):
            since = sink.get("failing_since")
            if isinstance(since, (int, float)):
                age = max(0.0, now - since)
                when = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M UTC")
                failing = f"failing since {when} ({_duration(age)})"
                long_failing = age >= SINK_FAILING_FAIL_AFTER
            else:
                failing, long_failing = "failing", False
            verdict = _worse(verdict, FAIL if long_failing else WARN)
            parts.append(
                f"{name}: {failing}, {sink['failures']} attempt(s) in a row, last error "
                f"{sink.get('last_error')}; {waiting}"
            )
        else:
            parts.append(f"{name}: ok, {waiting}")
    return Check("sinks", verdict, "; ".join(parts))


def _worse(a: str, b: str) -> str:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


def _size(nbytes: int) -> str:
    if nbytes >= 10 * 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / 2**20:.1f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
