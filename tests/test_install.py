"""Deploying on a Pi: scripts/install staged into a temporary root, and the wiring documents;
setting up a checkout: the .venv that scripts/demo, scripts/test and scripts/bench make."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "scripts" / "install"
UNIT = Path("etc/systemd/system/doorbell.service")
CONFIG = Path("etc/doorbell/doorbell.yaml")
VENV = Path("opt/doorbell/venv")
STATE = Path("var/lib/doorbell")


def install(
    *args: str, script: Path = INSTALL, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def staged(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Install into ``root`` without the venv; the run must succeed."""
    run = install("--root", str(root), "--no-venv", *args)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mode, size and modification time."""
    snapshot = {}
    for path in root.rglob("*"):
        info = path.lstat()
        snapshot[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return snapshot


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_script_is_executable() -> None:
    assert os.access(INSTALL, os.X_OK)


def test_stages_unit_and_config(tmp_path: Path) -> None:
    staged(tmp_path)
    assert (tmp_path / UNIT).read_bytes() == (REPO / "systemd/doorbell.service").read_bytes()
    assert mode(tmp_path / UNIT) == 0o644
    assert (tmp_path / CONFIG).read_bytes() == (REPO / "config/doorbell.yaml").read_bytes()
    assert mode(tmp_path / CONFIG) in {0o640, 0o644}
    assert not (tmp_path / VENV).exists()


def test_staging_only_reports_system_changes(tmp_path: Path) -> None:
    out = staged(tmp_path).stdout
    assert "would run: apt-get install" in out
    assert "python3-picamera2" in out
    assert "would run: useradd" in out
    assert "--groups video,gpio doorbell" in out
    assert "would run: systemctl enable --now doorbell.service" in out
    assert {p.name for p in tmp_path.iterdir()} == {"etc", "usr"}
    link = tmp_path / "usr/local/bin/doorbell"
    assert os.readlink(link) == "/opt/doorbell/venv/bin/doorbell"


def test_no_apt_skips_packages(tmp_path: Path) -> None:
    out = staged(tmp_path, "--no-apt").stdout
    assert "apt-get" not in out


def test_second_run_changes_nothing_and_keeps_an_edited_config(tmp_path: Path) -> None:
    staged(tmp_path)
    (tmp_path / CONFIG).write_text("# edited by the owner\n")
    before = tree(tmp_path)
    run = staged(tmp_path)
    assert tree(tmp_path) == before
    assert (tmp_path / CONFIG).read_text() == "# edited by the owner\n"
    assert "keeping your" in run.stdout


def test_uninstall_keeps_config_and_state(tmp_path: Path) -> None:
    staged(tmp_path)
    (tmp_path / STATE).mkdir(parents=True)
    (tmp_path / STATE / "device.key").write_bytes(b"key")
    run = install("--uninstall", "--root", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "would run: systemctl disable --now doorbell.service" in run.stdout
    assert not (tmp_path / UNIT).exists()
    assert not (tmp_path / "opt/doorbell").exists()
    assert not (tmp_path / "usr/local/bin/doorbell").is_symlink()
    assert (tmp_path / CONFIG).is_file()
    assert (tmp_path / STATE / "device.key").read_bytes() == b"key"
    again = install("--uninstall", "--root", str(tmp_path))
    assert again.returncode == 0, again.stdout + again.stderr


def test_purge_removes_config_and_state(tmp_path: Path) -> None:
    staged(tmp_path)
    (tmp_path / STATE).mkdir(parents=True)
    (tmp_path / STATE / "device.key").write_bytes(b"key")
    run = install("--uninstall", "--purge", "--root", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert not (tmp_path / UNIT).exists()
    assert not (tmp_path / "etc/doorbell").exists()
    assert not (tmp_path / STATE).exists()
    assert "would run: userdel doorbell" in run.stdout


@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["--root"], ["somewhere"], ["--root", "/"]],
    ids=["unknown-option", "root-without-dir", "positional", "root-is-slash"],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    run = install(*args)
    assert run.returncode == 2
    assert "Usage: scripts/install" in run.stderr
    assert run.stdout == ""


def test_help() -> None:
    run = install("--help")
    assert run.returncode == 0
    assert "--uninstall" in run.stdout
    assert "--purge" in run.stdout


def copy_checkout(target: Path, *parts: str) -> Path:
    """A frozen copy of these parts of the checkout: edits made meanwhile do not count."""
    for part in parts:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / part)
    return target


def test_creates_a_venv_with_the_console_script(tmp_path: Path) -> None:
    # One of two tests that really run pip; with a warm pip cache it takes seconds.
    # It installs from a frozen copy of the checkout, so edits made meanwhile do
    # not count as an upgrade on the second run.
    checkout = copy_checkout(
        tmp_path / "checkout",
        *("scripts", "systemd", "config", "doorbell", "benchmarks", "pyproject.toml", "README.md"),
    )
    root = tmp_path / "root"
    script = checkout / "scripts/install"
    run = install("--root", str(root), script=script, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "eprecat" not in run.stdout + run.stderr  # setuptools' warnings are fixed, not hidden
    venv = root / VENV
    assert os.access(venv / "bin/doorbell", os.X_OK)
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    # What the Pi receives: the firmware, and no benchmark (they live in benchmarks/).
    show = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "show", "--files", "doorbell"],
        capture_output=True,
        text=True,
        check=True,
    )
    files = [line.strip() for line in show.stdout.split("Files:", 1)[1].splitlines()]
    assert "doorbell/sealing/sealer.py" in files
    assert [f for f in files if "bench" in f] == []
    before = tree(root)
    again = install("--root", str(root), script=script)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Doorbell in {venv} is up to date" in again.stdout
    assert tree(root) == before


def ensure_venv(checkout: Path) -> subprocess.CompletedProcess[str]:
    """What scripts/demo runs first in a checkout: make .venv, install Doorbell into it."""
    return subprocess.run(
        ["bash", "-c", "source scripts/lib/venv.sh && ensure_venv"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def dev_checkout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh copy of the checkout set up as scripts/demo does it (``ensure_venv``), and
    everything that set-up printed."""
    checkout = copy_checkout(
        tmp_path_factory.mktemp("clone"), "scripts", "doorbell", "pyproject.toml", "README.md"
    )
    setup = ensure_venv(checkout)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    return checkout, setup.stdout + setup.stderr


