"""`doorbell check-config` as a user runs it: exit codes, every problem with its line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHIPPED = Path(__file__).parent.parent / "config" / "doorbell.yaml"


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doorbell", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_shipped_file_is_valid() -> None:
    run = _check(SHIPPED)
    assert run.returncode == 0, run.stderr
    assert "ok" in run.stdout


def test_a_broken_file_lists_every_problem_with_key_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "doorbell.yaml"
    broken.write_text(
        "state_dir: " + str(tmp_path / "state") + "\n"
        "runtime_dir: " + str(tmp_path / "run") + "\n"
        "recording:\n"
        "  post_roll_secs: 3\n"
        "  max_clip_seconds: 5\n"
        "gpio:\n"
        "  button:\n"
        "    pin: 40\n"
        "camera:\n"
        "  source: picam\n"
    )
    run = _check(broken)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert f"{broken}:4: recording.post_roll_secs" in run.stderr
    assert "did you mean 'post_roll_seconds'" in run.stderr
    assert f"{broken}:8: gpio.button.pin" in run.stderr
    assert f"{broken}:10: camera.source" in run.stderr and "picamera2" in run.stderr
    # The typo leaves post-roll at its default, 10 s: longer than the 5 s maximum clip.
    assert f"{broken}:5: recording.max_clip_seconds" in run.stderr
    assert "4 problem(s)" in run.stderr


def test_the_daemon_refuses_a_broken_file_before_starting(tmp_path: Path) -> None:
    broken = tmp_path / "doorbell.yaml"
    broken.write_text("recording:\n  pre_roll_seconds: -1\n")
    run = subprocess.run(
        [sys.executable, "-m", "doorbell", "run", "-c", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "recording.pre_roll_seconds" in run.stderr and "Traceback" not in run.stderr


def test_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    run = _check(tmp_path / "absent.yaml")
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_a_missing_camera_is_a_clear_start_error(tmp_path: Path) -> None:
    config = tmp_path / "doorbell.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nruntime_dir: {tmp_path / 'run'}\n"
        "camera:\n  source: picamera2\ngpio:\n  pin_factory: mock\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "doorbell", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert run.returncode == 2
    assert "cannot start" in run.stderr and "picamera2" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_directory_that_cannot_be_created_is_a_clear_start_error(tmp_path: Path) -> None:
    config = tmp_path / "doorbell.yaml"
    # /proc refuses new directories even to root: the config check cannot foresee it.
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nruntime_dir: /proc/doorbell-test\n"
        "camera:\n  source: synthetic\ngpio:\n  pin_factory: mock\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "doorbell", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "cannot start" in run.stderr and "Traceback" not in run.stderr


def _nested_mapping(depth: int) -> str:
    return "camera: " + "{a: " * depth + "1" + "}" * depth + "\n"


def _nested_sequence(depth: int) -> str:
    return "camera: " + "[" * depth + "]" * depth + "\n"


def _nested_block(depth: int) -> str:
    return "camera:\n" + "".join(" " * level + f"k{level}:\n" for level in range(1, depth)) + "\n"


def _merge_chain(length: int) -> str:
    # Each anchor merges the previous one: no deep nesting, a deep chain of merges.
    lines = ["x0: &a0 {fps: 1}"]
    lines += [f"x{i}: &a{i} {{<<: *a{i - 1}}}" for i in range(1, length)]
    return "\n".join([*lines, f"camera:\n  <<: *a{length - 1}\n"])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_nested_mapping(5000), "nested deeper than 32 levels"),
        (_nested_mapping(3000), "nested deeper than 32 levels"),
        (_nested_sequence(5000), "nested deeper than 32 levels"),
        (_nested_block(500), "nested deeper than 32 levels"),
        (_merge_chain(3000), "merges nest too deeply"),
    ],
    ids=["mapping-5000", "mapping-3000", "sequence-5000", "block-500", "merge-chain-3000"],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_deep_nesting_is_a_clear_error(
    tmp_path: Path, text: str, problem: str, command: str
) -> None:
    deep = tmp_path / "doorbell.yaml"
    deep.write_text(text)
    run = subprocess.run(
        [sys.executable, "-m", "doorbell", command, "-c", str(deep)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "RecursionError" not in run.stderr
    assert problem in run.stderr and str(deep) in run.stderr


def test_a_retired_key_is_a_warning_not_an_error(tmp_path: Path) -> None:
    old = tmp_path / "doorbell.yaml"
    old.write_text("gpio:\n  button:\n    pin: 17\n    hold_seconds: 1.0\n")
    run = _check(old)
    assert run.returncode == 0, run.stderr
    assert f"{old}: ok" in run.stdout
    assert f"{old}:4: gpio.button.hold_seconds: ignored" in run.stderr
    assert "can be removed" in run.stderr and "Traceback" not in run.stderr
