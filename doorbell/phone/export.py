"""Turns verified objects into playable MP4 clips, one object in memory at a time."""

from __future__ import annotations

import bisect
import contextlib
import errno
import math
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol, TypeGuard

from doorbell.phone.chain import Entry, Intervals, Verification, verify_source
from doorbell.phone.memory import Remembered
from doorbell.phone.objects import CHUNK, ObjectSource, ObjectUnreadable
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


class _Segments:
    """The media segments present, per stream, sorted by index: a clip finds its own by
    bisection instead of scanning every segment of every stream."""

    def __init__(self, entries: list[Entry]) -> None:
        found: dict[tuple[str, int], Entry] = {}
        for entry in entries:
            contents = entry.contents
            if contents is None or contents.kind is not Kind.SEGMENT:
                continue
            meta = contents.meta
            if _is_id(meta.get("stream")) and _is_index(meta.get("index")):
                found.setdefault((meta["stream"], meta["index"]), entry)
        self.by_key = found
        by_stream: dict[str, list[tuple[int, Entry]]] = defaultdict(list)
        for (stream, index), entry in found.items():
            by_stream[stream].append((index, entry))
        for listed in by_stream.values():
            listed.sort(key=lambda item: item[0])
        self._by_stream = dict(by_stream)
        self._indexes = {stream: [i for i, _ in listed] for stream, listed in by_stream.items()}

    def newest(self, stream: str, first: int) -> int | None:
        """The highest index of ``stream`` present, if it is at least ``first``."""
        indexes = self._indexes.get(stream)
        return indexes[-1] if indexes and indexes[-1] >= first else None

    def between(self, stream: str, first: int, last: int) -> list[tuple[int, Entry]]:
        """(index, entry) of the segments of ``stream`` with an index in first..last."""
        indexes = self._indexes.get(stream, [])
        low = bisect.bisect_left(indexes, first)
        high = bisect.bisect_right(indexes, last)
        return self._by_stream[stream][low:high] if high > low else []


def plan_clips(verification: Verification) -> list[Clip]:
    """Clips announced by events, plus runs of segments that belong to no clip."""
    return _plan(verification.entries, _Segments(verification.entries))


def _plan(entries: list[Entry], segments: _Segments) -> list[Clip]:
    clips: dict[str, Clip] = {}
    ends: dict[str, int] = {}
    for entry in entries:
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
            newest = segments.newest(clip.stream, clip.first_index)
            last = clip.first_index if newest is None else newest
        # A range, not a set of indexes: a signed clip-end may name index 2^63.
        covered[clip.stream].append((clip.first_index, last))
    in_clips = {stream: Intervals(ranges) for stream, ranges in covered.items()}
    loose = sorted(
        (stream, index)
        for stream, index in segments.by_key
        if stream not in in_clips or index not in in_clips[stream]
    )
    runs: list[Clip] = []
    for stream, index in loose:
        run = runs[-1] if runs else None
        if run is not None and run.stream == stream and run.last_index == index - 1:
            run.last_index = index
        else:
            time_us = segments.by_key[(stream, index)].contents.time_us  # type: ignore[union-attr]
            runs.append(Clip(f"{stream}-{index}", stream, index, index, time_us))
    return sorted([*clips.values(), *runs], key=lambda c: c.time_us)


def _is_id(value: object) -> TypeGuard[str]:
    """Clip and stream ids become file names: only 32 lower-case hex digits are accepted."""
    return isinstance(value, str) and bool(_ID.fullmatch(value))


def _is_index(value: object) -> TypeGuard[int]:
    return type(value) is int


_ID = re.compile(r"[0-9a-f]{32}")


class Bodies(Protocol):
    """Where a clip writer gets the bodies of verified objects."""

    def write(self, parts: list[Entry], path: Path, notes: list[str]) -> list[Entry] | None:
        """Write the bodies of ``parts``, in order, as a new private file at ``path``.

        The first part is required: without its body nothing is left at ``path`` and the
        answer is None. Any other part whose body cannot be had is left out, with a line
        in ``notes``. Returns the parts written after the first."""
        ...

    def body(self, entry: Entry, notes: list[str]) -> bytes | memoryview | None:
        """The body of ``entry`` (empty for an event without a snapshot), or None, with a
        line in ``notes``, when it cannot be had."""
        ...


