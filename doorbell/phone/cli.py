"""``doorbell-phone``: the enrolled phone's reference client."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from doorbell.common.durations import parse_duration
from doorbell.phone.chain import verify_source
from doorbell.phone.enrol import EnrolError, EnrolOptions, enrol
from doorbell.phone.export import verify_and_export
from doorbell.phone.home import Broker, PhoneHome, default_home
from doorbell.phone.live import watch_live
from doorbell.phone.manage import (
    Access,
    ManageError,
    Screen,
    create_recovery,
    invite,
    recover,
    revoke,
)
from doorbell.phone.objects import NOT_AN_OBJECT_NAME, DirectorySource
from doorbell.phone.s3source import DEFAULT_ENDPOINT, S3SourceError
from doorbell.phone.sync import SyncError, open_source, sync
from doorbell.phone.watch import WatchError, WatchOptions, watch
from doorbell.phone.web import (
    DEFAULT_PORT,
    App,
    WebError,
    open_server,
    serve_until_stopped,
)
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

    pubkey = commands.add_parser(
        "pubkey",
        help="print this phone's identity (its public key and signing key) for 'doorbell keys add'",
    )
    pubkey.set_defaults(run=_pubkey)

    trust = commands.add_parser("trust", help="pin a doorbell's device key")
    trust.add_argument("device_key", metavar="DEVICE-KEY", help="from 'doorbell keys show'")
    trust.add_argument("--name", default="doorbell", help="a name for this doorbell")
    trust.set_defaults(run=_trust)

    verify = commands.add_parser(
        "verify",
        help="check every sealed object in a directory",
        description="Check every sealed object in PATH against the pinned doorbells and "
        "against what this phone has seen before (seen.json, written by sync and watch; "
        "verify reads it and never writes it).",
    )
    verify.add_argument("path", type=Path, metavar="PATH")
    verify.set_defaults(run=_verify)

    export = commands.add_parser("export", help="decrypt and assemble clips into .mp4 files")
    export.add_argument("path", type=Path, metavar="PATH")
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.set_defaults(run=_export)

    watch_ = commands.add_parser(
        "watch",
        help="print events live from the MQTT broker, verified and decrypted",
        description="Subscribe to PREFIX/+/event and PREFIX/+/keyring, verify and decrypt "
        "each message, print one line per event (and per keyring change), and save "
        "snapshots. Bad messages are reported on stderr and skipped, and so is an event "
        "that is not newer than what this phone has seen (a replay, never a ring). What it "
        "saw is remembered in seen.json.",
    )
    watch_.add_argument("--host", required=True, help="the MQTT broker")
    watch_.add_argument("--port", type=int, help="default 1883, or 8883 with --tls")
    watch_.add_argument("--tls", action="store_true", help="connect with TLS")
    watch_.add_argument("--ca-file", type=Path, metavar="FILE", help="CA for TLS; implies --tls")
    watch_.add_argument("--username")
    watch_.add_argument("--password-file", type=Path, metavar="FILE")
    watch_.add_argument("--prefix", default="doorbell", help="the doorbells' topic prefix")
    watch_.add_argument("--out", type=Path, metavar="DIR", help="save snapshots here")
    watch_.add_argument("--json", action="store_true", help="one JSON object per line")
    watch_.add_argument("--count", type=int, metavar="N", help="exit after N events")
    watch_.add_argument(
        "--timeout", type=float, metavar="S", help="give up after S seconds (exit 1)"
    )
    watch_.set_defaults(run=_watch)

    sync_ = commands.add_parser(
        "sync",
        help="fetch new objects into DIR/objects, verify them all, export new clips",
        description="Copy the sealed objects DIR/objects lacks from SOURCE (a directory or "
        "s3://BUCKET/PREFIX), verify everything in DIR/objects, and export clips not "
        "exported before into DIR/clips. Safe to interrupt: the next run continues. "
        "The newest object of each doorbell is remembered in seen.json; a bucket that ends "
        "below it fails. "
        "S3 credentials come from the two key files, else from AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY.",
    )
    sync_.add_argument("source", metavar="SOURCE", help="a directory or s3://BUCKET/PREFIX")
    sync_.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="this phone's copy of the footage"
    )
    sync_.add_argument(
        "--endpoint",
        metavar="HOST:PORT",
        help=f"the S3-compatible endpoint (default {DEFAULT_ENDPOINT})",
    )
    sync_.add_argument("--region", default="us-east-1", help="the bucket's region")
    sync_.add_argument("--insecure", action="store_true", help="plain http instead of https")
    sync_.add_argument("--access-key-file", type=Path, metavar="FILE", help="the S3 access key")
    sync_.add_argument("--secret-key-file", type=Path, metavar="FILE", help="the S3 secret key")
    sync_.set_defaults(run=_sync)

    enroll = commands.add_parser(
        "enroll",
        help="join a doorbell through the link 'doorbell enroll' shows",
        description="Join a doorbell: send this phone's identity through the doorbell's "
        "broker, show the confirmation code to compare with the doorbell's, and once the "
        "owner confirms there, pin the doorbell's key. Creates this phone's keys first if "
        "it has none.",
    )
    enroll.add_argument("link", metavar="LINK", help="doorbell:enroll?... from the doorbell")
    enroll.add_argument("--name", help="this phone's name (default: the host name)")
    enroll.add_argument("--username", help="the broker's user name, when it needs one")
    enroll.add_argument("--password-file", type=Path, metavar="FILE")
    enroll.add_argument("--ca-file", type=Path, metavar="FILE", help="CA for TLS; implies TLS")
    enroll.add_argument("--json", action="store_true", help="one JSON object per line")
    enroll.set_defaults(run=_enroll)

    access = argparse.ArgumentParser(add_help=False)
    access.add_argument("--username", help="the broker's user name, when it needs one")
    access.add_argument("--password-file", type=Path, metavar="FILE")
    access.add_argument("--ca-file", type=Path, metavar="FILE", help="CA for TLS; implies TLS")
    access.add_argument("--json", action="store_true", help="one JSON object per line")

    invite = commands.add_parser(
        "invite",
        parents=[access],
        help="(owner) let another phone join: prints its one-time link, then its code",
    )
    invite.add_argument("--name", help="the new phone's name (default: the name it gives)")
    invite.add_argument("--role", choices=["member", "guest", "owner"], default="member")
    invite.add_argument("--expires", metavar="DURATION", help="a guest's time, such as 2d")
    invite.add_argument("--window", metavar="DURATION", default="10m", help="link lifetime")
    invite.set_defaults(run=_invite)

    revoke = commands.add_parser(
        "revoke", parents=[access], help="(owner) stop sealing to a phone from now on"
    )
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(run=_revoke)

    recovery_ = commands.add_parser("recovery", help="the recovery key")
    recovery_actions = recovery_.add_subparsers(required=True, metavar="ACTION")
    create = recovery_actions.add_parser(
        "create",
        parents=[access],
        help="(owner) make a recovery key: 24 words shown once, replacing any earlier one",
    )
    create.set_defaults(run=_recovery_create)

    live_ = commands.add_parser(
        "live",
        parents=[access],
        help="watch the doorbell's camera now, end-to-end encrypted to this phone",
    )
    live_.add_argument(
        "--out", type=Path, metavar="FILE", help="write the fragmented MP4 here ('-': stdout)"
    )
    live_.add_argument("--seconds", type=float, metavar="N", help="stop after N seconds")
    live_.add_argument("--stats", action="store_true", help="first-frame time and latency")
    live_.set_defaults(run=_live)

    recover = commands.add_parser(
        "recover",
        help="rebuild this phone from the recovery words (read from standard input)",
    )
    recover.add_argument(
        "--device", required=True, metavar="DEVICE-KEY", help="dbdev-... noted with the words"
    )
    recover.add_argument("--host", help="the doorbell's broker, to act as its owner")
    recover.add_argument("--port", type=int, default=1883)
    recover.add_argument("--tls", action="store_true")
    recover.add_argument("--prefix", default="doorbell")
    recover.add_argument("--json", action="store_true", help="one JSON object per line")
    recover.set_defaults(run=_recover)

    web = commands.add_parser(
        "web",
        help="serve the web phone to this computer's browser, on 127.0.0.1 only",
    )
    web.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the port (default {DEFAULT_PORT}; the browser keeps the phone's keys per "
        "address, so keep to one)",
    )
    web.add_argument(
        "--dir",
        type=Path,
        metavar="PATH",
        help="the built app (default: web/dist of this source tree, made by scripts/web-build)",
    )
    web.set_defaults(run=_web)
    return parser


def _web(home: PhoneHome, args: argparse.Namespace) -> int:
    try:
        app = App.at(args.dir)
        server = open_server(app, args.port)
    except WebError as exc:
        print(f"doorbell-phone: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def announce(address: str) -> None:
        print(
            f"doorbell-phone: the web phone is at {address} (from {app.directory}; "
            "Ctrl-C stops it)",
            flush=True,
        )

    serve_until_stopped(server, announce)
    return EXIT_OK


def _access(args: argparse.Namespace) -> Access:
    return Access(args.username, args.password_file, args.ca_file)


def _managing(run: Callable[[], int]) -> int:
    try:
        return run()
    except ManageError as exc:
        print(f"doorbell-phone: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _invite(home: PhoneHome, args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"role": args.role}
    try:
        request["seconds"] = parse_duration(args.window).total_seconds()
        if args.expires is not None:
            request["expires"] = parse_duration(args.expires).total_seconds()
    except ValueError as exc:
        print(f"doorbell-phone: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.name:
        request["name"] = args.name
    screen = Screen(sys.stdout, args.json)
    return _managing(lambda: invite(home, _access(args), request, screen, sys.stdin))


def _revoke(home: PhoneHome, args: argparse.Namespace) -> int:
    screen = Screen(sys.stdout, args.json)
    return _managing(lambda: revoke(home, _access(args), args.name, screen))


def _recovery_create(home: PhoneHome, args: argparse.Namespace) -> int:
    screen = Screen(sys.stdout, args.json)
    return _managing(lambda: create_recovery(home, _access(args), screen))


def _live(home: PhoneHome, args: argparse.Namespace) -> int:
    to_stdout = args.out is None or str(args.out) == "-"
    # With the video on stdout, what the phone says goes to stderr.
    screen = Screen(sys.stderr if to_stdout else sys.stdout, args.json)
    if args.seconds is not None and not args.seconds > 0:
        print("doorbell-phone: --seconds must be more than 0", file=sys.stderr)
        return EXIT_USAGE
    return _managing(
        lambda: watch_live(
            home, _access(args), args.out, args.seconds, screen, show_stats=args.stats
        )
    )


def _recover(home: PhoneHome, args: argparse.Namespace) -> int:
    screen = Screen(sys.stdout, args.json)
    broker = None
    if args.host:
        device = DevicePublicKey.from_string(args.device)
        broker = Broker(device, args.host, args.port, args.tls, args.prefix)
    words = sys.stdin.read(4096)
    return _managing(lambda: recover(home, args.device, words, screen, broker))


def _enroll(home: PhoneHome, args: argparse.Namespace) -> int:
    options = EnrolOptions(
        args.link, args.name, args.username, args.password_file, args.ca_file, args.json
    )
    try:
        return enrol(home, options, sys.stdout)
    except EnrolError as exc:
        print(f"doorbell-phone: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _init(home: PhoneHome, args: argparse.Namespace) -> int:
    identity = home.init(Suite.from_label(args.suite))
    print(f"created a {identity.suite.label} key and a signing key in {home.directory}")
    print("enrol this phone on the doorbell with:")
    print(f"  doorbell keys add NAME {home.public_identity().to_string()}")
    return EXIT_OK


def _pubkey(home: PhoneHome, args: argparse.Namespace) -> int:
    print(home.public_identity().to_string())
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
    # Read, never written: a folder that is merely inspected (an old archive, a copy from
    # someone else) must not change what this phone expects of its doorbells.
    result = verify_source(source, reader, home.memory().load())
    for name in source.ignored:
        print(f"note   {name}: {NOT_AN_OBJECT_NAME}, ignored")
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
    try:
        result, report = verify_and_export(source, reader, home.memory().load(), args.out)
    except OSError as exc:
        print(f"doorbell-phone: cannot write to {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    for name in source.ignored:
        print(f"note     {name}: {NOT_AN_OBJECT_NAME}, ignored")
    for finding in result.problems:
        print(f"skipped  {finding}")
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


def _watch(home: PhoneHome, args: argparse.Namespace) -> int:
    options = WatchOptions(
        host=args.host,
        port=args.port,
        tls=args.tls,
        ca_file=args.ca_file,
        username=args.username,
        password_file=args.password_file,
        prefix=args.prefix,
        out=args.out,
        json=args.json,
        count=args.count,
        timeout=args.timeout,
    )
    try:
        complete = watch(home, options)
    except WatchError as exc:
        print(f"doorbell-phone: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK if complete else EXIT_FAILED


def _sync(home: PhoneHome, args: argparse.Namespace) -> int:
    reader = home.reader()  # a phone without its key should learn so before any download
    try:
        source = open_source(
            args.source,
            endpoint=args.endpoint,
            region=args.region,
            secure=not args.insecure,
            access_key_file=args.access_key_file,
            secret_key_file=args.secret_key_file,
        )
        report = sync(source, args.out, reader, home.memory())
    except (SyncError, S3SourceError) as exc:
        print(f"doorbell-phone: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"fetched  {len(report.fetched)} new object(s) from {report.source} "
        f"({report.present} already here)"
    )
    for finding in report.ignored:
        print(f"ignored  {finding}")
    for finding in [*report.problems, *report.unexplained]:
        print(f"FAIL     {finding}")
    for finding in report.announced:
        print(f"gap      {finding}")
    for finding in report.notes:
        print(f"note     {finding}")
    exported = [("clip", c) for c in report.clips] + [("updated", c) for c in report.updated]
    for verb, clip in exported:
        extra = f", snapshot {clip.snapshot.name}" if clip.snapshot else ""
        print(
            f"{verb:<8} {clip.path}  ({clip.label}, {clip.segments} segment(s), "
            f"{clip.seconds:.1f} s{extra})"
        )
    for line in report.export_notes:
        print(f"note     {line}")
    summary = (
        f"{len(report.verification.entries)} object(s) verified in {report.objects} "
        f"({len(report.fetched)} new), {len(report.clips)} clip(s) exported, "
        f"{len(report.updated)} updated; gaps: {len(report.announced)} announced, "
        f"{len(report.unexplained)} unexplained"
    )
    if report.ok:
        print(f"ok: {summary}")
        return EXIT_OK
    problems = len(report.problems) + len(report.unexplained)
    print(f"FAILED: {problems} problem(s); {summary}")
    return EXIT_FAILED
