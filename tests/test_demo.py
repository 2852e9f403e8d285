"""`doorbell demo` end to end: real libx264 video sealed, delivered, verified and exported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest

SECONDS = 6
FPS = 30


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("demo")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "doorbell",
            "demo",
            "--dir",
            str(directory),
            "--seconds",
            str(SECONDS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return directory, run


def test_demo_succeeds_and_says_what_it_did(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    directory, run = demo
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    for word in ("device key", "sealed", "verified", "exported"):
        assert word in run.stdout
    assert {p.name for p in directory.iterdir()} == {"doorbell", "phone", "bucket", "clips"}
    assert len(list((directory / "bucket").glob("*.sealed"))) >= SECONDS // 2 + 3


def test_exported_clip_decodes_every_encoded_frame(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    directory, _ = demo
    clips = list((directory / "clips").glob("*.mp4"))
    assert len(clips) == 1
    with av.open(str(clips[0])) as container:
        frames = [frame for frame in container.decode(video=0)]
    assert len(frames) == SECONDS * FPS
    assert (frames[0].width, frames[0].height) == (1280, 720)
    snapshots = list((directory / "clips").glob("*.jpg"))
    assert len(snapshots) == 1
    with av.open(str(snapshots[0])) as container:
        assert next(container.decode(video=0)).width == 640


def _plaintext_samples(clip: Path) -> list[bytes]:
    """32-byte windows of the decrypted media: if any appears on disk, plaintext leaked."""
    data = clip.read_bytes()
    step = max(1, len(data) // 200)
    return [data[i : i + 32] for i in range(0, len(data) - 32, step)]


def test_no_plaintext_media_under_device_state_or_bucket(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    directory, _ = demo
    clip = next((directory / "clips").glob("*.mp4"))
    samples = _plaintext_samples(clip)
    # The SPS the encoder wrote, with its start code: profile, constraints and level bytes.
    with av.open(str(clip)) as container:
        avcc = container.streams.video[0].codec_context.extradata
    sps_prefix = b"\x00\x00\x01\x67" + avcc[1:4]
    # The patterns do find plaintext: the clip itself has the boxes and the SPS bytes.
    assert b"moof" in clip.read_bytes() and b"\x67" + avcc[1:4] in clip.read_bytes()
    checked = 0
    for root in (directory / "doorbell", directory / "bucket"):
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            content = path.read_bytes()
            checked += 1
            for box in (b"ftyp", b"moof", b"mdat", b"moov"):
                assert box not in content, f"{path} contains an MP4 {box!r} box"
            assert sps_prefix not in content, f"{path} contains an H.264 SPS"
            for sample in samples:
                assert sample not in content, f"{path} contains decrypted media bytes"
    assert checked >= 8
