"""``doorbell``: the device-side command line. Parses arguments and calls; no logic here."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doorbell.common.durations import parse_duration
from doorbell.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, check_config, load_settings
from doorbell.sealing import (
    KeyringError,
    KeyringStore,
    PhoneIdentity,
    PhoneVerifyKey,
    RecipientPublicKey,
    Role,
    SealingError,
    load_device_key,
    prepare_state_dir,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A user error already explained in its message: exit 2, no traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"doorbell: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SealingError, UsageError) as exc:
        print(f"doorbell: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        help=f"the YAML configuration (default {DEFAULT_CONFIG_PATH} if it exists, "
        "else the embedded defaults)",
    )


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config is not None:
        if not args.config.exists():
            raise UsageError(f"configuration file {args.config} does not exist")
        return Path(args.config)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(_config_path(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="doorbell", description="Raspberry Pi doorbell with end-to-end encrypted video."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the doorbell (what the systemd service starts)")
    _config_option(run)
    run.set_defaults(run=_run)

    check = commands.add_parser("check-config", help="validate the configuration file")
    _config_option(check)
    check.set_defaults(run=_check_config)

    doctor = commands.add_parser("doctor", help="check this machine, its keys and its config")
    _config_option(doctor)
    doctor.set_defaults(run=_doctor)

    for name, text in (("ring", "ring as if the button was pressed"), ("motion", "report motion")):
        trigger = commands.add_parser(name, help=f"{text} (talks to the running daemon)")
        _config_option(trigger)
        trigger.set_defaults(run=_trigger, command=name)

    enroll = commands.add_parser(
        "enroll",
        help="let a new phone join: a one-time link and QR code (talks to the running daemon)",
    )
    _config_option(enroll)
    enroll.add_argument("--name", help="the phone's name (default: the name the phone gives)")
    enroll.add_argument(
        "--role",
        choices=[Role.OWNER.value, Role.MEMBER.value, Role.GUEST.value],
        help="default: owner for the first phone, member after",
    )
    enroll.add_argument("--expires", metavar="DURATION", help="a guest's time, such as 3h or 7d")
    enroll.add_argument(
        "--confirm",
        choices=["terminal", "button"],
        default="terminal",
        help="confirm the code by typing yes here (default) or by pressing the doorbell button",
    )
    enroll.add_argument(
        "--window", metavar="DURATION", default="10m", help="how long the link works (10m)"
    )
    enroll.add_argument(
        "--broker",
        metavar="HOST[:PORT]",
        help="where the phone reaches the broker, when not the configuration's mqtt.host",
    )
    enroll.add_argument(
        "--allow-classical",
        action="store_true",
        help="accept an x25519 phone beside mlkem768-x25519 ones (see 'keys add')",
    )
    enroll.add_argument("--json", action="store_true", help="one JSON object per line")
    enroll.set_defaults(run=_enroll)

    status = commands.add_parser("status", help="what the running daemon is doing")
    _config_option(status)
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(run=_status)

    keys = commands.add_parser("keys", help="the device key and the enrolled phones")
    _config_option(keys)
    keys.add_argument("--state", type=Path, help="state directory (default: from the config)")
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the device public key phones pin (created if absent)")
    show.set_defaults(run=_keys_show)
    listing = actions.add_parser("list", help="the enrolled phones")
    listing.set_defaults(run=_keys_list)
    add = actions.add_parser("add", help="enrol a phone: its identity from 'doorbell-phone pubkey'")
    add.add_argument("name")
    add.add_argument(
        "pubkey",
        metavar="IDENTITY",
        help="dbid-... from 'doorbell-phone pubkey' (a bare dbpub-... key, from a phone "
        "that cannot sign, may read footage but never manage the doorbell)",
    )
    add.add_argument(
        "--role",
        choices=[Role.OWNER.value, Role.MEMBER.value, Role.GUEST.value],
        help="owner (may invite and revoke phones), member or guest (read footage; a guest "
        "until --expires); default: owner for the first phone that can sign, member after",
    )
    add.add_argument(
        "--expires",
        metavar="DURATION",
        help="for a guest: how long it may read what is sealed from now on, such as 3h or 7d",
    )
    add.add_argument(
        "--allow-classical",
        action="store_true",
        help="accept a keyring that mixes x25519 and mlkem768-x25519 phones: footage is then "
        "not post-quantum protected (recorded in the keyring file)",
    )
    add.set_defaults(run=_keys_add)
    revoke = actions.add_parser("revoke", help="stop sealing to a phone from the next object on")
    revoke.add_argument("name")
    revoke.set_defaults(run=_keys_revoke)

    demo = commands.add_parser("demo", help="run the doorbell on this machine and ring it once")
    demo.add_argument("--dir", type=Path, default=Path("doorbell-demo"), help="output directory")
    demo.set_defaults(run=_demo)
    return parser


def _run(args: argparse.Namespace) -> int:
    from doorbell.capture.source import SourceError
    from doorbell.daemon.logs import setup_logging
    from doorbell.daemon.service import Doorbell
    from doorbell.events.sensors import PinFactoryError
    from doorbell.transport.spool import SpoolError

    settings = _settings(args)
    setup_logging(settings.logging.level)
    try:
        return Doorbell(settings).run()
    except (SourceError, PinFactoryError, SpoolError) as exc:
        # What this machine lacks (a camera, a GPIO library, the spool): no traceback.
        raise UsageError(f"cannot start: {exc}") from None
    except OSError as exc:
        # A directory that cannot be created, a socket path that cannot be bound.
        where = f"{exc.filename}: " if exc.filename else ""
        raise UsageError(f"cannot start: {where}{exc.strerror or exc}") from None


def _check_config(args: argparse.Namespace) -> int:
    path = _config_path(args)
    if path is None:
        print(f"no configuration file ({DEFAULT_CONFIG_PATH} is absent): embedded defaults apply")
        return EXIT_OK
    issues = check_config(path)
    for issue in issues:
        print(issue, file=sys.stderr)
    if issues:
        print(f"{path}: {len(issues)} problem(s)", file=sys.stderr)
        return EXIT_USAGE
    print(f"{path}: ok")
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from doorbell.daemon.doctor import FAIL, run_checks

    checks = run_checks(_config_path(args))
    for check in checks:
        print(f"{check.verdict}  {check.name:<8} {check.detail}")
    return EXIT_FAILED if any(c.verdict == FAIL for c in checks) else EXIT_OK


def _control(args: argparse.Namespace, command: str) -> dict[str, object]:
    from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command

    settings = _settings(args)
    try:
        return send_command(settings.runtime_dir / SOCKET_NAME, command)
    except ControlError as exc:
        raise UsageError(str(exc)) from None


def _enroll(args: argparse.Namespace) -> int:
    from doorbell.daemon.control import SOCKET_NAME, ControlError
    from doorbell.daemon.enroll_client import EnrolOptions, run_enroll

    try:
        window = parse_duration(args.window).total_seconds()
        expires = None if args.expires is None else parse_duration(args.expires).total_seconds()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    host, port = None, None
    if args.broker:
        host, _, port_text = (
            args.broker.rpartition(":") if ":" in args.broker else (args.broker, "", "")
        )
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise UsageError(f"--broker {args.broker!r}: the port is not a number in 1..65535")
            port = int(port_text)
    options = EnrolOptions(
        args.name,
        args.role,
        expires,
        args.confirm,
        window,
        host,
        port,
        args.json,
        args.allow_classical,
    )
    settings = _settings(args)
    try:
        return run_enroll(settings.runtime_dir / SOCKET_NAME, options, sys.stdout, sys.stdin)
    except ControlError as exc:
        raise UsageError(str(exc)) from None


def _trigger(args: argparse.Namespace) -> int:
    reply = _control(args, args.command)
    clip = reply.get("clip")
    print(f"{args.command} sent" + (f"; recording clip {str(clip)[:8]}" if clip else ""))
    if reply.get("waiting_for_room"):
        print(
            f"warning: the spool is full; {reply['waiting_for_room']} event(s) wait in memory "
            "until there is room ('doorbell status')",
            file=sys.stderr,
        )
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    status = _control(args, "status")["status"]
    assert isinstance(status, dict)
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return EXIT_OK
    keyring = status.get("keyring") or {}
    phones = keyring.get("phones", []) if isinstance(keyring, dict) else []
    lines = [
        ("state", "ready" if status["ready"] else "starting"),
        ("recording", "yes" if status["recording_enabled"] else "NO: no phone is enrolled"),
        (
            "recorder",
            f"{status['recorder']}" + (f", clip {status['clip'][:8]}" if status["clip"] else ""),
        ),
        ("pre-roll", f"{status['preroll_seconds']:.1f} s buffered"),
        ("frames", f"{status['frames']} ({status['segments']} segments)"),
        ("objects", f"{status['objects_sealed']} sealed, {status['objects_delivered']} delivered"),
        ("events", f"{status['events']} ({status['clips']} clips)"),
        ("phones", ", ".join(phones) or "none"),
        *(
            [("footage", _post_quantum(keyring["classical"]))]
            if phones and "classical" in keyring
            else []
        ),
        ("device", str(status["device"])),
    ]
    lines += _delivery_lines(status)
    for warning in (status.get("source_warning"), status.get("pin_factory_warning")):
        if warning:
            lines.append(("warning", str(warning)))
    for key, value in lines:
        print(f"{key:<10} {value}")
    return EXIT_OK


def _delivery_lines(status: dict[str, Any]) -> list[tuple[str, str]]:
    """The spool and each sink, with what is wrong said first."""
    lines = []
    spool = status.get("spool")
    if isinstance(spool, dict):
        mib = 1024 * 1024
        free = spool.get("free_bytes")
        summary = (
            f"{spool['objects']} object(s), {spool['bytes'] / mib:.1f} of "
            f"{spool['quota_bytes'] / mib:.0f} MiB quota, "
            + ("free space unknown" if free is None else f"{free / mib:.0f} MiB free on disk")
        )
        if spool.get("full"):
            summary = "FULL: the disk has no room left for new footage; " + summary
        lines.append(("spool", summary))
    if status.get("waiting_for_room"):
        lines.append(
            ("warning", f"{status['waiting_for_room']} event(s) wait in memory for spool room")
        )
    quarantined = status.get("quarantined")
    if quarantined:
        lines.append(
            (
                "warning",
                f"{quarantined} spool file(s) quarantined: not intact objects of this "
                "doorbell, never delivered (see the log for which and why)",
            )
        )
    for what, key in (("segment(s)", "segments_dropped"), ("event(s)", "essential_dropped")):
        if status.get(key):
            lines.append(("warning", f"{status[key]} {what} dropped: the spool had no room"))
    sinks = status.get("sinks")
    for name, sink in (sinks or {}).items() if isinstance(sinks, dict) else ():
        if sink.get("failures"):
            since = sink.get("failing_since")
            age = "" if since is None else f" for {max(0.0, time.time() - since):.0f} s"
            state = f"FAILING{age}: {sink.get('last_error')}"
        else:
            state = "ok"
        lines.append((f"sink {name}", f"{state}; {sink.get('pending', 0)} object(s) waiting"))
    return lines


def _state(args: argparse.Namespace) -> Path:
    if args.state is not None:
        return Path(args.state)
    return _settings(args).state_dir


def _keys_show(args: argparse.Namespace) -> int:
    state = prepare_state_dir(_state(args))
    key, created = load_device_key(state)
    if created:
        print(f"created a new device key in {state}", file=sys.stderr)
    public = key.public_key
    print(public.to_string())
    print(f"fingerprint {public.fingerprint}")
    print(f"device id   {public.device_id.hex()}")
    return EXIT_OK


def _keys_list(args: argparse.Namespace) -> int:
    stored = KeyringStore(prepare_state_dir(_state(args), create=False)).load_file()
    keyring = stored.keyring
    print(f"keyring epoch {keyring.epoch}, {len(keyring)} recipient(s)")
    if not keyring.recipients:
        print("no phone is enrolled: the doorbell records nothing until one is added")
    for r in keyring.recipients:
        added = r.added.strftime("%Y-%m-%d %H:%M UTC")
        line = (
            f"  {r.name:<24} {r.role.value:<8} {r.key.suite.label:<16} {r.key.fingerprint}"
            f"  added {added}"
        )
        if r.expires is not None:
            line += f", expires {r.expires:%Y-%m-%d %H:%M:%S UTC}"
        if not r.key.suite.post_quantum:
            line += "  NOT post-quantum"
            consent = stored.consent(r)
            if consent is not None:
                line += f", allowed {consent.given:%Y-%m-%d %H:%M UTC} (--allow-classical)"
        print(line)
    if keyring.recipients:
        print(f"footage is {_post_quantum([r.name for r in keyring.classical])}")
    return EXIT_OK


def _post_quantum(classical: Sequence[str]) -> str:
    """Whether footage is post-quantum protected, and which phones make it not."""
    if not classical:
        return "post-quantum protected: every phone uses mlkem768-x25519"
    names = ", ".join(repr(name) for name in classical)
    return (
        f"NOT post-quantum protected: {names} "
        f"{'uses' if len(classical) == 1 else 'use'} x25519, and every object wraps its key "
        "for every phone, so a future quantum computer could open everything sealed to this "
        "keyring"
    )


def _keys_add(args: argparse.Namespace) -> int:
    key, signing = _identity_argument(args.pubkey)
    now = datetime.now(UTC)
    expires = None
    if args.expires is not None:
        try:
            expires = now + parse_duration(args.expires)
        except ValueError as exc:
            raise KeyringError(f"--expires: {exc}") from None
    store = KeyringStore(prepare_state_dir(_state(args)))
    role = Role(args.role) if args.role else None
    if role is None:
        first = signing is not None and not store.load().owners
        role = Role.OWNER if first else Role.MEMBER
    if role is Role.OWNER and signing is None:
        raise KeyringError(
            "an owner must be able to sign: give the phone's dbid-... identity from "
            "'doorbell-phone pubkey', or enrol this key with --role member"
        )
    keyring = store.add(
        args.name,
        key,
        now,
        allow_classical=args.allow_classical,
        role=role,
        signing=signing,
        expires=expires,
    ).keyring
    epoch = keyring.epoch
    until = "" if expires is None else f" until {expires:%Y-%m-%d %H:%M:%S} UTC"
    print(
        f"enrolled {args.name!r} as {role.value}{until} ({key.suite.label}, {key.fingerprint}); "
        f"keyring epoch {epoch}"
    )
    print("every object sealed from now on can be opened by this phone")
    print(f"footage is {_post_quantum([r.name for r in keyring.classical])}")
    return EXIT_OK


def _identity_argument(text: str) -> tuple[RecipientPublicKey, PhoneVerifyKey | None]:
    """A phone identity (``dbid-``), or the bare public key of a phone that cannot sign."""
    if "".join(text.split()).lower().startswith("dbid-"):
        identity = PhoneIdentity.from_string(text)
        return identity.key, identity.signing
    return RecipientPublicKey.from_string(text), None


def _keys_revoke(args: argparse.Namespace) -> int:
    store = KeyringStore(prepare_state_dir(_state(args), create=False))
    with store.editing() as box:
        box[0] = box[0].revoke(args.name)
        epoch, left = box[0].epoch, len(box[0])
    print(f"revoked {args.name!r}; keyring epoch {epoch}, {left} recipient(s) left")
    print("objects sealed from now on exclude it; footage sealed before stays readable to it")
    if not left:
        print("no phone is enrolled any more: the doorbell records nothing until one is added")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from doorbell.demo import run_demo

    return run_demo(args.dir)
