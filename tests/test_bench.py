"""The benchmark (benchmarks/, run by scripts/bench) runs end to end and reports
well-formed, finite, positive figures.

It is a measurement, not a test: nothing here compares a figure with a target.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITES = {"x25519", "mlkem768-x25519"}
RECIPIENTS = {1, 4, 16}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # exactly one JSON value, nothing else
    assert isinstance(document, dict)
    return document


def positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def numbers(value: object, path: str = "") -> Iterator[tuple[str, object]]:
    """Every number in the report (booleans are flags, not numbers), with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


def test_every_number_is_finite_and_positive(report: dict[str, Any]) -> None:
    found = dict(numbers(report))
    assert len(found) > 50
    for path, value in found.items():
        if path.startswith((".child_cpu.", ".method.other_cpu_s", ".daemon_cpu_share")):
            # Other processes may use no CPU at all, and the scheduler can charge a short
            # child's kernel time as zero; the CPU totals checked below cannot be zero.
            assert isinstance(value, float) and math.isfinite(value) and value >= 0, path
        else:
            assert positive(value), (path, value)
    assert positive(report["startup_cpu_s"])


def test_top_level_keys(report: dict[str, Any]) -> None:
    expected = {
        "machine",
        "seal",
        "open",
        "primitives",
        "seal_overhead",
        "seal_vs_age_cpu",
        "seal_vs_age_minisign_cpu",
        "ours_cpu_s",
        "age_cpu_s",
        "minisign_cpu_s",
        "daemon_cpu_share",
        "daemon_rss_mb",
        "daemon",
        "ring_to_phone_ms_p50",
        "ring_to_phone_ms_p99",
        "ring_to_bucket_s",
        "drain_vs_raw_put",
        "delivery",
        "phone_verify_rss_ratio",
        "phone_verify_vs_open",
        "phone",
        "enroll_to_first_object_s",
        "enrolment",
        "live_first_frame_s",
        "live_latency_ms_p50",
        "live_latency_ms_p99",
        "live_cpu_share",
        "live",
        "web_open_vs_python",
        "web_ring_to_screen_ms_p50",
        "web_ring_to_screen_ms_p99",
        "web",
        "targets",
        "meets_targets",
    }
    assert expected <= report.keys()


def test_daemon_figures(report: dict[str, Any]) -> None:
    daemon = report["daemon"]
    # The daemon did real work: it sealed objects, and it used more CPU than nothing.
    assert daemon["objects_sealed"] > 0
    assert positive(daemon["daemon_cpu_s"]) and positive(daemon["source_alone_cpu_s"])
    assert 0 <= report["daemon_cpu_share"] < 1
    assert 20 < report["daemon_rss_mb"] < 2000
    assert isinstance(report["meets_targets"]["daemon_cpu_share"], bool)
    assert isinstance(report["meets_targets"]["daemon_rss_mb"], bool)


def test_machine_facts(report: dict[str, Any]) -> None:
    machine = report["machine"]
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["aes_instructions"], bool)
    assert isinstance(machine["sha_extensions"], bool)
    assert isinstance(machine["cryptography"], str) and machine["cryptography"]
    assert machine["openssl_linked"].startswith(("OpenSSL", "LibreSSL", "BoringSSL"))


@pytest.mark.parametrize("table", ["seal", "open"])
def test_rows_cover_every_suite_and_recipient_count(report: dict[str, Any], table: str) -> None:
    rows = report[table]
    assert len(rows) == len(SUITES) * len(RECIPIENTS)
    assert {(r["suite"], r["recipients"]) for r in rows} == {
        (s, n) for s in SUITES for n in RECIPIENTS
    }
    for row in rows:
        assert positive(row["ms_per_mib"]), row
        assert positive(row["mib_per_s"]), row


def test_primitives(report: dict[str, Any]) -> None:
    prims = report["primitives"]
    for key in ("aes_gcm_ms", "aes_gcm_mb_s", "sha256_ms", "sha256_mb_s", "ed25519_sign_ms"):
        assert positive(prims[key]), key
    assert prims["sha256_bytes"] > 2 * 1024 * 1024  # the whole object, header included
    assert set(prims["hpke_wrap_ms"]) == SUITES
    assert all(positive(ms) for ms in prims["hpke_wrap_ms"].values())
    openssl = prims["openssl_speed_aes_gcm_mb_s"]
    if shutil.which("openssl"):
        assert positive(openssl)
    else:
        assert openssl is None


