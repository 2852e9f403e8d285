"""Turns verified objects into playable MP4 clips, one object in memory at a time."""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doorbell.phone.chain import Entry, Intervals, Verification
from doorbell.phone.objects import ObjectSource, ObjectUnreadable
from doorbell.sealing import Kind, Reader, SealingError


@dataclass
class Clip:
    """One clip to assemble: the init segment, then media segments first..last."""

    clip_id: str
    stream: str
    first_index: int
    last_index: int | None
    time_us: int
    position: float | None = None  # stream time of the first trigger, seconds
    types: list[str] = field(default_factory=list)
    snapshots: list[Entry] = field(default_factory=list)

    @property
    def label(self) -> str:
        if "ring" in self.types:
            return "ring"
        if "motion" in self.types:
            return "motion"
        return "event" if self.types else "recording"


@dataclass(frozen=True)
class ExportedClip:
    path: Path
    label: str
    segments: int
    seconds: float
    snapshot: Path | None
    pre_roll: float | None = None  # how long before the first trigger the clip starts


@dataclass
class ExportReport:
    clips: list[ExportedClip] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plan_clips(verification: Verification) -> list[Clip]:
    """Clips announced by events, plus runs of segments that belong to no clip."""
    clips: dict[str, Clip] = {}
    ends: dict[str, int] = {}
    segments = _segments(verification.entries)
    for entry in verification.entries:
        contents = entry.contents
        if contents is None:
            continue
        meta = contents.meta
        if contents.kind is Kind.EVENT and _is_id(meta.get("clip")) and _is_id(meta.get("stream")):
            clip = clips.get(meta["clip"])
            if clip is None:
                first = meta.get("first_index")
                if not isinstance(first, int):
                    continue
                clip = Clip(meta["clip"], meta["stream"], first, None, contents.time_us)
                clip.position = _seconds(meta.get("position"))
                clips[clip.clip_id] = clip
            clip.types.append(str(meta.get("type", "event")))
            clip.snapshots.append(entry)
        elif (
            contents.kind is Kind.NOTICE
            and meta.get("notice") == "clip-end"
            and _is_id(meta.get("clip"))
            and isinstance(meta.get("last_index"), int)
        ):
            ends[meta["clip"]] = meta["last_index"]
    covered: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for clip in clips.values():
        clip.last_index = ends.get(clip.clip_id)
        last = clip.last_index
        if last is None:
            indexes = [i for (s, i) in segments if s == clip.stream and i >= clip.first_index]
            last = max(indexes, default=clip.first_index)
        # A range, not a set of indexes: a signed clip-end may name index 2^63.
        covered[clip.stream].append((clip.first_index, last))
    in_clips = {stream: Intervals(ranges) for stream, ranges in covered.items()}
    loose = sorted(
        (stream, index)
        for stream, index in segments
        if stream not in in_clips or index not in in_clips[stream]
    )
    runs: list[Clip] = []
    for stream, index in loose:
        run = runs[-1] if runs else None
        if run is not None and run.stream == stream and run.last_index == index - 1:
            run.last_index = index
        else:
            time_us = segments[(stream, index)].contents.time_us  # type: ignore[union-attr]
            runs.append(Clip(f"{stream}-{index}", stream, index, index, time_us))
    return sorted([*clips.values(), *runs], key=lambda c: c.time_us)


def _segments(entries: list[Entry]) -> dict[tuple[str, int], Entry]:
    found: dict[tuple[str, int], Entry] = {}
    for entry in entries:
        contents = entry.contents
        if contents is None or contents.kind is not Kind.SEGMENT:
            continue
        meta = contents.meta
        if _is_id(meta.get("stream")) and isinstance(meta.get("index"), int):
            found.setdefault((meta["stream"], meta["index"]), entry)
    return found


def _is_id(value: object) -> bool:
    """Clip and stream ids become file names: only 32 lower-case hex digits are accepted."""
    return isinstance(value, str) and bool(_ID.fullmatch(value))


_ID = re.compile(r"[0-9a-f]{32}")


