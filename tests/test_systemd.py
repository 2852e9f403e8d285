"""The systemd unit: what the daemon needs from it, and how tightly it is sandboxed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = UNIT_DIR / "doorbell.service"
MAX_EXPOSURE = 2.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package systemd)",
)


def service_section() -> dict[str, list[str]]:
    """The [Service] settings, each key with all its values in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def setting(name: str) -> str:
    values = service_section().get(name)
    assert values, f"{name}= is missing from {UNIT.name}"
    return values[-1]


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args],
        cwd=UNIT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"},
    )


@needs_systemd_analyze
def test_exposure_is_at_most_two() -> None:
    run = analyze("security", "--offline=true", UNIT.name)
    match = re.search(r"Overall exposure level for doorbell\.service: (\d+(?:\.\d+)?)", run.stdout)
    assert match, run.stdout + run.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, run.stdout


@needs_systemd_analyze
def test_verify_reports_nothing_but_the_uninstalled_binary() -> None:
    run = analyze("verify", "--man=no", UNIT.name)
    complaints = [
        line
        for line in (run.stdout + run.stderr).splitlines()
        if line.strip()
        and not re.search(r"Command /opt/doorbell/venv/bin/doorbell is not executable", line)
    ]
    assert complaints == []


def test_daemon_lifecycle() -> None:
    assert setting("Type") == "notify"
    assert setting("NotifyAccess") == "main"
    assert setting("ExecStart") == (
        "/opt/doorbell/venv/bin/doorbell run -c /etc/doorbell/doorbell.yaml"
    )
    assert setting("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert setting("WatchdogSec") == "30"
    assert setting("Restart") == "on-failure"
    assert setting("RestartSec") == "5"
    assert setting("TimeoutStopSec") == "30"


def test_runs_as_doorbell_with_camera_and_gpio_groups() -> None:
    assert setting("User") == "doorbell"
    groups = " ".join(service_section()["SupplementaryGroups"]).split()
    assert {"video", "gpio"} <= set(groups)
    assert setting("CapabilityBoundingSet") == ""
    assert setting("AmbientCapabilities") == ""
    assert setting("NoNewPrivileges") == "yes"


def test_directories() -> None:
    assert setting("ProtectSystem") == "strict"
    assert setting("StateDirectory") == "doorbell"
    assert setting("StateDirectoryMode") == "0700"
    assert setting("RuntimeDirectory") == "doorbell"
    assert setting("ConfigurationDirectory") == "doorbell"
    assert setting("UMask") == "0077"


def test_working_directory_is_writable_for_lgpio() -> None:
    # lgpio creates its notification FIFO (.lgd-nfy*) in the working directory.
    assert setting("WorkingDirectory") in {"/run/doorbell", "/var/lib/doorbell"}


def test_device_access_is_by_class() -> None:
    assert setting("DevicePolicy") == "closed"
    allowed = {value.split()[0] for value in service_section()["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap", "char-gpiochip"} <= allowed
    # systemd does not glob device paths: /dev/video* would silently allow nothing.
    assert not any("*" in device for device in allowed)


def test_network_is_ip_and_unix_sockets_only() -> None:
    families = setting("RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    settings = service_section()
    assert "PrivateNetwork" not in settings, "uploads to S3 and MQTT need the network"
    assert "IPAddressDeny" not in settings, "S3 and MQTT addresses come from the config"


def test_proc_keeps_what_gpiozero_reads() -> None:
    # gpiozero reads the board revision from /proc/device-tree or /proc/cpuinfo;
    # ProcSubset=pid hides both and every pin factory fails.
    assert service_section().get("ProcSubset", ["all"])[-1] != "pid"
    assert setting("ProtectProc") == "invisible"


def test_plaintext_in_ram_is_never_swapped_to_the_sd_card() -> None:
    assert setting("MemorySwapMax") == "0"


def test_memory_is_capped_for_a_512_mb_pi_and_never_dumped() -> None:
    assert setting("MemoryMax") == "256M"
    assert setting("LimitCORE") == "0"
