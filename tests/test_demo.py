"""`doorbell demo` end to end: the real daemon rung once, its clip verified and exported."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import av
import pytest
from daemon_harness import mp4_boxes
from enrol_harness import phone_command

from doorbell.demo import PRE_ROLL, SEGMENT
from doorbell.phone.chain import verify_source
from doorbell.phone.export import export_clips
from doorbell.phone.home import PhoneHome
from doorbell.phone.objects import DirectorySource

Demo = tuple[Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    directory = tmp_path_factory.mktemp("demo")
    run = subprocess.run(
        [sys.executable, "-m", "doorbell", "demo", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return directory, run


def test_demo_succeeds_and_says_what_it_did(demo: Demo) -> None:
    directory, run = demo
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    for words in ("device key", "rang", "stopped", "verified", "exported", "before the ring"):
        assert words in run.stdout
    names = {p.name for p in directory.iterdir()}
    assert names == {"doorbell", "phone", "bucket", "clips", "recovery-words.txt"}


def test_demo_ends_with_how_to_open_its_footage_in_the_web_phone(demo: Demo) -> None:
    """The words it keeps are the recovery key its phone's enrolment made: a phone restored
    from them (as the web phone restores) reads the demo's footage."""
    directory, run = demo
    words_file = directory / "recovery-words.txt"
    assert stat.S_IMODE(words_file.stat().st_mode) == 0o600
    words = words_file.read_text().split()
    assert len(words) == 24
    assert "doorbell-phone web" in run.stdout and str(words_file) in run.stdout
    device_line = next(line for line in run.stdout.splitlines() if "dbdev-ed25519-" in line)
    device = device_line.split()[-1]
    home = directory / "restored"
    code, _, stderr = phone_command(
        home, "recover", "--device", device, "--json", stdin=" ".join(words)
    )
    assert code == 0, stderr
    result = verify_source(DirectorySource(directory / "bucket"), PhoneHome(home).reader())
    assert result.ok, [str(f) for f in result.problems]
    assert any(e.contents is not None and e.contents.kind.name == "EVENT" for e in result.entries)


def test_the_clip_holds_the_pre_roll_and_decodes(demo: Demo) -> None:
    directory, _ = demo
    home = PhoneHome(directory / "phone")
    source = DirectorySource(directory / "bucket")
    result = verify_source(source, home.reader())
    assert result.ok, [str(f) for f in result.problems]
    report = export_clips(source, home.reader(), result, directory / "check")
    [clip] = report.clips
    assert clip.label == "ring"
    assert clip.pre_roll is not None and clip.pre_roll >= PRE_ROLL - SEGMENT
    with av.open(str(clip.path)) as container:
        frames = [frame for frame in container.decode(video=0)]
    assert len(frames) == round(clip.seconds * 30)
    assert (frames[0].width, frames[0].height) == (1280, 720)
    [snapshot] = (directory / "clips").glob("*.jpg")
    with av.open(str(snapshot)) as container:
        assert next(container.decode(video=0)).width == 640


def test_no_plaintext_media_under_device_state_or_bucket(demo: Demo) -> None:
    directory, _ = demo
    clip = next((directory / "clips").glob("*.mp4"))
    media = clip.read_bytes()
    step = max(1, len(media) // 200)
    samples = [media[i : i + 32] for i in range(0, len(media) - 32, step)]
    with av.open(str(clip)) as container:
        avcc = container.streams.video[0].codec_context.extradata
    # The SPS the encoder wrote, behind an Annex-B start code as the camera emits it.
    sps = b"\x00\x00\x01\x67" + avcc[1:4]
    # The patterns do find plaintext: the clip itself has the boxes and the SPS bytes.
    assert "moof" in mp4_boxes(media) and b"\x67" + avcc[1:4] in media
    # ...and a key string that happens to spell a box type is not taken for one.
    assert not mp4_boxes(b"dbpub-x25519-ckm743yiaoguq6yftyp5lxqd5ail4wv2u2bihhvcayr7")
    checked = 0
    for root in (directory / "doorbell", directory / "bucket"):
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            content = path.read_bytes()
            checked += 1
            assert not mp4_boxes(content), f"{path} contains MP4 boxes"
            assert sps not in content, f"{path} contains an H.264 SPS"
            for sample in samples:
                assert sample not in content, f"{path} contains decrypted media bytes"
    assert checked >= 8