def export_clips(
    source: ObjectSource, reader: Reader, verification: Verification, out_dir: Path
) -> ExportReport:
    """Write each planned clip as ``out_dir/<time>-<label>-<id>.mp4`` (and a .jpg snapshot)."""
    report = ExportReport()
    out_dir.mkdir(parents=True, exist_ok=True)
    inits: dict[str, Entry] = {}
    for entry in verification.entries:
        if entry.contents is not None and entry.contents.kind is Kind.INIT:
            stream = entry.contents.meta.get("stream")
            if isinstance(stream, str):
                inits.setdefault(stream, entry)
    segments = _segments(verification.entries)
    for clip in plan_clips(verification):
        _export_one(source, reader, clip, inits, segments, out_dir, report)
    return report


def _export_one(
    source: ObjectSource,
    reader: Reader,
    clip: Clip,
    inits: dict[str, Entry],
    segments: dict[tuple[str, int], Entry],
    out_dir: Path,
    report: ExportReport,
) -> None:
    stamp = datetime.fromtimestamp(clip.time_us / 1e6, UTC).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{clip.label}-{clip.clip_id[:8]}"
    init = inits.get(clip.stream)
    if init is None:
        report.skipped.append(f"{base}: the init segment of stream {clip.stream[:8]} is missing")
        return
    last = clip.last_index
    if last is None:
        indexes = [i for (s, i) in segments if s == clip.stream and i >= clip.first_index]
        last = max(indexes, default=clip.first_index - 1)
        report.skipped.append(
            f"{base}: no end marker (recording interrupted); exported what exists"
        )
    path = out_dir / f"{base}.mp4"
    partial = out_dir / f".{base}.mp4.part"
    written = 0
    seconds = 0.0
    first_start: float | None = None
    with open(partial, "wb") as out:
        if not _copy_body(source, reader, init, out, report, base):
            partial.unlink()
            return
        # Walk the segments present, not every index a (signed) notice names: a clip-end
        # may claim index 2^63. Missing runs are reported as runs.
        present = sorted(
            (index, entry)
            for (stream, index), entry in segments.items()
            if stream == clip.stream and clip.first_index <= index <= last
        )
        expected = clip.first_index
        for index, entry in [*present, (last + 1, None)]:
            if index > expected:
                run = (
                    f"segment {expected} is"
                    if index == expected + 1
                    else f"segments {expected}..{index - 1} are"
                )
                report.skipped.append(f"{base}: {run} missing; the clip has a gap")
            expected = index + 1
            if entry is None:
                break
            if _copy_body(source, reader, entry, out, report, base):
                written += 1
                meta = entry.contents.meta if entry.contents else {}
                seconds += _seconds(meta.get("duration")) or 0.0
                if first_start is None:
                    first_start = _seconds(meta.get("start"))
    if written == 0:
        partial.unlink()
        report.skipped.append(f"{base}: no media segment could be exported")
        return
    os.replace(partial, path)
    snapshot = None
    for event in clip.snapshots:
        body = _body(source, reader, event, report, base)
        if body:
            snapshot = path.with_suffix(".jpg")
            snapshot.write_bytes(body)
            break
    pre_roll = None
    if clip.position is not None and first_start is not None:
        pre_roll = clip.position - first_start
    report.clips.append(ExportedClip(path, clip.label, written, seconds, snapshot, pre_roll))


def _body(
    source: ObjectSource, reader: Reader, entry: Entry, report: ExportReport, base: str
) -> memoryview | None:
    try:
        return reader.open(source.read(entry.name)).body
    except (SealingError, ObjectUnreadable) as exc:  # the source may have changed since
        report.skipped.append(f"{base}: {entry.name} could not be re-read: {exc}")
        return None


def _copy_body(
    source: ObjectSource, reader: Reader, entry: Entry, out: Any, report: ExportReport, base: str
) -> bool:
    body = _body(source, reader, entry, report, base)
    if body is None:
        return False
    out.write(body)
    return True


def _seconds(value: Any) -> float | None:
    """A meta number as seconds, or None when absent or not a finite double (the meta rules
    already refuse those; this keeps export from ever tracing back on one)."""
    if type(value) not in (int, float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None
