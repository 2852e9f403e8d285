"""Signed commands from enrolled phones and the doorbell's signed answers
(docs/PROTOCOL.md section 7), both sides' share: building, signing, parsing and
checking the bytes. The doorbell's replay window and rules live with the daemon."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag

from doorbell.sealing.errors import BadSignature, KeyStringError, SealingError
from doorbell.sealing.format import loads_strict
from doorbell.sealing.keys import (
    DevicePublicKey,
    DeviceSigningKey,
    PhoneSigningKey,
    PhoneVerifyKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    Suite,
)

VERSION = 1
COMMAND_CONTEXT = b"doorbell command v1\0"
ANSWER_CONTEXT = b"doorbell answer v1\0"
NONCE_LEN = 16
MAX_COMMAND = 16 * 1024  # what a doorbell reads
MAX_ANSWER = 64 * 1024  # what a phone reads
COMMAND_LEAF = "command"
ANSWER_LEAF = "answer"


class CommandError(SealingError):
    """Bytes that are not a well-formed, correctly signed command or answer."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise CommandError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise CommandError(f"{what} is not valid base64") from None


def _json(raw: bytes, what: str) -> dict[str, Any]:
    document = loads_strict(raw, lambda why: CommandError(f"{what} is not strict JSON: {why}"))
    if not isinstance(document, dict):
        raise CommandError(f"{what} is not a JSON object")
    return document


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Command:
    """A command as the doorbell reads it, its signature checked (not yet its rules)."""

    device_id: bytes
    signer: PhoneVerifyKey
    time: int
    nonce: bytes
    name: str
    args: dict[str, Any]


def sign_command(
    signing: PhoneSigningKey,
    device_id: bytes,
    name: str,
    args: dict[str, Any],
    now: float,
    nonce: bytes | None = None,
) -> tuple[bytes, bytes]:
    """The payload to publish, and its nonce (the topic of its answer)."""
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    body = _dumps(
        {
            "v": VERSION,
            "device": device_id.hex(),
            "signer": signing.public_key.to_string(),
            "time": int(now),
            "nonce": _b64(nonce),
            "command": name,
            "args": args,
        }
    )
    signature = signing.sign(COMMAND_CONTEXT + body)
    return _dumps({"body": _b64(body), "signature": _b64(signature)}), nonce


def read_nonce(payload: bytes) -> bytes | None:
    """The nonce a payload claims, signed or not: where a refusal can be answered."""
    try:
        body = _json(_unb64(_json(payload, "the command").get("body"), "body"), "the body")
        nonce = _unb64(body.get("nonce"), "nonce")
    except (CommandError, RecursionError):
        return None
    return nonce if len(nonce) == NONCE_LEN else None


def open_command(payload: bytes) -> Command:
    """Parse a command and check its signature by the key it names; CommandError says
    what is wrong. Who the signer is, and whether it may, is the doorbell's to judge."""
    if len(payload) > MAX_COMMAND:
        raise CommandError(f"a {len(payload)}-byte command, limit {MAX_COMMAND}")
    outer = _json(payload, "the command")
    raw = _unb64(outer.get("body"), "body")
    signature = _unb64(outer.get("signature"), "signature")
    body = _json(raw, "the body")
    if body.get("v") != VERSION:
        raise CommandError(f"command version {str(body.get('v'))[:10]!r}; this doorbell reads 1")
    try:
        signer = PhoneVerifyKey.from_string(str(body.get("signer")))
    except KeyStringError as exc:
        raise CommandError(f"unsigned: the signer is not a phone signing key ({exc})") from None
    if len(signature) != 64:
        raise CommandError("unsigned: the signature is not 64 bytes")
    try:
        signer.verify(signature, COMMAND_CONTEXT + raw)
    except BadSignature:
        raise CommandError("the signature does not verify") from None
    device = body.get("device")
    stamp = body.get("time")
    nonce = _unb64(body.get("nonce"), "nonce")
    name = body.get("command")
    args = body.get("args")
    if not isinstance(device, str) or len(device) != 64:
        raise CommandError("device must be 64 hex digits")
    try:
        device_id = bytes.fromhex(device)
    except ValueError:
        raise CommandError("device must be 64 hex digits") from None
    if type(stamp) is not int or not 0 <= stamp < 2**40:
        raise CommandError("time must be Unix seconds")
    if len(nonce) != NONCE_LEN:
        raise CommandError(f"nonce must be {NONCE_LEN} bytes")
    if not isinstance(name, str) or not isinstance(args, dict):
        raise CommandError("command must be a name and args an object")
    return Command(device_id, signer, stamp, nonce, name, args)


def seal_answer(
    device: DeviceSigningKey,
    nonce: bytes,
    answer: dict[str, Any],
    recipient: RecipientPublicKey | None,
) -> bytes:
    """The doorbell's answer to command ``nonce``: signed by the device, and encrypted to
    the phone that asked when it is enrolled (an answer may carry an enrolment link)."""
    device_id = device.public_key.device_id
    body = _dumps({"v": VERSION, "device": device_id.hex(), "request": _b64(nonce), **answer})
    if recipient is None:
        to, data = "clear", body
    else:
        info = ANSWER_CONTEXT + device_id + nonce
        to = "sealed"
        data = recipient.suite.hpke().encrypt(body, recipient.hpke_key(), info=info)
    signature = device.sign(ANSWER_CONTEXT + device_id + nonce + to.encode() + b"\0" + data)
    return _dumps({"to": to, "data": _b64(data), "signature": _b64(signature)})


def open_answer(
    payload: bytes,
    device: DevicePublicKey,
    nonce: bytes,
    identity: RecipientPrivateKey,
) -> dict[str, Any]:
    """The answer to our command ``nonce``: signed by ``device``, for this request."""
    if len(payload) > MAX_ANSWER:
        raise CommandError(f"a {len(payload)}-byte answer, limit {MAX_ANSWER}")
    outer = _json(payload, "the answer")
    to = outer.get("to")
    data = _unb64(outer.get("data"), "data")
    signature = _unb64(outer.get("signature"), "signature")
    if to not in ("clear", "sealed"):
        raise CommandError("the answer is neither clear nor sealed")
    signed = ANSWER_CONTEXT + device.device_id + nonce + str(to).encode() + b"\0" + data
    if len(signature) != 64:
        raise CommandError("the answer is not signed")
    try:
        device.verify(signature, signed)
    except BadSignature:
        raise CommandError("the answer is not signed by this doorbell") from None
    if to == "sealed":
        info = ANSWER_CONTEXT + device.device_id + nonce
        suite: Suite = identity.suite
        try:
            data = suite.hpke().decrypt(data, identity.hpke_key(), info=info)
        except (InvalidTag, ValueError):
            raise CommandError("the answer is not sealed to this phone") from None
    body = _json(data, "the answer's body")
    if body.get("request") != _b64(nonce) or body.get("device") != device.device_id.hex():
        raise CommandError("the answer is to another request")
    return body