class Reopened:
    """Bodies read and opened again from ``source``: the source may have changed since it
    was verified, so each must still be the very object verified."""

    def __init__(self, source: ObjectSource, reader: Reader) -> None:
        self.source = source
        self.reader = reader

    def body(self, entry: Entry, notes: list[str]) -> memoryview | None:
        try:
            opened = self.reader.open(self.source.read(entry.name))
        except (SealingError, ObjectUnreadable) as exc:
            notes.append(f"{entry.name} could not be re-read: {exc}")
            return None
        if opened.chain_hash != entry.chain_hash:
            notes.append(f"{entry.name} could not be re-read: it changed since it was verified")
            return None
        return opened.body

    def write(self, parts: list[Entry], path: Path, notes: list[str]) -> list[Entry] | None:
        written = []
        with _private_file(path) as out:
            first = self.body(parts[0], notes)
            if first is not None:
                out.write(first)
                for entry in parts[1:]:
                    body = self.body(entry, notes)
                    if body is not None:
                        out.write(body)
                        written.append(entry)
        if first is None:
            path.unlink()
            return None
        return written


class _Piece(NamedTuple):
    """Where one body was kept: a spool file, and its bytes there."""

    file: _SpoolFile
    offset: int
    length: int


class _SpoolFile:
    """One temporary file of plaintext bodies in the destination folder, and whose they are."""

    __slots__ = ("fd", "names", "next_index", "path", "size")

    def __init__(self, directory: Path) -> None:
        self.fd, name = tempfile.mkstemp(prefix=".export-", suffix=".part", dir=directory)
        self.path: Path | None = Path(name)  # None once renamed into place
        self.size = 0
        self.names: list[str] = []
        self.next_index = 0  # for a stream's file: the index its next segment would have

    def append(self, name: str, body: bytes | memoryview) -> _Piece:
        piece = _Piece(self, self.size, len(body))
        _write_all(self.fd, body)
        self.size += piece.length
        self.names.append(name)
        return piece

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Spool:
    """Keeps, during the one verification pass, the bodies an export needs, in temporary
    files (mode 0600) in the destination folder: plaintext is only ever written where the
    user asked for it, and each object is read and opened once.

    Each stream's segments are appended to a file that starts with a copy of the stream's
    init segment, and a new file begins where the doorbell starts or ends a clip (an event
    naming the next index as its first, a clip-end naming the last one appended) or where
    an index is skipped. A clip as a doorbell records it is then exactly one such file,
    renamed into place with no copy; any other clip is copied together from the pieces.
    Every file not renamed into place is deleted on leaving the ``with`` block."""

    MAX_OPEN = 16  # streams written at once: each holds a file descriptor

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: list[_SpoolFile] = []
        self._pieces: dict[str, _Piece] = {}  # by object name
        self._inits: dict[str, str] = {}  # stream: name of its (first) init segment
        self._streams: dict[str, _SpoolFile] = {}  # the open file of each stream
        self._claims: Counter[_SpoolFile] = Counter()  # per file: the clips using it
        self._others = self._new_file()  # init segments and snapshots

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        for spooled in self._files:
            spooled.close()
            if spooled.path is not None:
                spooled.path.unlink(missing_ok=True)

    def keep(self, entry: Entry, body: memoryview) -> None:
        contents = entry.contents
        if contents is None:
            return
        meta = contents.meta
        stream = meta.get("stream")
        if contents.kind is Kind.INIT and isinstance(stream, str) and stream not in self._inits:
            self._inits[stream] = entry.name
            self._pieces[entry.name] = self._others.append(entry.name, body)
        elif contents.kind is Kind.SEGMENT and _is_id(stream) and _is_index(meta.get("index")):
            self._segment(entry.name, stream, meta["index"], body)
        elif contents.kind is Kind.EVENT:
            if body:
                self._pieces[entry.name] = self._others.append(entry.name, body)
            if _is_id(stream) and meta.get("first_index") == self._next_index(stream):
                self._end_file(stream)
        elif contents.kind is Kind.NOTICE and meta.get("notice") == "clip-end":
            last = meta.get("last_index")
            if _is_id(stream) and _is_index(last) and last + 1 == self._next_index(stream):
                self._end_file(stream)

    def done(self) -> None:
        """Verification is over: no more bodies come."""
        for stream in list(self._streams):
            self._end_file(stream)

    def claim(self, parts: list[Entry]) -> None:
        """A clip will be written from ``parts``: a file it shares with another clip is
        copied from, never renamed away."""
        self._claims.update({self._pieces[entry.name].file for entry in parts})

    def write(self, parts: list[Entry], path: Path, notes: list[str]) -> list[Entry] | None:
        whole = self._take_whole(parts)
        if whole is not None:
            os.replace(whole, path)
            return parts[1:]
        with _private_file(path) as out:
            target = out.fileno()
            run: _Piece | None = None  # pieces next to each other in one file, copied at once
            for entry in parts:
                piece = self._pieces[entry.name]
                if (
                    run is not None
                    and run.file is piece.file
                    and run.offset + run.length == piece.offset
                ):
                    run = run._replace(length=run.length + piece.length)
                    continue
                if run is not None:
                    _copy_range(run, target)
                run = piece
            if run is not None:
                _copy_range(run, target)
        return parts[1:]

    def body(self, entry: Entry, notes: list[str]) -> bytes:
        piece = self._pieces.get(entry.name)
        if piece is None:
            return b""  # an event without a snapshot
        with _reading(piece.file) as fd:
            return os.pread(fd, piece.length, piece.offset)

    def _take_whole(self, parts: list[Entry]) -> Path | None:
        """The file that holds exactly ``parts`` and that no other clip uses, if any: it is
        the clip's from now on, and no longer the spool's to delete."""
        if len(parts) < 2:
            return None
        spooled = self._pieces[parts[1].name].file
        if (
            spooled is self._others
            or spooled.path is None
            or self._claims[spooled] != 1
            or spooled.names != [entry.name for entry in parts]
        ):
            return None
        path, spooled.path = spooled.path, None
        return path

    def _next_index(self, stream: str) -> int | None:
        spooled = self._streams.get(stream)
        return spooled.next_index if spooled is not None and len(spooled.names) > 1 else None

    def _segment(self, name: str, stream: str, index: int, body: memoryview) -> None:
        spooled = self._streams.get(stream)
        if spooled is not None and spooled.next_index != index:
            self._end_file(stream)
            spooled = None
        if spooled is None:
            if len(self._streams) >= self.MAX_OPEN:
                self._end_file(next(iter(self._streams)))
            spooled = self._streams[stream] = self._new_file()
            init = self._inits.get(stream)
            if init is not None:
                _copy_range(self._pieces[init], spooled.fd)
                spooled.size = self._pieces[init].length
            # A file begun before its stream's init segment came never holds a whole clip.
            spooled.names.append(init or "")
        self._pieces[name] = spooled.append(name, body)
        spooled.next_index = index + 1

    def _end_file(self, stream: str) -> None:
        spooled = self._streams.pop(stream, None)
        if spooled is not None:
            spooled.close()

    def _new_file(self) -> _SpoolFile:
        spooled = _SpoolFile(self.directory)
        self._files.append(spooled)
        return spooled


