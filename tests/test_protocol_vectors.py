"""The committed enrolment vectors (tests/vectors/protocol-v1.json) re-derived from
docs/PROTOCOL.md's formulas with the primitives alone, then checked against the code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from doorbell.sealing import DeviceSigningKey, PhoneIdentity
from doorbell.sealing import enrolment as proto

V = json.loads((Path(__file__).parent / "vectors" / "protocol-v1.json").read_text())


def _hkdf(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with SHA-256, written out."""
    prk = hmac.digest(salt, secret, "sha256")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return out[:length]


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def test_the_link_carries_the_device_key_broker_secret_and_expiry() -> None:
    device = DeviceSigningKey.from_string(V["device_secret"]).public_key
    assert device.raw.hex() == V["device_public_raw"]
    expected = (
        f"doorbell:enroll?v=1&k={_b32(device.raw)}&h=broker.example&p=8883&tls=1"
        f"&t=doorbell&s={_b32(bytes.fromhex(V['secret']))}&e={V['expires']}"
    )
    assert V["link"] == expected
    link = proto.Link.parse(V["link"])
    assert (link.device, link.secret.hex(), link.expires) == (device, V["secret"], V["expires"])


def test_keys_derive_from_the_secret_bound_to_the_device_and_expiry() -> None:
    secret = bytes.fromhex(V["secret"])
    context = bytes.fromhex(V["device_id"]) + struct.pack(">Q", V["expires"])
    for label, name, length in (
        (b"window", "window_id", 8),
        (b"phone to doorbell", "phone_to_doorbell", 32),
        (b"doorbell to phone", "doorbell_to_phone", 32),
        (b"code", "code_key", 32),
    ):
        derived = _hkdf(secret, b"doorbell enroll v1", label + b"\0" + context, length)
        assert derived.hex() == V[name], name
    keys = proto.Link.parse(V["link"]).keys
    assert keys.window_id.hex() == V["window_id"]
    assert V["topic_phone"] == f"doorbell/{V['device_id'][:16]}/enroll/{V['window_id']}/phone"
    assert V["topic_doorbell"] == V["topic_phone"].removesuffix("phone") + "doorbell"


def test_messages_are_aes_gcm_under_the_direction_key_with_the_topic_as_aad() -> None:
    for sealed, key, topic, message in (
        ("hello_sealed", "phone_to_doorbell", "topic_phone", V["hello"]),
        ("code_sealed", "doorbell_to_phone", "topic_doorbell", V["code_message"]),
    ):
        data = bytes.fromhex(V[sealed])
        plaintext = AESGCM(bytes.fromhex(V[key])).decrypt(data[:12], data[12:], V[topic].encode())
        assert json.loads(plaintext) == message
        opened = proto.open_message(bytes.fromhex(V[key]), V[topic], data, proto.MAX_ANSWER)
        assert opened == message


def test_the_hello_is_signed_by_the_phone_over_the_window_and_its_identity() -> None:
    hello = V["hello"]
    identity = PhoneIdentity.from_string(hello["identity"])
    nonce = base64.b64decode(hello["nonce"])
    signed = b"".join(
        [
            b"doorbell enroll v1 hello\0",
            bytes.fromhex(V["device_id"]),
            bytes.fromhex(V["window_id"]),
            nonce,
            identity.key.raw,
            identity.signing.raw,
            hello["name"].encode(),
        ]
    )
    assert signed.hex() == V["hello_signed_bytes"]
    ed25519.Ed25519PublicKey.from_public_bytes(identity.signing.raw).verify(
        base64.b64decode(hello["signature"]), signed
    )
    assert proto.Hello.from_message(proto.Link.parse(V["link"]), hello).name == "alice-phone"


def test_the_code_is_six_digits_of_a_mac_over_the_transcript() -> None:
    hello = V["hello"]
    identity = PhoneIdentity.from_string(hello["identity"])
    transcript = hashlib.sha256(
        b"".join(
            [
                b"doorbell enroll v1 transcript\0",
                bytes.fromhex(V["device_id"]),
                bytes.fromhex(V["window_id"]),
                base64.b64decode(hello["nonce"]),
                bytes.fromhex(V["doorbell_nonce"]),
                identity.key.raw,
                identity.signing.raw,
                hello["name"].encode(),
            ]
        )
    ).digest()
    number = int.from_bytes(hmac.digest(bytes.fromhex(V["code_key"]), transcript, "sha256")[:8])
    number %= 1_000_000
    assert V["code"] == f"{number // 1000:03d} {number % 1000:03d}"
    link = proto.Link.parse(V["link"])
    parsed = proto.Hello.from_message(link, hello)
    assert proto.confirmation_code(link, parsed, bytes.fromhex(V["doorbell_nonce"])) == V["code"]