def test_setting_up_a_checkout_prints_nothing_when_it_works(dev_checkout: tuple[Path, str]) -> None:
    checkout, printed = dev_checkout
    assert printed == ""
    doorbell = subprocess.run(
        [str(checkout / ".venv/bin/doorbell"), "--help"], capture_output=True, text=True
    )
    assert doorbell.returncode == 0, doorbell.stderr


def test_setting_up_a_checkout_shows_what_pip_said_when_it_fails(
    dev_checkout: tuple[Path, str], tmp_path: Path
) -> None:
    checkout = copy_checkout(tmp_path / "broken", "scripts", "doorbell", "README.md")
    (checkout / ".venv").symlink_to(dev_checkout[0] / ".venv")  # made, with pip in it
    text = (REPO / "pyproject.toml").read_text()
    (checkout / "pyproject.toml").write_text(text.replace("[project]", "[project", 1))
    setup = ensure_venv(checkout)
    assert setup.returncode == 2
    assert setup.stdout == ""
    assert "Expected ']'" in setup.stderr  # pip's own report of the broken file
    assert setup.stderr.rstrip().endswith("failed (pip's output is above)")


# The 40-pin header: BCM number -> physical pin, for the pins the defaults use.
PHYSICAL_PIN = {4: 7, 17: 11, 22: 15, 27: 13}


def default_pins() -> dict[str, int]:
    gpio = yaml.safe_load((REPO / "config/doorbell.yaml").read_text())["gpio"]
    return {name: gpio[name]["pin"] for name in ("button", "motion", "chime", "status_led")}


def test_wiring_diagram_shows_every_default_pin() -> None:
    svg = ET.parse(REPO / "hardware/wiring.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(svg.itertext())
    for name, bcm in default_pins().items():
        assert f"BCM {bcm} · pin {PHYSICAL_PIN[bcm]}" in text, name


def test_hardware_readme_pin_table_matches_the_defaults() -> None:
    readme = (REPO / "hardware/README.md").read_text()
    for name, bcm in default_pins().items():
        assert f"| {PHYSICAL_PIN[bcm]} | GPIO{bcm} (**BCM {bcm}**) |" in readme, name
    assert "wiring.svg" in readme
