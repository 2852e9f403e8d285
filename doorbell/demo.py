"""``doorbell demo``: synthetic video sealed, delivered, verified and exported end to end.

Runs everything on this machine with no Pi, broker or cloud: a phone key is made
and enrolled, a few seconds of libx264 video are cut into CMAF segments, sealed
into ``bucket/``, then verified and exported by the phone reader into ``clips/``.
"""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from doorbell.capture import InitSegment, MediaSegment, Segment, Segmenter, SyntheticSource
from doorbell.capture.snapshot import jpeg_from_keyframe
from doorbell.phone.chain import verify_source
from doorbell.phone.export import export_clips
from doorbell.phone.home import PhoneHome
from doorbell.phone.objects import DirectorySource
from doorbell.sealing import KeyringStore, Kind, Sealer, Suite, prepare_state_dir
from doorbell.transport.local import LocalDirectorySink

PHONE_NAME = "demo-phone"


def run_demo(directory: Path, *, seconds: float = 8.0, out: TextIO = sys.stdout) -> int:
    directory = Path(directory)
    state = prepare_state_dir(directory / "doorbell")
    home = PhoneHome(directory / "phone")
    bucket = LocalDirectorySink(directory / "bucket")
    clips = directory / "clips"

    identity = home.identity() if home.identity_path.exists() else home.init(Suite.MLKEM768_X25519)
    store = KeyringStore(state)
    if not any(r.key == identity.public_key() for r in store.load().recipients):
        with store.editing() as box:
            box[0] = box[0].add(PHONE_NAME, identity.public_key(), datetime.now(UTC))

    delivered = 0
    frames = 0
    with Sealer(state) as sealer:
        home.trust(sealer.device_key, "demo doorbell")
        print(f"Doorbell demo in {directory}/", file=out)
        print(f"  device key  {sealer.device_key.to_string()}", file=out)
        print(
            f"  phone       {PHONE_NAME} ({identity.suite.label}), enrolled and trusting", file=out
        )

        source = SyntheticSource(
            1280, 720, 30, keyframe_seconds=2.0, seconds=seconds, realtime=False
        )
        segmenter = Segmenter(source.format, segment_seconds=2.0)
        stream, clip = secrets.token_hex(16), secrets.token_hex(16)
        snapshot = b""
        last_index = -1

        def deliver(kind: Kind, meta: dict[str, object], body: bytes = b"") -> None:
            nonlocal delivered
            for sealed in sealer.seal(kind, meta, body):
                bucket.deliver(sealed)
                delivered += 1

        def handle(segment: Segment) -> None:
            nonlocal last_index
            if isinstance(segment, InitSegment):
                fmt = segment.format
                deliver(
                    Kind.INIT,
                    {
                        "stream": stream,
                        "codec": fmt.codec,
                        "width": fmt.width,
                        "height": fmt.height,
                        "fps": fmt.fps,
                        "camera": "demo",
                    },
                    segment.data,
                )
                # The demo "rings" as recording starts: the clip begins at segment 0.
                deliver(
                    Kind.EVENT,
                    {
                        "type": "ring",
                        "clip": clip,
                        "stream": stream,
                        "first_index": 0,
                        "camera": "demo",
                    },
                    snapshot,
                )
            elif isinstance(segment, MediaSegment):
                deliver(
                    Kind.SEGMENT,
                    {
                        "stream": stream,
                        "index": segment.index,
                        "start": segment.start,
                        "duration": segment.duration,
                        "frames": segment.frames,
                    },
                    segment.data,
                )
                last_index = segment.index

        for unit in source.frames():
            if not snapshot and unit.keyframe:
                snapshot = jpeg_from_keyframe(unit)
            frames += 1
            for segment in segmenter.feed(unit):
                handle(segment)
        for segment in segmenter.flush():
            handle(segment)
        deliver(
            Kind.NOTICE,
            {"notice": "clip-end", "clip": clip, "stream": stream, "last_index": last_index},
        )
    fmt = source.format
    print(
        f"  encoded     {frames} frames of {fmt.width}x{fmt.height} synthetic video "
        f"with libx264 ({seconds:g} s)",
        file=out,
    )
    print(f"  sealed      {delivered} objects into {bucket.directory}/", file=out)

    source_dir = DirectorySource(bucket.directory)
    reader = home.reader()
    result = verify_source(source_dir, reader)
    for finding in result.findings:
        print(f"  {'FAIL' if finding.problem else 'note'}        {finding}", file=out)
    status = "all verified" if result.ok else f"{len(result.problems)} problem(s)"
    print(f"  verified    {len(result.entries)} objects by the phone: {status}", file=out)
    report = export_clips(source_dir, reader, result, clips)
    for exported in report.clips:
        extra = f" + snapshot {exported.snapshot.name}" if exported.snapshot else ""
        print(
            f"  exported    {exported.path} ({exported.label}, {exported.segments} segments, "
            f"{exported.seconds:.1f} s){extra}",
            file=out,
        )
    for line in report.skipped:
        print(f"  skipped     {line}", file=out)
    return 0 if result.ok and report.clips and not report.skipped else 1
