"""Measure the phone on folders of footage (part of scripts/bench): its memory as the
footage grows, and its speed against the bare reader.

The footage is sealed by the product's own ``Sealer`` for one mlkem768-x25519 phone
(the suite ``doorbell-phone init`` makes), as a doorbell seals it: the keyring, then
ring clips of an init segment, the event, 16 media segments of 256 KiB and the clip's
end, until a folder holds exactly the planned number of objects. The phone is the real
``doorbell-phone`` command line, whatever it does inside; every run is a child of a
small launcher, so its peak resident set and CPU are the kernel's figures for that
run alone.

- ``phone_verify_rss_ratio``: peak resident set of ``doorbell-phone verify`` on the
  large folder divided by its peak on the small one (10 times fewer objects of the
  same size). 1.0 means the phone's memory does not grow with the footage.
- ``phone_verify_vs_open``: the throughput of ``doorbell-phone export`` (which verifies
  every object, then decrypts and writes the clips) divided by the throughput of a
  bare ``Reader`` opening every object of the same folders in a child process that
  does nothing else. Throughput is objects per CPU second (user + system) between
  the small and the large folder, so the interpreter's start-up and other fixed costs
  cancel out on both sides.

Each command runs ``PhonePlan.runs`` times, alternating with the others, after the kernel has
written out what the previous step left dirty (``os.sync``); its CPU is the lowest of
those runs (the kernel's own work on written pages varies from run to run) and its peak
resident set the highest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chain_builder import clip_end_meta, event_meta, init_meta, segment_meta

from doorbell.phone.home import PhoneHome
from doorbell.sealing import KeyringStore, Kind, Sealer, Suite, prepare_state_dir

KIB = 1024
SEGMENT_BYTES = 256 * KIB
SEGMENTS_PER_CLIP = 16
TARGETS = {"phone_verify_rss_ratio": 1.2, "phone_verify_vs_open": 0.8}
FLOORS = frozenset({"phone_verify_vs_open"})  # targets to reach; the others not to exceed
PHONE = [sys.executable, "-m", "doorbell.phone"]

# Runs one command with its stdout in a file; prints that child's figures as JSON. A
# fresh interpreter with a single child: the kernel's peak for waited children is then
# the command's own (a child spawned from this process would inherit this one's peak).
_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
with open(sys.argv[1], "wb") as out:
    code = subprocess.call(sys.argv[2:], stdout=out, stderr=subprocess.STDOUT)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": code, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_kib": usage.ru_maxrss}))
"""

# The bare reader: every object of a folder read and opened, nothing else kept or checked.
# Arguments: the phone's home, the folder.
_OPEN_ALL = """
import sys
from pathlib import Path
from doorbell.phone.home import PhoneHome
reader = PhoneHome(Path(sys.argv[1])).reader()
opened = 0
for path in sorted(Path(sys.argv[2]).glob("*.sealed")):
    reader.open(path.read_bytes())
    opened += 1
print(f"opened {opened}")
"""


@dataclass(frozen=True)
class PhonePlan:
    """How many objects the small and the large folder hold."""

    small: int
    large: int
    runs: int = 3  # of each command on each folder


@dataclass(frozen=True)
class Run:
    """One child run: its CPU (user + system), wall time and peak resident set."""

    cpu_s: float
    wall_s: float
    peak_rss_mb: float

    def details(self) -> dict[str, float]:
        return {"cpu_s": self.cpu_s, "wall_s": self.wall_s, "peak_rss_mb": self.peak_rss_mb}


@dataclass(frozen=True)
class PhoneCost:
    """The three commands on each folder, and the folders' sizes."""

    objects: tuple[int, int]  # small, large
    runs: int  # of each command, the best taken
    bytes: tuple[int, int]
    verify: tuple[Run, Run]
    export: tuple[Run, Run]
    open_all: tuple[Run, Run]

    @property
    def rss_ratio(self) -> float:
        return self.verify[1].peak_rss_mb / self.verify[0].peak_rss_mb

    def _per_object_cpu_s(self, runs: tuple[Run, Run]) -> float:
        return (runs[1].cpu_s - runs[0].cpu_s) / (self.objects[1] - self.objects[0])

    @property
    def verify_vs_open(self) -> float:
        return self._per_object_cpu_s(self.open_all) / self._per_object_cpu_s(self.export)

    def headline(self) -> dict[str, float]:
        return {
            "phone_verify_rss_ratio": self.rss_ratio,
            "phone_verify_vs_open": self.verify_vs_open,
        }

    def meets_targets(self) -> dict[str, bool]:
        return {
            key: value >= TARGETS[key] if key in FLOORS else value <= TARGETS[key]
            for key, value in self.headline().items()
        }

    def details(self) -> dict[str, Any]:
        return {
            "objects": list(self.objects),
            "mib": [size / KIB / KIB for size in self.bytes],
            "segment_bytes": SEGMENT_BYTES,
            "runs": self.runs,
            "suite": Suite.MLKEM768_X25519.label,
            **{
                name: [run.details() for run in runs]
                for name, runs in (
                    ("verify", self.verify),
                    ("export", self.export),
                    ("open_all", self.open_all),
                )
            },
            "open_ms_per_object": self._per_object_cpu_s(self.open_all) * 1000,
            "export_ms_per_object": self._per_object_cpu_s(self.export) * 1000,
        }


