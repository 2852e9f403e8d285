"""``doorbell``: the device-side command line. Parses arguments and calls; no logic here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from doorbell.sealing import (
    KeyringStore,
    RecipientPublicKey,
    SealingError,
    load_device_key,
    prepare_state_dir,
)

DEFAULT_STATE = Path("/var/lib/doorbell")
EXIT_OK, EXIT_USAGE = 0, 2


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SealingError as exc:
        print(f"doorbell: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="doorbell", description="Raspberry Pi doorbell with end-to-end encrypted video."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    keys = commands.add_parser("keys", help="the device key and the enrolled phones")
    keys.add_argument(
        "--state",
        type=Path,
        default=DEFAULT_STATE,
        help=f"state directory (default {DEFAULT_STATE})",
    )
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the device public key phones pin (created if absent)")
    show.set_defaults(run=_keys_show)
    listing = actions.add_parser("list", help="the enrolled phones")
    listing.set_defaults(run=_keys_list)
    add = actions.add_parser("add", help="enrol a phone: its key from 'doorbell-phone pubkey'")
    add.add_argument("name")
    add.add_argument("pubkey", metavar="PUBKEY")
    add.set_defaults(run=_keys_add)
    revoke = actions.add_parser("revoke", help="stop sealing to a phone from the next object on")
    revoke.add_argument("name")
    revoke.set_defaults(run=_keys_revoke)

    demo = commands.add_parser("demo", help="seal, verify and export a synthetic clip end to end")
    demo.add_argument("--dir", type=Path, default=Path("doorbell-demo"), help="output directory")
    demo.add_argument("--seconds", type=float, default=8.0, help="length of the clip")
    demo.set_defaults(run=_demo)
    return parser


def _keys_show(args: argparse.Namespace) -> int:
    state = prepare_state_dir(args.state)
    key, created = load_device_key(state)
    if created:
        print(f"created a new device key in {state}", file=sys.stderr)
    public = key.public_key
    print(public.to_string())
    print(f"fingerprint {public.fingerprint}")
    print(f"device id   {public.device_id.hex()}")
    return EXIT_OK


def _keys_list(args: argparse.Namespace) -> int:
    keyring = KeyringStore(prepare_state_dir(args.state, create=False)).load()
    print(f"keyring epoch {keyring.epoch}, {len(keyring)} recipient(s)")
    if not keyring.recipients:
        print("no phone is enrolled: the doorbell records nothing until one is added")
    for r in keyring.recipients:
        added = r.added.strftime("%Y-%m-%d %H:%M UTC")
        print(f"  {r.name:<24} {r.key.suite.label:<16} {r.key.fingerprint}  added {added}")
    return EXIT_OK


def _keys_add(args: argparse.Namespace) -> int:
    key = RecipientPublicKey.from_string(args.pubkey)
    store = KeyringStore(prepare_state_dir(args.state))
    with store.editing() as box:
        box[0] = box[0].add(args.name, key, datetime.now(UTC))
        epoch = box[0].epoch
    print(f"enrolled {args.name!r} ({key.suite.label}, {key.fingerprint}); keyring epoch {epoch}")
    print("every object sealed from now on can be opened by this phone")
    return EXIT_OK


def _keys_revoke(args: argparse.Namespace) -> int:
    store = KeyringStore(prepare_state_dir(args.state, create=False))
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

    return run_demo(args.dir, seconds=args.seconds)
