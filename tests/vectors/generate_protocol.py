"""Produces tests/vectors/protocol-v1.json once: the enrolment protocol's derived keys,
a sealed message, a signed hello and its confirmation code (docs/PROTOCOL.md). The
committed file is the contract; a difference means the code broke compatibility.

Every private key and secret here is a published TEST VECTOR. Never use one for anything
real."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from doorbell.sealing import enrolment as proto
from doorbell.sealing.keys import (
    DeviceSigningKey,
    PhoneIdentity,
    PhoneSigningKey,
    RecipientPrivateKey,
    Suite,
)


def _seeded(label: str, n: int) -> bytes:
    return hashlib.sha256(f"doorbell protocol vector {label}".encode()).digest()[:n]


def main() -> None:
    device = DeviceSigningKey(_seeded("device", 32))
    link = proto.Link(
        device.public_key, "broker.example", 8883, True, "doorbell", _seeded("secret", 16),
        1_796_000_000,
    )  # fmt: skip
    keys = link.keys
    phone = RecipientPrivateKey(Suite.MLKEM768_X25519, _seeded("phone x-wing seed", 32))
    signing = PhoneSigningKey(_seeded("phone signing", 32))
    identity = PhoneIdentity(phone.public_key(), signing.public_key)
    hello_nonce = _seeded("hello nonce", 16)
    name = "alice-phone"
    signature = signing.sign(proto.Hello.signed_bytes(link, hello_nonce, identity, name))
    hello = proto.Hello(hello_nonce, identity, name, signature)
    doorbell_nonce = _seeded("doorbell nonce", 16)
    up, down = link.topic(proto.PHONE_LEAF), link.topic(proto.DOORBELL_LEAF)
    aead_nonce = _seeded("aead nonce", 12)
    code_message = {"type": "code", "nonce": proto.b64(doorbell_nonce),
                    "phone_nonce": proto.b64(hello_nonce)}  # fmt: skip
    document = {
        "warning": "TEST VECTORS ONLY. Every secret in this file is public.",
        "device_secret": device.to_string(),
        "device_public_raw": device.public_key.raw.hex(),
        "device_id": device.public_key.device_id.hex(),
        "link": link.to_string(),
        "secret": link.secret.hex(),
        "expires": link.expires,
        "window_id": keys.window_id.hex(),
        "phone_to_doorbell": keys.phone_to_doorbell.hex(),
        "doorbell_to_phone": keys.doorbell_to_phone.hex(),
        "code_key": keys.code.hex(),
        "topic_phone": up,
        "topic_doorbell": down,
        "phone_secret": phone.to_string(),
        "phone_signing_secret": signing.to_string(),
        "identity": identity.to_string(),
        "hello": hello.to_message(),
        "hello_signed_bytes": proto.Hello.signed_bytes(link, hello_nonce, identity, name).hex(),
        "hello_sealed": proto.seal_message(
            keys.phone_to_doorbell, up, hello.to_message(), aead_nonce
        ).hex(),
        "doorbell_nonce": doorbell_nonce.hex(),
        "code": proto.confirmation_code(link, hello, doorbell_nonce),
        "code_message": code_message,
        "code_sealed": proto.seal_message(
            keys.doorbell_to_phone, down, code_message, aead_nonce
        ).hex(),
    }
    target = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("protocol-v1.json")
    )
    if target.exists():
        raise SystemExit(f"{target} exists: the committed vectors are never regenerated")
    target.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
