"""Measure Doorbell on this machine: sealing, the daemon, delivery and the phone.

Run it as ``scripts/bench`` (``--json`` for one JSON object on stdout, ``--quick``
for a smoke run), which installs what it measures with first. Everything is measured
in one run, and the headline figures are ratios against references measured in that
same run, never absolute times:

- ``seal_overhead``: CPU to seal one 2 MiB segment for one x25519 phone, divided by
  the CPU of the primitives sealing cannot avoid (AES-256-GCM of the body, SHA-256
  of the object, one Ed25519 signature, one HPKE wrap).
- ``seal_vs_age_cpu``: CPU (user + sys) of a child process sealing a file in 2 MiB
  segments and writing each object to a file, as the daemon does, divided by the
  CPU of ``age -r`` encrypting the same file. The child's start-up is included
  (a real process pays it too) and reported separately.
- ``seal_vs_age_minisign_cpu``: the same CPU divided by what a user would script for
  encrypted and signed footage: ``age -r`` encrypting the file, then ``minisign -S``
  signing what age wrote (a throwaway key without a password; minisign 0.11 signs a
  BLAKE2b prehash of the file). ``age`` alone signs nothing; every sealed object
  carries a signature over all its bytes.
- ``daemon_cpu_share`` and ``daemon_rss_mb``: the running daemon on 720p30 synthetic
  video, less the synthetic source measured alone (benchmarks/daemon.py).
- ``ring_to_phone_ms_p50``/``_p99``, ``ring_to_bucket_s`` and ``drain_vs_raw_put``: the
  daemon's delivery on loopback, to a Mosquitto broker and a moto S3 server: a ring
  until the phone has decrypted its event, a ring until the clip's start is in the
  bucket, and the spool's drain of a backlog against plain puts of the same objects
  (benchmarks/delivery.py). These are times, not ratios: the loopback is the floor.
- ``phone_verify_rss_ratio`` and ``phone_verify_vs_open``: ``doorbell-phone`` on folders
  of 256 KiB segments, its peak memory on ten times the footage, and its speed against
  the bare reader (benchmarks/phone.py).

Per-object figures are the best (lowest) of several runs of many objects each.
Temporary files go to ``$TMPDIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import cryptography
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mqtt_fixture import MOSQUITTO

from benchmarks.daemon import FPS, HEIGHT, WIDTH, measure_daemon
from benchmarks.daemon import TARGETS as DAEMON_TARGETS
from benchmarks.delivery import FLOORS as DELIVERY_FLOORS
from benchmarks.delivery import TARGETS as DELIVERY_TARGETS
from benchmarks.delivery import DeliveryPlan, measure_delivery
from benchmarks.enrolment import TARGETS as ENROLMENT_TARGETS
from benchmarks.enrolment import measure_enrolment
from benchmarks.live import FIGURES as LIVE_FIGURES
from benchmarks.live import TARGETS as LIVE_TARGETS
from benchmarks.live import LivePlan, measure_live
from benchmarks.phone import FLOORS as PHONE_FLOORS
from benchmarks.phone import TARGETS as PHONE_TARGETS
from benchmarks.phone import PhonePlan, measure_phone
from benchmarks.web import FIGURES as WEB_FIGURES
from benchmarks.web import FLOORS as WEB_FLOORS
from benchmarks.web import TARGETS as WEB_TARGETS
from benchmarks.web import WebPlan, measure_web
from benchmarks.web import available as web_unavailable
from doorbell.cpu import cpu_flags, cpuinfo, has_aes
from doorbell.sealing import (
    KeyringStore,
    Kind,
    Reader,
    RecipientPrivateKey,
    Sealer,
    Suite,
)

MIB = 1024 * 1024
OBJECT_SIZE = 2 * MIB
RECIPIENT_COUNTS = (1, 4, 16)
TARGETS = {
    "seal_overhead": 1.15,
    "seal_vs_age_cpu": 1.0,
    "seal_vs_age_minisign_cpu": 1.0,
    **DAEMON_TARGETS,
    **DELIVERY_TARGETS,
    **PHONE_TARGETS,
    **ENROLMENT_TARGETS,
    **LIVE_TARGETS,
    **WEB_TARGETS,
}
FLOORS = DELIVERY_FLOORS | PHONE_FLOORS | WEB_FLOORS  # targets to reach; the others not to exceed
# What the sealer feeds the primitives (docs/FORMAT.md): AES-GCM's associated data is
# the cleartext header (200 bytes with one x25519 stanza; 50 bytes either way are
# noise next to 2 MiB), Ed25519 signs a 29-byte context and a SHA-256 digest, and
# the HPKE info is a 21-byte context, device id, seq, suite and recipient tag.
AAD_LEN = 150
SIGNED_MESSAGE_LEN = 61
HPKE_INFO_LEN = 78


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or a smoke run for tests."""

    runs: int  # best of this many runs ...
    objects: int  # ... of this many 2 MiB objects each
    small_calls: int  # calls per run for sub-millisecond primitives
    file_size: int  # the file sealed against age
    file_runs: int  # child runs of each tool, alternating; the minimum counts
    daemon_seconds: float  # how long the daemon runs on 720p30 video
    delivery: DeliveryPlan  # presses, rings and the backlog of the delivery figures
    phone: PhonePlan  # the objects in the phone's small and large folder
    enrolments: int = 3  # phones enrolled over the network, one after another
    live: LivePlan = field(default_factory=LivePlan)  # viewers, watching, CPU windows
    web: WebPlan = field(default_factory=WebPlan)  # objects and rings in Chromium