def test_ratios_and_child_cpu(report: dict[str, Any]) -> None:
    assert positive(report["seal_overhead"])
    assert positive(report["ours_cpu_s"])
    assert report["targets"] == {
        "seal_overhead": 1.15,
        "seal_vs_age_cpu": 1.0,
        "seal_vs_age_minisign_cpu": 1.0,
        "daemon_cpu_share": 0.02,
        "daemon_rss_mb": 120.0,
        "ring_to_phone_ms_p99": 150.0,
        "ring_to_bucket_s": 3.0,
        "drain_vs_raw_put": 0.9,
        "phone_verify_rss_ratio": 1.2,
        "phone_verify_vs_open": 0.8,
        "enroll_to_first_object_s": 2.0,
        "live_first_frame_s": 1.0,
        "live_latency_ms_p99": 150.0,
        "live_cpu_share": 0.02,
        "web_open_vs_python": 0.5,
        "web_ring_to_screen_ms_p99": 300.0,
    }
    assert isinstance(report["meets_targets"]["seal_overhead"], bool)
    if shutil.which("age") and shutil.which("age-keygen"):
        assert positive(report["age_cpu_s"])
        assert positive(report["seal_vs_age_cpu"])
        assert isinstance(report["meets_targets"]["seal_vs_age_cpu"], bool)
    else:
        assert report["age_cpu_s"] is None and report["seal_vs_age_cpu"] is None
        assert report["meets_targets"]["seal_vs_age_cpu"] is None


def test_age_and_minisign(report: dict[str, Any]) -> None:
    """scripts/bench installs both tools; the pipeline's row needs them both."""
    both = all(shutil.which(tool) for tool in ("age", "age-keygen", "minisign"))
    if both:
        assert positive(report["minisign_cpu_s"])
        ratio = report["ours_cpu_s"] / (report["age_cpu_s"] + report["minisign_cpu_s"])
        assert math.isclose(report["seal_vs_age_minisign_cpu"], ratio, rel_tol=2e-3)
        assert report["seal_vs_age_minisign_cpu"] < report["seal_vs_age_cpu"]
        assert isinstance(report["meets_targets"]["seal_vs_age_minisign_cpu"], bool)
        assert report["machine"]["minisign"].startswith("minisign ")
    else:
        assert report["seal_vs_age_minisign_cpu"] is None
        assert report["meets_targets"]["seal_vs_age_minisign_cpu"] is None


def test_ring_to_phone(report: dict[str, Any]) -> None:
    phone = report["delivery"]["phone"]
    assert phone["presses"] == 5  # the quick plan
    assert report["ring_to_phone_ms_p50"] == phone["p50_ms"]
    assert report["ring_to_phone_ms_p99"] == phone["p99_ms"]
    assert phone["p50_ms"] <= phone["p99_ms"] == phone["max_ms"]  # nearest rank, 5 presses
    stages = phone["stages_ms"]
    assert set(stages) == {"ring_handled", "at_phone", "opened"}
    # The phone can open an event only after it arrived.
    assert stages["at_phone"]["p50"] <= stages["opened"]["p50"] == phone["p50_ms"]
    assert isinstance(report["meets_targets"]["ring_to_phone_ms_p99"], bool)


def test_ring_to_bucket(report: dict[str, Any]) -> None:
    bucket = report["delivery"]["bucket"]
    assert bucket["rings"] == len(bucket["samples_s"]) == 1
    assert report["ring_to_bucket_s"] == bucket["median_s"] <= bucket["max_s"]
    assert report["targets"]["ring_to_bucket_s"] == bucket["segment_seconds"] + 1
    assert isinstance(bucket["definition"], str) and bucket["definition"]
    assert isinstance(report["meets_targets"]["ring_to_bucket_s"], bool)


