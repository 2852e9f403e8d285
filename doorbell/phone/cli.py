"""``doorbell-phone``: the enrolled phone's reference client."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from doorbell.phone.chain import verify_source
from doorbell.phone.export import export_clips
from doorbell.phone.home import PhoneHome, default_home
from doorbell.phone.objects import DirectorySource
from doorbell.sealing import DevicePublicKey, SealingError, Suite

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    home = PhoneHome(args.home or default_home())
    try:
        return int(args.run(home, args))
    except (SealingError, NotADirectoryError) as exc:
        print(f"doorbell-phone: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="doorbell-phone",
        description="Verify, decrypt and export Doorbell footage sealed to this phone.",
    )
    parser.add_argument(
        "--home",
        type=Path,
        help="the phone's key directory (default: $DOORBELL_PHONE_HOME or "
        "~/.config/doorbell-phone)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create this phone's key pair")
    init.add_argument(
        "--suite",
        choices=[s.label for s in Suite],
        default=Suite.MLKEM768_X25519.label,
        help="mlkem768-x25519 (post-quantum hybrid, default) or x25519",
    )
    init.set_defaults(run=_init)

    pubkey = commands.add_parser("pubkey", help="print the key to give 'doorbell keys add'")
    pubkey.set_defaults(run=_pubkey)

    trust = commands.add_parser("trust", help="pin a doorbell's device key")
    trust.add_argument("device_key", metavar="DEVICE-KEY", help="from 'doorbell keys show'")
    trust.add_argument("--name", default="doorbell", help="a name for this doorbell")
    trust.set_defaults(run=_trust)

    verify = commands.add_parser("verify", help="check every sealed object in a directory")
    verify.add_argument("path", type=Path, metavar="PATH")
    verify.set_defaults(run=_verify)

    export = commands.add_parser("export", help="decrypt and assemble clips into .mp4 files")
    export.add_argument("path", type=Path, metavar="PATH")
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.set_defaults(run=_export)
    return parser


def _init(home: PhoneHome, args: argparse.Namespace) -> int:
    identity = home.init(Suite.from_label(args.suite))
    print(f"created a {identity.suite.label} key in {home.directory}")
    print("enrol this phone on the doorbell with:")
    print(f"  doorbell keys add NAME {identity.public_key().to_string()}")
    return EXIT_OK


def _pubkey(home: PhoneHome, args: argparse.Namespace) -> int:
    print(home.identity().public_key().to_string())
    return EXIT_OK


def _trust(home: PhoneHome, args: argparse.Namespace) -> int:
    key = DevicePublicKey.from_string(args.device_key)
    if home.trust(key, args.name):
        print(f"now trusting doorbell {args.name!r} ({key.fingerprint})")
    else:
        print(f"doorbell {key.fingerprint} was already trusted")
    return EXIT_OK


def _verify(home: PhoneHome, args: argparse.Namespace) -> int:
    source = DirectorySource(args.path)
    reader = home.reader()
    result = verify_source(source, reader)
    for name in source.ignored:
        print(f"note   {name}: not a .sealed file, ignored")
    for finding in result.findings:
        print(f"{'FAIL' if finding.problem else 'note'}   {finding}")
    total = len(result.entries) + sum(
        1 for f in result.problems if not f.where.startswith("device ")
    )
    if result.ok:
        print(f"ok: {len(result.entries)} object(s) verified in {args.path}")
        return EXIT_OK
    print(f"FAILED: {len(result.problems)} problem(s) among {total} object(s) in {args.path}")
    return EXIT_FAILED


def _export(home: PhoneHome, args: argparse.Namespace) -> int:
    source = DirectorySource(args.path)
    reader = home.reader()
    result = verify_source(source, reader)
    for finding in result.problems:
        print(f"skipped  {finding}")
    try:
        report = export_clips(source, reader, result, args.out)
    except OSError as exc:
        print(f"doorbell-phone: cannot write to {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    for clip in report.clips:
        extra = f", snapshot {clip.snapshot.name}" if clip.snapshot else ""
        print(
            f"clip     {clip.path}  ({clip.label}, {clip.segments} segment(s), "
            f"{clip.seconds:.1f} s{extra})"
        )
    for line in report.skipped:
        print(f"skipped  {line}")
    if not report.clips:
        print("no clip to export")
    return EXIT_OK if result.ok and not report.skipped else EXIT_FAILED
