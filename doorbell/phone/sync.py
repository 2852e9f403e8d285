"""Keeps a phone's copy of a bucket: fetches new sealed objects, verifies them, exports new clips.

The copy lives in one directory:

- ``objects/``: every sealed object fetched so far. Each is fetched into a temporary
  file (never more than the largest sealed object), kept only once its signature
  verifies and its header matches its name, and then renamed into place: junk placed
  under an object's name is never kept, so the real object is fetched once it arrives,
  and an interrupted sync leaves whole objects only;
- ``clips/``: the exported ``.mp4`` files (and snapshots);
- ``sync-state.json``: which clips were exported, and whether they were whole then,
  so a clip is exported once, and again only when more of an unfinished one arrives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from doorbell.common.locks import LockBusy, hold_lock
from doorbell.common.s3auth import (
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    MissingCredentials,
    s3_credentials,
)
from doorbell.common.secrets import SecretFileError
from doorbell.phone.chain import Code, Finding, Verification, verify_source
from doorbell.phone.export import ClipExporter, ExportedClip, ExportReport
from doorbell.phone.memory import NOTHING, PhoneMemory, Remembered
from doorbell.phone.objects import (
    NOT_AN_OBJECT_NAME,
    OBJECT_NAME,
    Digest,
    DirectorySource,
    ObjectUnreadable,
    Writer,
    shown,
)
from doorbell.phone.s3source import DEFAULT_ENDPOINT, S3Source, parse_s3_url
from doorbell.sealing import (
    Reader,
    SealingError,
    loads_strict,
    object_name,
    sync_directory,
    write_atomic,
)

log = logging.getLogger(__name__)

OBJECTS = "objects"
CLIPS = "clips"
STATE = "sync-state.json"
LOCK = ".sync.lock"
STATE_VERSION = 1
# Leftovers of an interrupted run: fetches and write_atomic's temporaries, and export's
# partial clips and snapshots.
_LEFTOVER = re.compile(r"\..+\.(\d+\.tmp|mp4\.part|jpg\.part)")


class SyncError(Exception):
    """The sync cannot run as asked (bad source, credentials, output directory)."""


class SyncSource(Protocol):
    """Where sync fetches from: lists names, copies one object at a time into a file
    (bounded by the largest sealed object), and tells whether it still holds exactly some
    bytes. ``ignored`` lists, escaped, the names it passed over."""

    ignored: list[str]

    def names(self) -> list[str]: ...

    def copy(self, name: str, out: Writer) -> int: ...

    def describe(self, name: str) -> str: ...

    def holds(self, name: str, data: bytes) -> bool:
        """Whether object ``name`` is byte for byte ``data``; raises `ObjectUnreadable`."""
        ...


class LocalSource(DirectorySource):
    """A local folder of sealed objects (a NAS or USB mount the local sink writes)."""

    def holds(self, name: str, data: bytes) -> bool:
        try:
            if (self.directory / name).stat().st_size != len(data):
                return False
        except OSError as exc:
            raise ObjectUnreadable(f"cannot read: {exc.strerror or exc}") from None
        digest = Digest()
        self.copy(name, digest)
        return digest.matches(data)


@dataclass(frozen=True)
class ExportRecord:
    """What ``sync-state.json`` remembers of one exported clip."""

    file: str
    segments: int  # media segments of the clip present when it was exported
    ended: bool  # its end marker was present
    complete: bool  # ended, and every segment made it into the file


@dataclass
class SyncReport:
    source: str
    objects: Path
    fetched: list[str] = field(default_factory=list)
    present: int = 0
    ignored: list[Finding] = field(default_factory=list)  # names passed over, escaped
    fetch_problems: list[Finding] = field(default_factory=list)
    verification: Verification = field(default_factory=Verification)
    clips: list[ExportedClip] = field(default_factory=list)
    updated: list[ExportedClip] = field(default_factory=list)  # re-exports of unfinished clips
    export_notes: list[str] = field(default_factory=list)

    @property
    def announced(self) -> list[Finding]:
        """Gaps the doorbell made on purpose and said so (quota evictions, restarts)."""
        return [f for f in self.verification.findings if f.code == Code.ANNOUNCED]

    @property
    def unexplained(self) -> list[Finding]:
        """Gaps nobody announced: deleted in the bucket, or never delivered."""
        gaps = (Code.MISSING, Code.NEWEST_MISSING, Code.DELETED)
        return [f for f in self.verification.problems if f.code in gaps]

    @property
    def problems(self) -> list[Finding]:
        """Every problem other than unexplained gaps: tampering, forks, unfetchable objects."""
        gaps = self.unexplained
        return self.fetch_problems + [f for f in self.verification.problems if f not in gaps]

    @property
    def notes(self) -> list[Finding]:
        announced = self.announced
        return [f for f in self.verification.findings if not f.problem and f not in announced]

    @property
    def ok(self) -> bool:
        return not self.fetch_problems and self.verification.ok


def open_source(
    spec: str,
    *,
    endpoint: str | None = None,
    region: str = "us-east-1",
    secure: bool = True,
    access_key_file: Path | None = None,
    secret_key_file: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> SyncSource:
    """The source SOURCE names: a local directory, or ``s3://bucket/prefix``.

    S3 credentials come from the two files, else from ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``. Raises `SyncError` or `S3SourceError` with the reason.
    """
    if spec.startswith("s3://"):
        parse_s3_url(spec)  # a mistyped URL is the first thing to report
        access_key, secret_key = _credentials(access_key_file, secret_key_file, environ)
        return S3Source(
            spec,
            endpoint=endpoint or DEFAULT_ENDPOINT,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            secure=secure,
        )
    if "://" in spec:
        scheme = spec.split("://", 1)[0]
        raise SyncError(f"{spec!r}: {scheme}:// is not supported: give a directory or s3://")
    try:
        return LocalSource(Path(spec))
    except NotADirectoryError as exc:
        raise SyncError(str(exc)) from None


def _credentials(
    access_key_file: Path | None, secret_key_file: Path | None, environ: Mapping[str, str]
) -> tuple[str, str]:
    if (access_key_file is None) != (secret_key_file is None):
        raise SyncError("give both --access-key-file and --secret-key-file, or neither")
    files = None
    if access_key_file is not None and secret_key_file is not None:
        files = ((access_key_file, "--access-key-file"), (secret_key_file, "--secret-key-file"))
    try:
        return s3_credentials(files, environ)
    except SecretFileError as exc:
        raise SyncError(str(exc)) from None
    except MissingCredentials:
        raise SyncError(
            "no S3 credentials: give --access-key-file and --secret-key-file, "
            f"or set {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}"
        ) from None


def sync(
    source: SyncSource, out_dir: Path, reader: Reader, memory: PhoneMemory | None = None
) -> SyncReport:
    """Fetch what ``out_dir/objects`` lacks, verify it all, export clips not exported yet.

    With ``memory`` (the phone's ``seen.json``) the copy is also checked against what the
    phone saw before, a bucket ending below the newest object the phone has seen is a
    problem, and what this sync verified is remembered for the next run."""
    objects, clips = out_dir / OBJECTS, out_dir / CLIPS
    try:
        # Only this phone's user: sealed objects reveal sizes and times, clips are footage.
        for directory in (out_dir, objects, clips):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SyncError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    with _exclusive(out_dir / LOCK):
        _remove_leftovers(objects)
        _remove_leftovers(clips)
        report = SyncReport(source.describe(""), objects)
        local = DirectorySource(objects)
        listed = _fetch(source, local, reader, report)
        remembered = memory.load() if memory is not None else {}
        report.verification = verify_source(local, reader, remembered)
        _deleted_from_source(source, report, listed)
        _newest_missing(report.verification, listed, remembered)
        _export(local, reader, out_dir, report)
        if memory is not None:
            # Authentic objects are facts whatever else is wrong with the bucket: remembering
            # them can only make later checks stricter. Last, so that a run that fails on the
            # way remembers nothing it did not finish.
            memory.update(report.verification.seen)
    return report


def _deleted_from_source(source: SyncSource, report: SyncReport, listed: set[str]) -> None:
    """Objects this copy fetched earlier that the source no longer lists.

    The device never deletes from a sink that took an object (quota evicts only from its
    own queues), so each one is a deletion in the bucket, announced or not."""
    for entry in report.verification.entries:
        if entry.name not in listed:
            report.verification.add(
                source.describe(entry.name),
                f"seq {entry.seq} was fetched by an earlier sync and is no longer there: "
                "deleted from the bucket since an earlier sync (this copy keeps it)",
                code=Code.DELETED,
            )


def _newest_missing(
    verification: Verification, listed: set[str], remembered: Mapping[bytes, Remembered]
) -> None:
    """The bucket must hold the newest object of each device that this phone has seen.

    Objects alone cannot show that the newest ones were deleted; a phone that saw a higher
    seq (live over MQTT, or in another copy) can. When this copy fetched that object from
    the bucket before, its deletion is certain and reported as such
    (`_deleted_from_source`); otherwise the bucket may only be behind (the doorbell
    uploads after it notifies). Only devices with objects in this copy are checked: one
    phone may follow doorbells that upload to different buckets."""
    newest: dict[bytes, int] = {}
    fetched: set[tuple[bytes, int]] = set()
    for entry in verification.entries:
        device = entry.device_id
        newest.setdefault(device, -1)
        fetched.add((device, entry.seq))
        if entry.name in listed:
            newest[device] = max(newest[device], entry.seq)
    for device, bucket_max in newest.items():
        head = remembered.get(device, NOTHING).head
        if head is None or head.seq <= bucket_max or (device, head.seq) in fetched:
            continue
        ends = f"ends at seq {bucket_max}" if bucket_max >= 0 else "holds none of its objects"
        verification.add(
            f"device {device.hex()[:16]}",
            f"newest objects not in the bucket yet, or deleted: this phone has seen seq "
            f"{head.seq} (live, or in another copy), but the bucket {ends}; sync again once "
            "the doorbell has uploaded: still missing then, they were deleted",
            code=Code.NEWEST_MISSING,
        )


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One sync per directory at a time: a second one would race on the same files."""
    try:
        handle = hold_lock(path, wait=False)
    except OSError as exc:
        raise SyncError(f"cannot open {path}: {exc.strerror or exc}") from None
    except LockBusy:
        raise SyncError(f"another sync is writing to {path.parent}") from None
    with handle:
        yield


def _remove_leftovers(directory: Path) -> None:
    # Safe under the lock: no other sync can be writing these.
    for path in directory.iterdir():
        if _LEFTOVER.fullmatch(path.name) and path.is_file():
            log.info("removing %s, left by an interrupted sync", path)
            path.unlink()


def _fetch(
    source: SyncSource, local: DirectorySource, reader: Reader, report: SyncReport
) -> set[str]:
    """Copy what ``local`` lacks; returns the object names the source lists now.

    Only FORMAT.md section 8 names of the doorbells this phone trusts become paths; every
    other name is reported, escaped, and left alone."""
    names = source.names()
    report.ignored.extend(Finding(name, NOT_AN_OBJECT_NAME, False) for name in source.ignored)
    trusted = {device.device_id.hex()[:16] for device in reader.devices}
    listed = set()
    for name in names:
        match = OBJECT_NAME.fullmatch(name)
        if match is None:
            report.ignored.append(Finding(shown(name), NOT_AN_OBJECT_NAME, False))
            continue
        if match["device"] not in trusted:
            report.ignored.append(
                Finding(name, "named for a doorbell this phone does not trust", False)
            )
            continue
        listed.add(name)
        damaged = None
        if os.path.lexists(local.directory / name):
            try:
                have = local.read(name)
            except ObjectUnreadable as exc:
                damaged = str(exc)
            else:
                damaged = _compare(source, reader, name, have, report)
                if damaged is None:
                    continue
        problem = _fetch_one(source, reader, local.directory, name)
        if problem is not None:
            report.fetch_problems.append(Finding(source.describe(name), problem))
        elif damaged is not None:
            # Kept copies were verified when fetched: this one changed on this phone since.
            report.fetch_problems.append(
                Finding(
                    local.describe(name),
                    f"the copy fetched earlier does not verify ({damaged}): altered since it "
                    "was fetched; replaced with the source's, which verifies",
                )
            )
        else:
            report.fetched.append(name)
            log.debug("fetched %s", source.describe(name))
    return listed


def _compare(
    source: SyncSource, reader: Reader, name: str, have: bytes, report: SyncReport
) -> str | None:
    """Check the copy kept earlier against the source. Returns why the copy here is not
    authentic (to be fetched again), or None when nothing is to be fetched."""
    try:
        same = source.holds(name, have)
    except ObjectUnreadable as exc:
        report.fetch_problems.append(
            Finding(source.describe(name), f"not compared with this copy: {exc}")
        )
        return None
    if same:
        report.present += 1
        return None
    damaged = _not_authentic(reader, name, have)
    if damaged is None:
        # Sealed objects never change, and the copy here is the authentic one: the source
        # changed. The copy fetched earlier is the evidence; it is kept.
        report.fetch_problems.append(
            Finding(
                source.describe(name),
                "differs from the copy fetched earlier: replaced in the source; "
                "kept the earlier copy",
            )
        )
    return damaged


def _fetch_one(source: SyncSource, reader: Reader, objects: Path, name: str) -> str | None:
    """Fetch ``name`` into a temporary file, verify it, and only then rename it into place.
    Returns why it was not kept (it is fetched again next time), or None."""
    target = objects / name
    temporary = objects / f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            # Ciphertext, readable by other apps on purpose, as the local sink writes it.
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb", closefd=False) as out:
                source.copy(name, out)
            os.fsync(fd)
        finally:
            os.close(fd)
        data = temporary.read_bytes()
        problem = _not_authentic(reader, name, data)
        if problem is not None:
            temporary.unlink()
            return f"not kept: {problem}; fetched again on the next sync"
        os.replace(temporary, target)
        sync_directory(objects)
    except ObjectUnreadable as exc:
        temporary.unlink(missing_ok=True)
        return f"not fetched: {exc}"
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise SyncError(f"cannot write {target}: {exc.strerror or exc}") from None
    return None


def _not_authentic(reader: Reader, name: str, data: bytes) -> str | None:
    """Why ``data`` is not the object ``name`` names, signed by its doorbell; None if it is."""
    try:
        envelope = reader.verify(data)
    except SealingError as exc:
        return f"{exc.__class__.__name__}: {exc}"
    expected = object_name(envelope.device_id, envelope.seq)
    if expected != name:
        return f"holds seq {envelope.seq}, whose name is {expected}"
    return None


def _export(source: DirectorySource, reader: Reader, out_dir: Path, report: SyncReport) -> None:
    state_path = out_dir / STATE
    records = _load_state(state_path)
    exporter = ClipExporter(source, reader, report.verification, out_dir / CLIPS)
    for clip in exporter.clips:
        available = exporter.present(clip)
        ended = bool(clip.types) and clip.last_index is not None
        before = records.get(clip.clip_id)
        if before is not None:
            grown = available > before.segments or (ended and not before.ended)
            if before.complete or not grown:
                continue
        exported = ExportReport()
        try:
            clip_file = exporter.export(clip, exported)
        except OSError as exc:
            raise SyncError(f"cannot write to {out_dir / CLIPS}: {exc.strerror or exc}") from None
        report.export_notes.extend(exported.skipped)
        if clip_file is None:
            continue  # nothing written (no init yet): tried again next time
        whole = clip.last_index is not None and clip_file.segments == (
            clip.last_index - clip.first_index + 1
        )
        if before is None:
            report.clips.append(clip_file)
        else:
            report.updated.append(clip_file)
            if before.file != clip_file.path.name:
                # The clip's name changed with its label (a ring joined a motion clip).
                for stale in (before.file, Path(before.file).with_suffix(".jpg").name):
                    (out_dir / CLIPS / stale).unlink(missing_ok=True)
        records[clip.clip_id] = ExportRecord(
            clip_file.path.name, available, ended, ended and whole and not exported.skipped
        )
        _save_state(state_path, records)


def _load_state(path: Path) -> dict[str, ExportRecord]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SyncError(_bad_state(path, exc.strerror or str(exc))) from None
    document: Any = loads_strict(raw, lambda reason: SyncError(_bad_state(path, reason)))
    if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
        raise SyncError(_bad_state(path, f"expected version {STATE_VERSION}"))
    clips = document.get("clips")
    if not isinstance(clips, dict):
        raise SyncError(_bad_state(path, "no 'clips' object"))
    records = {}
    for clip_id, record in clips.items():
        if (
            not isinstance(record, dict)
            or set(record) != {"file", "segments", "ended", "complete"}
            or not isinstance(record["file"], str)
            or type(record["segments"]) is not int
            or not all(type(record[k]) is bool for k in ("ended", "complete"))
        ):
            raise SyncError(
                _bad_state(
                    path,
                    f"clip {clip_id[:40]!r}: expected file (string), segments (integer), "
                    "ended and complete (true or false)",
                )
            )
        records[clip_id] = ExportRecord(
            record["file"], record["segments"], record["ended"], record["complete"]
        )
    return records


def _bad_state(path: Path, reason: str) -> str:
    return f"{path} is damaged ({reason}); remove it to export every clip again"


def _save_state(path: Path, records: Mapping[str, ExportRecord]) -> None:
    document = {
        "version": STATE_VERSION,
        "clips": {clip_id: asdict(record) for clip_id, record in sorted(records.items())},
    }
    try:
        write_atomic(path, json.dumps(document, indent=2).encode() + b"\n")
    except OSError as exc:
        raise SyncError(f"cannot write {path}: {exc.strerror or exc}") from None