class ClipWriter:
    """Writes clips from verified records, taking each object's body from ``bodies``.

    Built once for a whole verification, so that each clip then costs only its own
    objects. Every file written is plaintext footage: mode 0600, in a folder made 0700."""

    def __init__(self, bodies: Bodies, verification: Verification, out_dir: Path) -> None:
        self.bodies = bodies
        self.out_dir = out_dir
        self._inits: dict[str, Entry] = {}
        for entry in verification.entries:
            if entry.contents is not None and entry.contents.kind is Kind.INIT:
                stream = entry.contents.meta.get("stream")
                if isinstance(stream, str):
                    self._inits.setdefault(stream, entry)
        self._segments = _Segments(verification.entries)
        self.clips = _plan(verification.entries, self._segments)

    def present(self, clip: Clip) -> int:
        """How many of the clip's media segments are present (to the newest, unended)."""
        return len(self._present(clip))

    def parts(self, clip: Clip) -> list[Entry]:
        """The objects the clip is written from: its init segment, then the media segments
        present; empty without the init segment."""
        init = self._inits.get(clip.stream)
        return [] if init is None else [init, *(entry for _, entry in self._present(clip))]

    def _present(self, clip: Clip) -> list[tuple[int, Entry]]:
        """(index, entry) of the clip's media segments present, to the newest if unended."""
        last = clip.last_index
        if last is None:
            last = self._segments.newest(clip.stream, clip.first_index)
        if last is None:
            return []
        return self._segments.between(clip.stream, clip.first_index, last)

    def export(self, clip: Clip, report: ExportReport) -> ExportedClip | None:
        """Write one clip as ``<time>-<label>-<id>.mp4`` (and a .jpg snapshot); notes on
        what is missing go to ``report.skipped``. None when nothing could be written."""
        self.out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(clip.time_us / 1e6, UTC).strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{clip.label}-{clip.clip_id[:8]}"
        init = self._inits.get(clip.stream)
        if init is None:
            report.skipped.append(
                f"{base}: the init segment of stream {clip.stream[:8]} is missing"
            )
            return None
        last = clip.last_index
        if last is None:
            newest = self._segments.newest(clip.stream, clip.first_index)
            last = clip.first_index - 1 if newest is None else newest
            report.skipped.append(
                f"{base}: no end marker (recording interrupted); exported what exists"
            )
        path = self.out_dir / f"{base}.mp4"
        partial = self.out_dir / f".{base}.mp4.part"
        present = self._present(clip)
        notes: list[str] = []
        written = self.bodies.write([init, *(entry for _, entry in present)], partial, notes)
        report.skipped.extend(f"{base}: {note}" for note in notes)
        if written is None:
            return None
        # The segments present, not every index a (signed) notice names: a clip-end may
        # claim index 2^63. Missing runs are reported as runs.
        expected = clip.first_index
        for index in [*(index for index, _ in present), last + 1]:
            if index > expected:
                run = (
                    f"segment {expected} is"
                    if index == expected + 1
                    else f"segments {expected}..{index - 1} are"
                )
                report.skipped.append(f"{base}: {run} missing; the clip has a gap")
            expected = index + 1
        if not written:
            partial.unlink()
            report.skipped.append(f"{base}: no media segment could be exported")
            return None
        os.replace(partial, path)
        seconds = 0.0
        first_start: float | None = None
        for entry in written:
            meta = entry.contents.meta if entry.contents else {}
            seconds += _seconds(meta.get("duration")) or 0.0
            if first_start is None:
                first_start = _seconds(meta.get("start"))
        snapshot = self._snapshot(clip, path, report, base)
        pre_roll = None
        if clip.position is not None and first_start is not None:
            pre_roll = clip.position - first_start
        exported = ExportedClip(path, clip.label, len(written), seconds, snapshot, pre_roll)
        report.clips.append(exported)
        return exported

    def _snapshot(self, clip: Clip, path: Path, report: ExportReport, base: str) -> Path | None:
        """The first snapshot of the clip's events, written next to the clip."""
        for event in clip.snapshots:
            notes: list[str] = []
            body = self.bodies.body(event, notes)
            report.skipped.extend(f"{base}: {note}" for note in notes)
            if body:
                snapshot = path.with_suffix(".jpg")
                unfinished = self.out_dir / f".{snapshot.name}.part"
                with _private_file(unfinished) as out:
                    out.write(body)
                os.replace(unfinished, snapshot)
                return snapshot
        return None