FULL = Plan(
    runs=7,
    objects=40,
    small_calls=2000,
    file_size=256 * MIB,
    file_runs=3,
    daemon_seconds=60,
    delivery=DeliveryPlan(presses=50, bucket_rings=3, backlog_bytes=512 * MIB),
    phone=PhonePlan(small=200, large=2000),
)
QUICK = Plan(
    runs=2,
    objects=3,
    small_calls=50,
    file_size=8 * MIB,
    file_runs=1,
    daemon_seconds=4,
    delivery=DeliveryPlan(presses=5, bucket_rings=1, backlog_bytes=16 * MIB),
    phone=PhonePlan(small=20, large=200, runs=1),
    enrolments=1,
    live=LivePlan(viewers=1, watch_seconds=2.0, windows=1, window_seconds=2.0),
    web=WebPlan(objects=20, runs=1, rings=2),
)


T = TypeVar("T")


@dataclass(frozen=True)
class Cost:
    """Per-call cost: the lowest CPU and the lowest wall time over the runs."""

    cpu_s: float
    wall_s: float


def measure(call: Callable[[int], object], count: int, runs: int) -> Cost:
    """Call ``call(0..count-1)``, ``runs`` times over; keep the best run's per-call mean."""
    cpu = wall = math.inf
    for _ in range(runs):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for index in range(count):
            call(index)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        cpu = min(cpu, (cpu1 - cpu0) / count)
        wall = min(wall, (wall1 - wall0) / count)
    return Cost(cpu, wall)


def measure_each(
    prepare: Callable[[int], T], call: Callable[[T], object], count: int, runs: int
) -> Cost:
    """Like ``measure``, but each call gets a fresh input that ``prepare`` makes untimed.

    Only for calls of a millisecond or more: reading the CPU clock is a system call.
    """
    cpu = wall = math.inf
    for _ in range(runs):
        cpu_total = wall_total = 0.0
        for index in range(count):
            item = prepare(index)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            call(item)
            cpu_total += time.process_time() - cpu0
            wall_total += time.perf_counter() - wall0
        cpu = min(cpu, cpu_total / count)
        wall = min(wall, wall_total / count)
    return Cost(cpu, wall)


def segment_meta(index: int) -> dict[str, Any]:
    """Meta of a 2-second, 30 fps media segment, as the daemon seals it."""
    return {
        "stream": "5f2b9c0e4d6a8b1c3e5f7a9b0c2d4e6f",
        "index": index,
        "start": index * 2.0,
        "duration": 2.0,
        "frames": 60,
    }


# --- the machine --------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """What decides the figures: the CPU, its crypto instructions, the library versions."""
    info = cpuinfo()
    arch = platform.machine()
    return {
        "cpu": info.get("model name") or info.get("Model") or platform.processor() or arch,
        "arch": arch,
        "cores": os.cpu_count() or 1,
        "aes_instructions": bool(has_aes(info)),
        "sha_extensions": bool(has_sha2(info)),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl_linked": openssl_backend.openssl_version_text(),
        # hashlib (the sealer's SHA-256) uses the OpenSSL Python was built with, which
        # need not be the one bundled in the cryptography wheel (AES-GCM, HPKE, Ed25519).
        "openssl_hashlib": ssl.OPENSSL_VERSION,
        "openssl_cli": _tool_version(["openssl", "version"]),
        "age": _tool_version(["age", "--version"]),
        "minisign": _tool_version(["minisign", "-v"]),
    }


def has_sha2(info: dict[str, str]) -> bool | None:
    """SHA-256 instructions: ``sha2`` on Arm, ``sha_ni`` on x86."""
    flags = cpu_flags(info)
    if flags is None:
        return None
    return ("sha2" if platform.machine().startswith(("arm", "aarch")) else "sha_ni") in flags


def _tool_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


# --- sealing and opening through the product's own API --------------------------