def test_drain_versus_raw_put(report: dict[str, Any]) -> None:
    drain = report["delivery"]["drain"]
    # 16 MiB of 2 MiB segments, and the keyring object the first seal announces.
    assert drain["objects"] == 9
    assert 16 <= drain["mib"] < 17
    assert len(drain["drain_runs_s"]) == len(drain["raw_put_runs_s"]) == drain["runs"] == 2
    assert drain["drain_s"] == min(drain["drain_runs_s"])
    assert drain["raw_put_s"] == min(drain["raw_put_runs_s"])
    ratio = drain["raw_put_s"] / drain["drain_s"]
    assert math.isclose(report["drain_vs_raw_put"], ratio, rel_tol=2e-3)
    assert isinstance(report["meets_targets"]["drain_vs_raw_put"], bool)
    assert report["delivery"]["missing"] == []


def test_phone(report: dict[str, Any]) -> None:
    phone = report["phone"]
    assert phone["objects"] == [20, 200]  # the quick plan
    assert phone["segment_bytes"] == 256 * 1024
    small_mib, large_mib = phone["mib"]
    assert 4 < small_mib < large_mib < 50
    verify = phone["verify"]
    ratio = verify[1]["peak_rss_mb"] / verify[0]["peak_rss_mb"]
    assert math.isclose(report["phone_verify_rss_ratio"], ratio, rel_tol=2e-3)
    for name in ("verify", "export", "open_all"):
        small, large = phone[name]
        assert 10 < small["peak_rss_mb"] < 2000, name
        assert 0 < small["cpu_s"] < large["cpu_s"], name
    # Throughput between the folders: per-object CPU, start-up cancelled out.
    ratio = phone["open_ms_per_object"] / phone["export_ms_per_object"]
    assert math.isclose(report["phone_verify_vs_open"], ratio, rel_tol=2e-3)
    for key in ("phone_verify_rss_ratio", "phone_verify_vs_open"):
        assert isinstance(report["meets_targets"][key], bool), key


def test_enrolment(report: dict[str, Any]) -> None:
    """One phone enrolled over the network (the quick plan): its times add up in order."""
    enrolment = report["enrolment"]
    assert enrolment["runs"] == 1
    code, first = enrolment["code_s"]["max"], enrolment["first_object_s"]["max"]
    assert 0 < code < first < 60
    assert 0 < enrolment["enrolled_s"]["max"] < 60
    assert report["enroll_to_first_object_s"] == first
    assert isinstance(report["meets_targets"]["enroll_to_first_object_s"], bool)
    from benchmarks.bench import render

    table = render(report)
    assert "the first object sealed to it was in the bucket" in table
    assert "enroll_to_first_object_s" in table


def test_web_phone(report: dict[str, Any]) -> None:
    """The web phone in Chromium (the quick plan: 20 objects, 2 rings): its own figures,
    each ring timed to its snapshot on the page."""
    web = report["web"]
    assert web["objects"] == 20 and len(web["ring_ms"]) == 2
    assert all(0 < ms < 30_000 for ms in web["ring_ms"])
    ratio = min(web["python_s"]) / min(web["chromium_s"])
    assert report["web_open_vs_python"] == pytest.approx(ratio, rel=0.01)
    assert 0 < report["web_ring_to_screen_ms_p50"] <= report["web_ring_to_screen_ms_p99"]
    for key in ("web_open_vs_python", "web_ring_to_screen_ms_p99"):
        assert isinstance(report["meets_targets"][key], bool), key
    from benchmarks.bench import render

    assert "web_ring_to_screen_ms_p99" in render(report)


def test_live(report: dict[str, Any]) -> None:
    """One viewer (the quick plan): it saw frames, soon, and the figures are its own."""
    live = report["live"]
    assert live["viewers"] == 1 and live["frames"][0] > 10
    assert 0 < report["live_first_frame_s"] < 10
    assert 0 < report["live_latency_ms_p50"] <= report["live_latency_ms_p99"] < 5000
    assert report["live_first_frame_s"] == max(live["first_frame_s"])
    for key in ("live_first_frame_s", "live_latency_ms_p99", "live_cpu_share"):
        assert isinstance(report["meets_targets"][key], bool), key