class ClipExporter(ClipWriter):
    """A clip writer that reads each object again from ``source`` when its body is needed:
    one object in memory at a time."""

    def __init__(
        self, source: ObjectSource, reader: Reader, verification: Verification, out_dir: Path
    ) -> None:
        super().__init__(Reopened(source, reader), verification, out_dir)


def export_clips(
    source: ObjectSource, reader: Reader, verification: Verification, out_dir: Path
) -> ExportReport:
    """Write each planned clip as ``out_dir/<time>-<label>-<id>.mp4`` (and a .jpg snapshot),
    reading again from ``source`` the objects ``verification`` checked."""
    report = ExportReport()
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    exporter = ClipExporter(source, reader, verification, out_dir)
    for clip in exporter.clips:
        exporter.export(clip, report)
    return report


def verify_and_export(
    source: ObjectSource,
    reader: Reader,
    remembered: Mapping[bytes, Remembered] | None,
    out_dir: Path,
) -> tuple[Verification, ExportReport]:
    """Verify ``source`` (`verify_source`) and write each planned clip into ``out_dir``,
    reading and opening every object once: the bodies are kept in the destination folder
    while the chain is checked (`Spool`)."""
    report = ExportReport()
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Spool(out_dir) as spool:
        verification = verify_source(source, reader, remembered, spool)
        spool.done()
        writer = ClipWriter(spool, verification, out_dir)
        for clip in writer.clips:
            spool.claim(writer.parts(clip))
        for clip in writer.clips:
            writer.export(clip, report)
    return verification, report


@contextlib.contextmanager
def _private_file(path: Path) -> Iterator[BinaryIO]:
    """A new file only its owner can read, whatever the umask, replacing a leftover."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover of an interrupted run keeps its old mode otherwise
    with os.fdopen(fd, "wb") as out:
        yield out


@contextlib.contextmanager
def _reading(spooled: _SpoolFile) -> Iterator[int]:
    """A descriptor to read ``spooled`` through: its own while it is being written."""
    if spooled.fd >= 0:
        yield spooled.fd
        return
    assert spooled.path is not None
    fd = os.open(spooled.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _copy_range(piece: _Piece, target: int) -> None:
    """Append the bytes of ``piece`` to the file ``target``."""
    offset, length = piece.offset, piece.length
    with _reading(piece.file) as fd:
        while length:
            chunk = os.pread(fd, min(length, CHUNK), offset)
            if not chunk:
                raise OSError(errno.EIO, f"{piece.file.path} is shorter than what was kept in it")
            _write_all(target, chunk)
            offset += len(chunk)
            length -= len(chunk)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