def make_state(directory: Path, suite: Suite, recipients: int) -> list[RecipientPrivateKey]:
    """A state directory whose keyring holds ``recipients`` phones; returns their secrets."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    secrets = [RecipientPrivateKey.generate(suite) for _ in range(recipients)]
    now = datetime.now(UTC)
    with KeyringStore(directory).editing() as box:
        for number, secret in enumerate(secrets):
            box[0] = box[0].add(f"phone-{number}", secret.public_key(), now)
    return secrets


def seal_and_open(
    suite: Suite, recipients: int, body: bytes, plan: Plan, workdir: Path
) -> tuple[Cost, Cost]:
    """Cost of sealing one object, and of opening one."""
    state = workdir / f"state-{suite.label}-{recipients}"
    secrets = make_state(state, suite, recipients)
    with Sealer(state) as sealer:
        # The first seal also seals the keyring announcement; keep it out of the runs.
        sealer.seal(Kind.SEGMENT, segment_meta(0), body)

        def seal(index: int) -> None:
            # The objects are dropped at once, as a sink drops them after writing.
            sealer.seal(Kind.SEGMENT, segment_meta(index), body)

        sealing = measure(seal, plan.objects, plan.runs)

        def fresh(index: int) -> bytes | bytearray:
            return sealer.seal(Kind.SEGMENT, segment_meta(index), body)[-1].data

        # The last recipient's stanza is the last one a reader finds. Each object is
        # opened just after it is made, as a phone opens one it has just downloaded:
        # reopening a few objects, or a cold backlog, would favour or penalise caches.
        reader = Reader([secrets[-1]], [sealer.device_key])
        reader.open(fresh(0))
        opening = measure_each(fresh, reader.open, plan.objects, plan.runs)
    return sealing, opening


def row(suite: Suite, recipients: int, cost: Cost, size: int) -> dict[str, Any]:
    mib = size / MIB
    return {
        "suite": suite.label,
        "recipients": recipients,
        "ms_per_mib": cost.cpu_s * 1000 / mib,
        "mib_per_s": mib / cost.wall_s,
    }


# --- the bare primitives ----------------------------------------------------------


def primitives(body: bytes, plan: Plan, workdir: Path) -> dict[str, Any]:
    """Per-object CPU (ms) of the primitives sealing uses and of the sealer itself.

    Also OpenSSL's own AES-GCM speed, as a reference. The sealer and the primitives
    are measured in alternating rounds, so a slow spell on a shared machine hits both
    sides of ``seal_overhead`` alike.
    """
    state = workdir / "state-overhead"
    make_state(state, Suite.X25519, 1)
    with Sealer(state) as sealer:
        # The first seal also seals the keyring announcement; keep it out of the runs.
        object_len = len(sealer.seal(Kind.SEGMENT, segment_meta(0), body)[-1].data)
        aead = AESGCM(AESGCM.generate_key(bit_length=256))
        nonce, aad = os.urandom(12), os.urandom(AAD_LEN)
        signed = os.urandom(object_len)
        signer = ed25519.Ed25519PrivateKey.generate()
        message = os.urandom(SIGNED_MESSAGE_LEN)
        calls: dict[str, tuple[Callable[[int], object], int]] = {
            "seal": (lambda i: sealer.seal(Kind.SEGMENT, segment_meta(i), body), plan.objects),
            "aes": (lambda _: aead.encrypt(nonce, body, aad), plan.objects),
            "sha": (lambda _: hashlib.sha256(signed).digest(), plan.objects),
            "sign": (lambda _: signer.sign(message), plan.small_calls),
            **{suite.label: (hpke_wrap(suite), plan.small_calls) for suite in Suite},
        }
        best = {name: Cost(math.inf, math.inf) for name in calls}
        for _ in range(plan.runs):
            for name, (call, count) in calls.items():
                cost = measure(call, count, 1)
                if cost.cpu_s < best[name].cpu_s:
                    best[name] = cost
    return {
        "aes_gcm_ms": best["aes"].cpu_s * 1000,
        "aes_gcm_mb_s": len(body) / best["aes"].cpu_s / 1e6,
        "sha256_ms": best["sha"].cpu_s * 1000,
        "sha256_bytes": object_len,
        "sha256_mb_s": object_len / best["sha"].cpu_s / 1e6,
        "ed25519_sign_ms": best["sign"].cpu_s * 1000,
        "hpke_wrap_ms": {suite.label: best[suite.label].cpu_s * 1000 for suite in Suite},
        "seal_ms": best["seal"].cpu_s * 1000,
        "openssl_speed_aes_gcm_mb_s": openssl_speed(len(body)),
    }


def hpke_wrap(suite: Suite) -> Callable[[int], object]:
    """One data key wrapped for one recipient, as the sealer does it for each stanza."""
    public = RecipientPrivateKey.generate(suite).public_key()
    data_key, info = os.urandom(32), os.urandom(HPKE_INFO_LEN)
    return lambda _: suite.hpke().encrypt(data_key, public.hpke_key(), info=info)


def openssl_speed(block: int) -> float | None:
    """``openssl speed -evp aes-256-gcm`` on one block size, in MB/s (10^6 bytes)."""
    if shutil.which("openssl") is None:
        return None
    result = subprocess.run(
        ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", str(block), "-seconds", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    # "AES-256-GCM    5588910.08k": thousands of bytes per second.
    found = re.search(r"^AES-256-GCM\s+([0-9.]+)k\s*$", result.stdout, re.MULTILINE)
    return float(found.group(1)) / 1000 if found else None


# --- a whole file: the daemon's loop in a child process, against age ----------------


# The daemon's loop over a recording: 2 MiB segments, each object written to a file.
# It runs in a fresh interpreter that imports only the sealing package; importing
# this module there would add the benchmark's own imports (~25 ms) to its CPU.
# Arguments: state directory, source file, output directory, segment_meta(0) as JSON.
SEAL_FILE_CHILD = f"""
import json, sys
from pathlib import Path
from doorbell.sealing import Kind, Sealer

