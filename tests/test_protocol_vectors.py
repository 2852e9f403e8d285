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

from doorbell.sealing import (
    DeviceSigningKey,
    PhoneIdentity,
    PhoneSigningKey,
    RecipientPrivateKey,
    commands,
    recovery,
)
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


# --- signed commands, answers and the recovery key (tests/vectors/commands-v1.json) ------

C = json.loads((Path(__file__).parent / "vectors" / "commands-v1.json").read_text())


def test_a_command_is_its_body_signed_by_the_phone() -> None:
    outer = json.loads(C["command"])
    body = base64.b64decode(outer["body"])
    document = json.loads(body)
    signing = PhoneSigningKey.from_string(C["phone_signing_secret"])
    assert document == {
        "v": 1,
        "device": C["device_id"],
        "signer": signing.public_key.to_string(),
        "time": 1_796_000_000,
        "nonce": base64.b64encode(bytes.fromhex(C["nonce"])).decode(),
        "command": "revoke",
        "args": {"name": "old-tablet"},
    }
    ed25519.Ed25519PublicKey.from_public_bytes(signing.public_key.raw).verify(
        base64.b64decode(outer["signature"]), b"doorbell command v1\0" + body
    )
    command = commands.open_command(C["command"].encode())
    assert (command.name, command.args, command.nonce.hex()) == (
        "revoke",
        {"name": "old-tablet"},
        C["nonce"],
    )


def test_an_answer_is_signed_by_the_device_and_sealed_to_the_phone_that_asked() -> None:
    device = DeviceSigningKey.from_string(C["device_secret"]).public_key
    phone = RecipientPrivateKey.from_string(C["phone_secret"])
    nonce = bytes.fromhex(C["nonce"])
    for name, to in (("answer_clear", "clear"), ("answer_sealed", "sealed")):
        outer = json.loads(C[name])
        data = base64.b64decode(outer["data"])
        assert outer["to"] == to
        signed = b"doorbell answer v1\0" + device.device_id + nonce + to.encode() + b"\0" + data
        ed25519.Ed25519PublicKey.from_public_bytes(device.raw).verify(
            base64.b64decode(outer["signature"]), signed
        )
        if to == "sealed":
            # RFC 9180 base mode, the phone's suite, info = context || device id || nonce.
            info = b"doorbell answer v1\0" + device.device_id + nonce
            data = phone.suite.hpke().decrypt(data, phone.hpke_key(), info=info)
        body = json.loads(data)
        assert body["request"] == base64.b64encode(nonce).decode()
        assert body == commands.open_answer(C[name].encode(), device, nonce, phone)
    assert commands.open_answer(C["answer_sealed"].encode(), device, nonce, phone)["epoch"] == 7


def test_the_recovery_key_derives_from_the_words() -> None:
    paper = C["recovery"]
    entropy = bytes.fromhex(paper["entropy"])
    # BIP-39: 256 bits and the first 8 bits of their SHA-256, in 24 groups of 11 bits.
    from mnemonic import Mnemonic

    wordlist = Mnemonic("english").wordlist
    bits = int.from_bytes(entropy + hashlib.sha256(entropy).digest()[:1], "big")
    words = [wordlist[(bits >> (11 * (23 - i))) & 0x7FF] for i in range(24)]
    assert words == paper["words"]
    seed = _hkdf(entropy, b"doorbell recovery v1", b"x-wing seed", 32)
    assert seed.hex() == paper["x_wing_seed"]
    signing_seed = _hkdf(entropy, b"doorbell recovery v1", b"ed25519 seed", 32)
    assert PhoneSigningKey(signing_seed).to_string() == paper["signing_secret"]
    key = recovery.RecoveryKey.from_words(" ".join(words))
    assert key.identity.to_string() == paper["identity"]