def seal_footage(root: Path, objects: int) -> tuple[Path, Path]:
    """A folder of exactly ``objects`` sealed objects, and a phone home that opens them."""
    if objects < 5:
        raise ValueError("a folder needs the keyring and at least one whole clip")
    home = PhoneHome(root / "phone")
    identity = home.init(Suite.MLKEM768_X25519)
    state = prepare_state_dir(root / "doorbell")
    with KeyringStore(state).editing() as box:
        box[0] = box[0].add("bench-phone", identity.public_key(), datetime.now(UTC))
    folder = root / "bucket"
    folder.mkdir()
    segment = os.urandom(SEGMENT_BYTES)
    written = 0
    with Sealer(state) as sealer:
        home.trust(sealer.device_key, "bench door")

        def seal(kind: Kind, meta: dict[str, Any], body: bytes = b"") -> None:
            nonlocal written
            for sealed in sealer.seal(kind, meta, body):
                (folder / sealed.name).write_bytes(sealed.data)
                written += 1

        # The first seal puts the keyring object first; each clip is 3 objects and its
        # segments, and no clip may be left with fewer than one segment.
        remaining = objects - 1
        while remaining:
            segments = min(SEGMENTS_PER_CLIP, remaining - 3)
            left = remaining - 3 - segments
            if 0 < left < 4:
                segments -= 4 - left
            stream, clip = os.urandom(16).hex(), os.urandom(16).hex()
            seal(Kind.INIT, init_meta(stream), b"ftyp+moov")
            seal(Kind.EVENT, event_meta(clip=clip, stream=stream), b"\xff\xd8jpeg")
            for index in range(segments):
                seal(Kind.SEGMENT, segment_meta(stream, index), segment)
            seal(Kind.NOTICE, clip_end_meta(clip, stream, segments - 1))
            remaining -= 3 + segments
    if written != objects:
        raise RuntimeError(f"sealed {written} objects, not {objects}")
    return folder, home.directory


def launch(argv: list[str], output: Path) -> Run:
    """Run ``argv`` under the launcher; its output goes to ``output``."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(output), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout)
    if figures["code"] != 0:
        tail = output.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv[:4])}... exited with {figures['code']}:\n{tail}")
    # Linux reports the peak in KiB.
    return Run(figures["cpu_s"], figures["wall_s"], figures["peak_rss_kib"] / KIB)


def measure_folder(
    folder: Path, home: Path, workdir: Path, objects: int, runs: int
) -> tuple[Run, Run, Run]:
    """``verify``, ``export`` and the bare reader on one folder, each the best of ``runs``."""
    rounds = [_measure_once(folder, home, workdir, objects) for _ in range(runs)]
    verify, export, open_all = (
        Run(
            min(run.cpu_s for run in runs),
            min(run.wall_s for run in runs),
            max(run.peak_rss_mb for run in runs),
        )
        for runs in zip(*rounds, strict=True)
    )
    return verify, export, open_all


def _measure_once(folder: Path, home: Path, workdir: Path, objects: int) -> tuple[Run, Run, Run]:
    log = workdir / "phone-output.txt"
    os.sync()
    verify = launch([*PHONE, "--home", str(home), "verify", str(folder)], log)
    if f"ok: {objects} object(s) verified" not in log.read_text():
        raise RuntimeError(f"doorbell-phone verify did not verify the footage:\n{log.read_text()}")
    clips = workdir / "phone-clips"
    os.sync()
    export = launch([*PHONE, "--home", str(home), "export", str(folder), "--out", str(clips)], log)
    if not any(clips.glob("*.mp4")):
        raise RuntimeError(f"doorbell-phone export wrote no clip:\n{log.read_text()}")
    shutil.rmtree(clips)  # hundreds of MiB of plaintext video
    os.sync()
    open_all = launch([sys.executable, "-c", _OPEN_ALL, str(home), str(folder)], log)
    if log.read_text().split() != ["opened", str(objects)]:
        raise RuntimeError(f"the bare reader did not open every object:\n{log.read_text()}")
    return verify, export, open_all


def measure_phone(plan: PhonePlan, workdir: Path) -> PhoneCost:
    """Seal both folders, measure the phone on each, and remove them again."""
    runs = []
    sizes = []
    for name, objects in (("small", plan.small), ("large", plan.large)):
        root = workdir / f"phone-{name}"
        folder, home = seal_footage(root, objects)
        sizes.append(sum(path.stat().st_size for path in folder.iterdir()))
        runs.append(measure_folder(folder, home, workdir, objects, plan.runs))
        shutil.rmtree(root)
    (small_verify, small_export, small_open), (large_verify, large_export, large_open) = runs
    return PhoneCost(
        (plan.small, plan.large),
        plan.runs,
        (sizes[0], sizes[1]),
        (small_verify, large_verify),
        (small_export, large_export),
        (small_open, large_open),
    )