state, source, out_dir = map(Path, sys.argv[1:4])
first = json.loads(sys.argv[4])
with Sealer(state) as sealer, source.open("rb", buffering=0) as stream:
    index = 0
    while chunk := stream.read({OBJECT_SIZE}):
        meta = {{**first, "index": index, "start": index * first["duration"]}}
        for sealed in sealer.seal(Kind.SEGMENT, meta, chunk):
            (out_dir / sealed.name).write_bytes(sealed.data)
        index += 1
"""


@dataclass(frozen=True)
class ChildCpu:
    """CPU seconds one child process used, in user space and in the kernel."""

    user_s: float
    sys_s: float

    @property
    def total_s(self) -> float:
        return self.user_s + self.sys_s


def child_cpu(argv: list[str]) -> ChildCpu:
    """Run one child process to completion; its CPU, from the rusage of waited children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ChildCpu(after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)


def least(runs: list[ChildCpu]) -> ChildCpu:
    return min(runs, key=lambda cpu: cpu.total_s)


@dataclass(frozen=True)
class FileRuns:
    """The least CPU of each child over its runs; a tool's is None when it is absent."""

    ours: ChildCpu
    startup: ChildCpu
    age: ChildCpu | None
    minisign: ChildCpu | None  # signing what age wrote


def versus_age(plan: Plan, workdir: Path) -> FileRuns:
    """CPU of sealing a file (child start-up included), of ``age -r`` on the same file,
    and of ``minisign -S`` on what age wrote."""
    source = workdir / "footage.bin"
    with source.open("wb") as stream:
        for offset in range(0, plan.file_size, 8 * MIB):
            stream.write(os.urandom(min(8 * MIB, plan.file_size - offset)))
    empty = workdir / "empty.bin"
    empty.touch()
    state = workdir / "state-file"
    make_state(state, Suite.X25519, 1)
    sealed_dir = workdir / "sealed"

    def ours(path: Path) -> ChildCpu:
        shutil.rmtree(sealed_dir, ignore_errors=True)
        sealed_dir.mkdir()
        meta = json.dumps(segment_meta(0))
        argv = [sys.executable, "-c", SEAL_FILE_CHILD, str(state), str(path), str(sealed_dir), meta]
        return child_cpu(argv)

    encrypted = workdir / "out.age"
    age_argv = minisign_argv = None
    if shutil.which("age") and shutil.which("age-keygen"):
        identity = workdir / "age-identity.txt"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        age_argv = ["age", "-r", recipient, "-o", str(encrypted), str(source)]
        if shutil.which("minisign"):
            public, secret = workdir / "minisign.pub", workdir / "minisign.key"
            subprocess.run(
                ["minisign", "-G", "-W", "-p", str(public), "-s", str(secret)],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            signature = workdir / "out.age.minisig"
            minisign_argv = ["minisign", "-S", "-s", str(secret), "-m", str(encrypted)]
            minisign_argv += ["-x", str(signature)]

    ours_runs, age_runs, minisign_runs, startup_runs = [], [], [], []
    for _ in range(plan.file_runs):
        ours_runs.append(ours(source))
        if age_argv is not None:
            encrypted.unlink(missing_ok=True)
            age_runs.append(child_cpu(age_argv))
            if minisign_argv is not None:
                minisign_runs.append(child_cpu(minisign_argv))
    for _ in range(plan.file_runs):
        startup_runs.append(ours(empty))
    return FileRuns(
        least(ours_runs),
        least(startup_runs),
        least(age_runs) if age_runs else None,
        least(minisign_runs) if minisign_runs else None,
    )


# --- the run and its report ------------------------------------------------------


def machine_busy_s() -> float | None:
    """CPU seconds all processes (and the hypervisor, as steal) have used since boot."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time
    # is already counted in user.
    user, nice, system, _, _, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and the children it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def run(plan: Plan) -> dict[str, Any]:
    # Other work on the machine skews every figure: the report says how much there was.
    busy_before, own_before, wall_before = machine_busy_s(), own_cpu_s(), time.perf_counter()
    body = os.urandom(OBJECT_SIZE)
    seal_rows, open_rows = [], []
    with tempfile.TemporaryDirectory(prefix="doorbell-bench-") as tmp:
        workdir = Path(tmp)
        for suite in Suite:
            for recipients in RECIPIENT_COUNTS:
                sealing, opening = seal_and_open(suite, recipients, body, plan, workdir)
                seal_rows.append(row(suite, recipients, sealing, OBJECT_SIZE))
                open_rows.append(row(suite, recipients, opening, OBJECT_SIZE))
        prims = primitives(body, plan, workdir)
        whole_file = versus_age(plan, workdir)
        daemon = measure_daemon(plan.daemon_seconds, workdir)
        delivery = measure_delivery(plan.delivery, workdir)
        phone = measure_phone(plan.phone, workdir)
        enrolment = measure_enrolment(workdir, plan.enrolments) if MOSQUITTO.exists() else None
        live = measure_live(plan.live, workdir) if MOSQUITTO.exists() else None
        web_missing = web_unavailable()
        web = measure_web(plan.web, workdir) if web_missing is None else None
    floor_ms = (
        prims["aes_gcm_ms"]
        + prims["sha256_ms"]
        + prims["ed25519_sign_ms"]
        + prims["hpke_wrap_ms"][Suite.X25519.label]
    )
    overhead = prims["seal_ms"] / floor_ms
    busy_after = machine_busy_s()
    other_cpu = (
        None
        if busy_before is None or busy_after is None
        else max(0.0, busy_after - busy_before - (own_cpu_s() - own_before))
    )
    ours = whole_file.ours.total_s
    age = whole_file.age.total_s if whole_file.age else None
    minisign = whole_file.minisign.total_s if whole_file.minisign else None
    versus = ours / age if age else None
    versus_pipeline = ours / (age + minisign) if age and minisign else None
    return {
        "machine": machine_facts(),
        "method": {
            "object_bytes": OBJECT_SIZE,
            "runs": plan.runs,
            "objects_per_run": plan.objects,
            "statistic": "best of runs (lowest per-object CPU; lowest wall for MiB/s)",
            "file_bytes": plan.file_size,
            "file_runs": plan.file_runs,
            "wall_s": time.perf_counter() - wall_before,
            "other_cpu_s": other_cpu,
        },
        "seal": seal_rows,
        "open": open_rows,
        "primitives": {**prims, "seal_floor_ms": floor_ms},
        "seal_overhead": overhead,
        "seal_vs_age_cpu": versus,
        "seal_vs_age_minisign_cpu": versus_pipeline,
        "ours_cpu_s": ours,
        "age_cpu_s": age,
        "minisign_cpu_s": minisign,
        "startup_cpu_s": whole_file.startup.total_s,
        "child_cpu": {
            name: None if cpu is None else {"user_s": cpu.user_s, "sys_s": cpu.sys_s}
            for name, cpu in (
                ("ours", whole_file.ours),
                ("startup", whole_file.startup),
                ("age", whole_file.age),
                ("minisign", whole_file.minisign),
            )
        },
        "daemon_cpu_share": daemon.share,
        "daemon_rss_mb": daemon.rss_mb,
        "daemon": {
            "seconds": daemon.seconds,
            "daemon_cpu_s": daemon.daemon_cpu_s,
            "source_alone_cpu_s": daemon.source_cpu_s,
            "objects_sealed": daemon.objects,
        },
        **delivery.headline(),
        "delivery": delivery.details(),
        **phone.headline(),
        "phone": phone.details(),
        "enroll_to_first_object_s": None
        if enrolment is None
        else enrolment.headline()["enroll_to_first_object_s"],
        "enrolment": None if enrolment is None else enrolment.details(),
        **(dict.fromkeys(LIVE_FIGURES) if live is None else live.headline()),
        "live": None if live is None else live.details(),
        **(dict.fromkeys(WEB_FIGURES) if web is None else web.headline()),
        "web": {"not measured": web_missing} if web is None else web.details(),
        "targets": dict(TARGETS),
        "meets_targets": {
            "seal_overhead": overhead <= TARGETS["seal_overhead"],
            "seal_vs_age_cpu": None if versus is None else versus <= TARGETS["seal_vs_age_cpu"],
            "seal_vs_age_minisign_cpu": None
            if versus_pipeline is None
            else versus_pipeline <= TARGETS["seal_vs_age_minisign_cpu"],
            "daemon_cpu_share": daemon.share <= TARGETS["daemon_cpu_share"],
            "daemon_rss_mb": daemon.rss_mb <= TARGETS["daemon_rss_mb"],
            **delivery.meets_targets(),
            **phone.meets_targets(),
            "enroll_to_first_object_s": None
            if enrolment is None
            else enrolment.meets_targets()["enroll_to_first_object_s"],
            **(dict.fromkeys(LIVE_TARGETS) if live is None else live.meets_targets()),
            **(dict.fromkeys(WEB_TARGETS) if web is None else web.meets_targets()),
        },
    }


def other_work(method: dict[str, Any], cores: int) -> str:
    """How much CPU other processes took during the run, in words."""
    other = method["other_cpu_s"]
    if other is None:
        return "unknown (no /proc/stat)"
    share = other / (method["wall_s"] * cores)
    warning = "  (a busy machine: figures are skewed)" if share > 0.05 else ""
    return (
        f"{other:.1f} CPU-s by other processes during this {method['wall_s']:.0f} s run "
        f"({share:.0%} of {cores} cores){warning}"
    )


def render(report: dict[str, Any]) -> str:
    """The report as a table for people."""
    machine, method, prims = report["machine"], report["method"], report["primitives"]

    def yes(flag: bool, name: str) -> str:
        return f"yes ({name})" if flag else "no"

    def verdict(key: str, digits: int = 3) -> str:
        """``key  value  (target <= T: met)``: one headline figure against its target."""
        value = report[key]
        if value is None:
            return f"{key:<26}not measured"
        met = report["meets_targets"][key]
        bound = f"{'>=' if key in FLOORS else '<='} {report['targets'][key]:g}"
        return f"{key:<26}{value:.{digits}f}  (target {bound}: {'met' if met else 'MISSED'})"

    arm = machine["arch"].startswith(("arm", "aarch"))
    lines = [
        "Doorbell sealing benchmark",
        "",
        f"  CPU               {machine['cpu']} ({machine['arch']}, {machine['cores']} cores)",
        f"  AES instructions  {yes(machine['aes_instructions'], 'aes')}",
        f"  SHA extensions    {yes(machine['sha_extensions'], 'sha2' if arm else 'sha_ni')}",
        f"  cryptography      {machine['cryptography']} on {machine['openssl_linked']}",
        f"  hashlib           {machine['openssl_hashlib']}",
        f"  openssl CLI       {machine['openssl_cli'] or 'absent'}",
        f"  age               {machine['age'] or 'absent'}",
        f"  minisign          {machine['minisign'] or 'absent'}",
        f"  Python            {machine['python']}",
        f"  other work        {other_work(method, machine['cores'])}",
        "",
        f"Seal and open, {method['object_bytes'] // MIB} MiB objects, random body "
        f"(best of {method['runs']} runs x {method['objects_per_run']} objects)",
        "",
        "  suite             phones   seal CPU ms/MiB  seal MiB/s   open CPU ms/MiB  open MiB/s",
    ]
    for sealed, opened in zip(report["seal"], report["open"], strict=True):
        lines.append(
            f"  {sealed['suite']:<17} {sealed['recipients']:>6}   {sealed['ms_per_mib']:>15.3f}"
            f"  {sealed['mib_per_s']:>10.0f}   {opened['ms_per_mib']:>15.3f}"
            f"  {opened['mib_per_s']:>10.0f}"
        )
    lines += [
        "  (ms/MiB: CPU time from process_time; MiB/s: wall clock; one thread)",
        "",
        f"Primitives and the sealer, per {method['object_bytes'] // MIB} MiB object "
        f"(CPU, best of {method['runs']} alternating rounds)",
        "",
    ]

    def cell(label: str, ms: float, rate: float | None = None) -> str:
        text = f"  {label:<42}{ms:8.3f} ms"
        return text if rate is None else f"{text}{rate:9.0f} MB/s"

    lines += [
        cell("AES-256-GCM encrypt, 150-byte aad", prims["aes_gcm_ms"], prims["aes_gcm_mb_s"]),
        cell(f"SHA-256 of {prims['sha256_bytes']} bytes", prims["sha256_ms"], prims["sha256_mb_s"]),
        cell("Ed25519 sign, 61 bytes", prims["ed25519_sign_ms"]),
        *(cell(f"HPKE wrap, {label}", ms) for label, ms in prims["hpke_wrap_ms"].items()),
        cell("sum: AES + SHA + Ed25519 + x25519 wrap", prims["seal_floor_ms"]),
        cell("Sealer.seal, one x25519 phone", prims["seal_ms"]),
    ]

    def child(label: str, cpu: dict[str, float] | None) -> str:
        if cpu is None:
            return f"  {label:<42}  absent"
        total = cpu["user_s"] + cpu["sys_s"]
        return f"  {label:<42}{total:8.3f}  {cpu['user_s']:6.3f}  {cpu['sys_s']:6.3f}"

    openssl = prims["openssl_speed_aes_gcm_mb_s"]
    reference = "absent" if openssl is None else f"{openssl:9.0f} MB/s"
    lines += [
        f"  {'openssl speed -evp aes-256-gcm (CLI)':<53}{reference}",
        "",
        f"Sealing a {method['file_bytes'] // MIB} MiB file, child CPU seconds "
        f"(least of {method['file_runs']} alternating runs)",
        "",
        f"  {'':<42}{'user+sys':>8}  {'user':>6}  {'sys':>6}",
        child("doorbell: 2 MiB segments, a file each", report["child_cpu"]["ours"]),
        child("  of which start-up + imports (0 bytes)", report["child_cpu"]["startup"])
        + "  (not subtracted)",
        child("age -r: X25519, ChaCha20-Poly1305", report["child_cpu"]["age"]),
        child("minisign -S of age's output, prehashed", report["child_cpu"]["minisign"]),
        "",
        f"The daemon on {WIDTH}x{HEIGHT} {FPS} fps "
        f"synthetic video for {report['daemon']['seconds']:.0f} s, one ring (CPU seconds);",
        "  the video was encoded before the run and is replayed from a file without re-encoding",
        "",
        f"  {'daemon process, all threads':<42}{report['daemon']['daemon_cpu_s']:8.2f}",
        f"  {'the file source alone (subtracted)':<42}"
        f"{report['daemon']['source_alone_cpu_s']:8.2f}",
        f"  {'objects sealed':<42}{report['daemon']['objects_sealed']:8d}",
        "",
        *delivery_lines(report["delivery"]),
        "",
        *phone_lines(report["phone"]),
        "",
        *enrolment_lines(report["enrolment"]),
        "",
        *live_lines(report["live"]),
        "",
        *web_lines(report["web"]),
        "",
        verdict("seal_overhead"),
        verdict("seal_vs_age_cpu"),
        verdict("seal_vs_age_minisign_cpu"),
        verdict("daemon_cpu_share"),
        verdict("daemon_rss_mb", 1),
        verdict("ring_to_phone_ms_p99", 1),
        verdict("ring_to_bucket_s"),
        verdict("drain_vs_raw_put"),
        verdict("phone_verify_rss_ratio"),
        verdict("phone_verify_vs_open"),
        verdict("enroll_to_first_object_s", 2),
        verdict("live_first_frame_s", 2),
        f"{'live_latency_ms_p50':<26}"
        + (
            "not measured"
            if report["live_latency_ms_p50"] is None
            else f"{report['live_latency_ms_p50']:.1f}"
        ),
        verdict("live_latency_ms_p99", 1),
        verdict("live_cpu_share"),
        verdict("web_open_vs_python"),
        f"{'web_ring_to_screen_ms_p50':<26}"
        + (
            "not measured"
            if report["web_ring_to_screen_ms_p50"] is None
            else f"{report['web_ring_to_screen_ms_p50']:.1f}"
        ),
        verdict("web_ring_to_screen_ms_p99", 1),
    ]
    return "\n".join(lines)


def web_lines(web: dict[str, Any]) -> list[str]:
    """The web phone in headless Chromium: its reader against Python's, and rings."""
    if "not measured" in web:
        return [f"Web phone: not measured ({web['not measured']})"]
    return [
        f"Web phone in headless Chromium: {web['objects']} objects ({web['mib']:.0f} MiB), "
        f"{web['rings']} rings through the real daemon and a WebSocket broker",
        "  verify and open, s per run: Chromium "
        + ", ".join(f"{v:.3f}" for v in web["chromium_s"])
        + "; Python "
        + ", ".join(f"{v:.3f}" for v in web["python_s"]),
        "  ring to snapshot on the page (ms): "
        + ", ".join(f"{v:.0f}" for v in sorted(web["ring_ms"])),
    ]


def live_lines(live: dict[str, Any] | None) -> list[str]:
    """Live view: first frames, latency, and the daemon's extra CPU for one viewer."""
    if live is None:
        return ["Live view: not measured (no mosquitto: apt-get install mosquitto)"]
    with_s, without_s = live["cpu_with_viewer_s"], live["cpu_without_viewer_s"]
    return [
        f"Live view, 1280x720 30 fps replayed H.264, Mosquitto on loopback, {live['viewers']} "
        "viewer(s) one after another",
        "  first frame (s, from `doorbell-phone live` starting): "
        + ", ".join(f"{v:.2f}" for v in live["first_frame_s"]),
        "  latency p50 / p99 (ms, frame out of the encoder to decrypted on the phone): "
        + ", ".join(
            f"{a:.1f}/{b:.1f}"
            for a, b in zip(live["latency_ms_p50"], live["latency_ms_p99"], strict=True)
        ),
        f"  daemon CPU per {live['window_seconds']:g} s window, with a viewer: "
        + ", ".join(f"{v:.2f}" for v in with_s)
        + "; without: "
        + ", ".join(f"{v:.2f}" for v in without_s),
    ]


def enrolment_lines(enrolment: dict[str, Any] | None) -> list[str]:
    """Enrolment over the network: from the phone's command to its first object."""
    if enrolment is None:
        return ["Enrolment: not measured (no mosquitto: apt-get install mosquitto)"]
    lines = [
        f"Enrolment over Mosquitto on loopback, {enrolment['runs']} phone(s) one after another,",
        "  seconds from `doorbell-phone enroll` starting (a new process); yes typed at once",
        f"  {'':<42}{'median':>8}  {'max':>8}",
    ]
    for label, key in (
        ("the phone showed the code", "code_s"),
        ("the first object sealed to it was in the bucket", "first_object_s"),
        ("the phone said it is enrolled", "enrolled_s"),
    ):
        figures = enrolment[key]
        lines.append(f"  {label:<42}{figures['median']:8.2f}  {figures['max']:8.2f}")
    return lines


def phone_lines(phone: dict[str, Any]) -> list[str]:
    """The phone's section of the table: each command on the small and the large folder."""
    small, large = phone["objects"]
    small_mib, large_mib = phone["mib"]
    lines = [
        f"The phone (doorbell-phone, one {phone['suite']} key) on {small} and {large} objects "
        f"({small_mib:.0f} and {large_mib:.0f} MiB;",
        f"  media segments of {phone['segment_bytes'] // 1024} KiB), each run a child process;",
        f"  CPU the lowest and RSS the highest of {phone['runs']} alternating runs",
        f"  {'':<42}{'CPU seconds':>18}  {'peak RSS, MB':>18}",
        f"  {'objects':<42}{small:>8}  {large:>8}  {small:>8}  {large:>8}",
    ]
    for label, name in (
        ("doorbell-phone verify", "verify"),
        ("doorbell-phone export (+ decrypt, write)", "export"),
        ("bare Reader.open of every object", "open_all"),
    ):
        runs = phone[name]
        lines.append(
            f"  {label:<42}{runs[0]['cpu_s']:8.2f}  {runs[1]['cpu_s']:8.2f}"
            f"  {runs[0]['peak_rss_mb']:8.1f}  {runs[1]['peak_rss_mb']:8.1f}"
        )
    lines.append(
        f"  CPU per object between the folders: export {phone['export_ms_per_object']:.2f} ms, "
        f"bare open {phone['open_ms_per_object']:.2f} ms"
    )
    return lines


def delivery_lines(delivery: dict[str, Any]) -> list[str]:
    """The delivery section of the table: where each measured time went."""
    phone, bucket, drain = delivery["phone"], delivery["bucket"], delivery["drain"]
    lines = [
        f"Delivery on loopback, the daemon on {WIDTH}x{HEIGHT} "
        f"{FPS} fps synthetic video, one mlkem768-x25519 phone",
        "",
    ]
    if phone is not None:
        low, high = phone["spacing_s"]
        lines += [
            f"  ring -> phone over Mosquitto, {phone['presses']} presses {low}-{high} s apart, "
            "ms after the ring was sent",
            f"  {'':<42}{'p50':>8}  {'p99':>8}",
        ]
        for label, stage in (
            ("the daemon replied (event spooled)", "ring_handled"),
            ("the message reached the phone", "at_phone"),
            ("Watcher verified and decrypted it", "opened"),
        ):
            times = phone["stages_ms"][stage]
            lines.append(f"    {label:<40}{times['p50']:8.1f}  {times['p99']:8.1f}")
        lines += [
            f"    {'mean, max':<40}{phone['mean_ms']:8.1f}  {phone['max_ms']:8.1f}",
            f"    (p99 by nearest rank: of {phone['presses']} presses, the slowest)",
        ]
    if bucket is not None:
        lines += [
            f"  ring -> bucket over moto S3, {bucket['rings']} ring(s): the ring's event and the "
            "clip's first",
            f"    media segment (oldest pre-roll) listed, polled every "
            f"{bucket['poll_interval_s'] * 1000:.0f} ms; pre-roll full, S3 queue empty",
            f"    {'median, max (s)':<40}{bucket['median_s']:8.3f}  {bucket['max_s']:8.3f}",
        ]
    if drain is not None:
        lines += [
            f"  a backlog of {drain['objects']} sealed objects ({drain['mib']:.0f} MiB) into "
            f"moto S3, best of {drain['runs']} alternating runs",
            f"  {'':<42}{'seconds':>8}  {'MiB/s':>8}",
            f"    {'the spool: Uploader + S3Sink':<40}{drain['drain_s']:8.2f}"
            f"  {drain['drain_mib_s']:8.0f}",
            f"    {'plain minio put_object, same objects':<40}{drain['raw_put_s']:8.2f}"
            f"  {drain['raw_put_mib_s']:8.0f}",
        ]
    lines += [f"  not measured: {reason}" for reason in delivery["missing"]]
    return lines


def significant(value: Any, digits: int = 4) -> Any:
    """``value`` with every float cut to a few significant digits: more is noise."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {key: significant(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [significant(item, digits) for item in value]
    return value


def emit(report: dict[str, Any], as_json: bool) -> None:
    """The benchmark's only output: one JSON object, or the table."""
    if as_json:
        print(json.dumps(significant(report), allow_nan=False))
    else:
        print(render(report))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    args = parser.parse_args(argv)
    emit(run(QUICK if args.quick else FULL), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
