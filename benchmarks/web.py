"""Measure the web phone (part of scripts/bench) in Debian's headless Chromium.

- ``web_open_vs_python``: the web phone's reader (web/src/format, keys imported as the
  app keeps them: non-extractable WebCrypto keys) verifying and opening a folder of
  objects already in the page's memory, against the Python reader (``Reader.open``)
  on the same objects already in memory, in this process: throughput in Chromium
  divided by throughput in Python. Each side's time is the best of ``runs``.
- ``web_ring_to_screen_ms_p50`` / ``_p99``: from the ring (the control socket's
  ``ring``, as the button does) to the decrypted snapshot loaded in the page, through
  the real daemon, a Mosquitto behind a WebSocket listener and the page's own
  verification, all on loopback (tests/web_rig.py).

The footage is benchmarks/phone.py's: one mlkem768-x25519 phone, clips of 256 KiB
segments sealed by the product's ``Sealer``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.delivery import nearest_rank
from benchmarks.phone import seal_footage
from doorbell.phone.home import PhoneHome

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
CHROMIUM = Path(os.environ.get("DOORBELL_CHROMIUM", "/usr/bin/chromium"))
TARGETS = {"web_open_vs_python": 0.5, "web_ring_to_screen_ms_p99": 300.0}
FLOORS = frozenset({"web_open_vs_python"})
FIGURES = ("web_open_vs_python", "web_ring_to_screen_ms_p50", "web_ring_to_screen_ms_p99")


@dataclass(frozen=True)
class WebPlan:
    objects: int = 120
    runs: int = 3
    rings: int = 30


@dataclass(frozen=True)
class WebCost:
    objects: int
    megabytes: float
    python_s: list[float]
    chromium_s: list[float]
    ring_ms: list[float]

    def headline(self) -> dict[str, float]:
        return {
            "web_open_vs_python": min(self.python_s) / min(self.chromium_s),
            "web_ring_to_screen_ms_p50": statistics.median(self.ring_ms),
            "web_ring_to_screen_ms_p99": nearest_rank(self.ring_ms, 99),
        }

    def meets_targets(self) -> dict[str, bool]:
        figures = self.headline()
        return {
            key: figures[key] >= bound if key in FLOORS else figures[key] <= bound
            for key, bound in TARGETS.items()
        }

    def details(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "mib": self.megabytes,
            "python_s": self.python_s,
            "chromium_s": self.chromium_s,
            "rings": len(self.ring_ms),
            "ring_ms": self.ring_ms,
        }


def available() -> str | None:
    """Why the web phone cannot be measured here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if shutil.which("node") is None or not (WEB / "node_modules").is_dir():
        return "Node.js or web/node_modules is missing (scripts/web-build)"
    return None


def _node(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    run = subprocess.run(
        ["node", *argv],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"node {' '.join(argv)} failed:\n{run.stderr[-4000:]}")
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def _python_open(folder: Path, home: Path, runs: int) -> list[float]:
    reader = PhoneHome(home).reader()
    objects = [path.read_bytes() for path in sorted(folder.glob("*.sealed"))]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for data in objects:
            reader.open(data)
        times.append(time.perf_counter() - start)
    return times


def measure_web(plan: WebPlan, workdir: Path) -> WebCost:
    root = workdir / "web"
    folder, home = seal_footage(root, plan.objects)
    phone = PhoneHome(home)
    secret = phone.identity()
    keys = {
        "device": phone.trusted()[0].key.raw.hex(),
        "seed": secret.raw.hex(),
        "publicKey": secret.public_key().raw.hex(),
    }
    (root / "keys.json").write_text(json.dumps(keys))
    (root / "objects").symlink_to(folder)
    python_s = _python_open(folder, home, plan.runs)
    chromium = _node("e2e/bench.mjs", "open", str(root), str(plan.runs))
    dist = root / "dist"
    subprocess.run(["node", "build.mjs", str(dist)], cwd=WEB, check=True, capture_output=True)
    env = {"DOORBELL_WEB_DIST": str(dist), "DOORBELL_PYTHON": sys.executable}
    rings = _node("e2e/bench.mjs", "ring", str(plan.rings), env=env)
    size = sum(path.stat().st_size for path in folder.glob("*.sealed"))
    return WebCost(
        objects=plan.objects,
        megabytes=size / 1024 / 1024,
        python_s=python_s,
        chromium_s=list(chromium["times"]),
        ring_ms=list(rings["times"]),
    )
