"""The committed test vectors (tests/vectors/v1.json) still open, and every deterministic
value in them is re-derived here from the spec's formulas, not read back from the file."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from doorbell.sealing import (
    DevicePublicKey,
    DeviceSigningKey,
    Keyring,
    Reader,
    RecipientPrivateKey,
    RecipientPublicKey,
    SealingError,
)
from doorbell.sealing import format as fmt

VECTORS = json.loads((Path(__file__).parent / "vectors" / "v1.json").read_text())


def _phones() -> dict[str, RecipientPrivateKey]:
    return {p["name"]: RecipientPrivateKey.from_string(p["secret"]) for p in VECTORS["phones"]}


def _device() -> DeviceSigningKey:
    return DeviceSigningKey.from_string(VECTORS["device"]["secret"])


def test_vector_file_says_its_keys_are_test_only() -> None:
    assert "TEST VECTORS ONLY" in VECTORS["warning"]
    assert VECTORS["format_version"] == fmt.VERSION


def test_device_key_derivations() -> None:
    device = VECTORS["device"]
    public = _device().public_key
    assert public.raw.hex() == device["public_raw"]
    assert public.to_string() == device["public"]
    assert DevicePublicKey.from_string(device["public"]) == public
    assert hashlib.sha256(public.raw).hexdigest() == device["device_id"] == public.device_id.hex()
    digest = hashlib.sha256(public.raw).hexdigest()[:32]
    assert device["fingerprint"] == ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def test_phone_key_derivations() -> None:
    for phone in VECTORS["phones"]:
        secret = RecipientPrivateKey.from_string(phone["secret"])
        assert secret.raw.hex() == phone["secret_raw"]
        assert secret.suite.label == phone["suite"]
        assert secret.public_key().raw.hex() == phone["public_raw"]
        assert secret.public_key().to_string() == phone["public"]
        assert RecipientPublicKey.from_string(phone["public"]) == secret.public_key()


@pytest.mark.parametrize("phone", VECTORS["phones"], ids=lambda p: p["name"])
def test_key_string_checksum_is_sha256_of_prefix_and_raw(phone: dict[str, Any]) -> None:
    import base64

    text = phone["public"]
    prefix = text[: text.rindex("-") + 1]
    body = text[len(prefix) :].upper()
    decoded = base64.b32decode(body + "=" * (-len(body) % 8))
    raw, checksum = decoded[:-4], decoded[-4:]
    assert raw.hex() == phone["public_raw"]
    assert checksum == hashlib.sha256(prefix.encode() + raw).digest()[:4]


def test_keyring_document() -> None:
    keyring = Keyring.from_json(json.dumps(VECTORS["keyring"]).encode(), "vector")
    phones = _phones()
    assert [r.name for r in keyring.recipients] == list(phones)
    for recipient in keyring.recipients:
        assert recipient.key == phones[recipient.name].public_key()


def test_padme_table() -> None:
    for length, padded in VECTORS["padme"].items():
        assert fmt.padme(int(length)) == padded
        n = int(length)
        if n >= 2:
            e = n.bit_length() - 1
            s = e.bit_length()
            mask = (1 << (e - s)) - 1
            assert padded == (n + mask) & ~mask


@pytest.mark.parametrize("vector", VECTORS["objects"], ids=lambda v: v["description"])
def test_object_rederived(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["object"])
    device = _device()
    device_id = device.public_key.device_id
    envelope = fmt.parse_envelope(data)
    assert envelope.device_id == device_id
    assert envelope.seq == vector["seq"]
    assert envelope.prev.hex() == vector["prev"]
    assert envelope.nonce.hex() == vector["nonce"]
    assert envelope.header_len == vector["header_len"]

    # Header layout: rebuilt field by field from the spec.
    header = data[: envelope.header_len]
    assert header[:8] == b"\x89DBELL\r\n" and header[8] == 1 and header[9] == 0
    assert header[10:42] == device_id
    assert int.from_bytes(header[42:50], "big") == vector["seq"]
    assert header[94] == len(vector["recipients"])
    ct_len = int.from_bytes(header[-8:], "big")
    assert len(data) == envelope.header_len + ct_len + 64
    assert (
        fmt.build_header(
            device_id, envelope.seq, envelope.prev, envelope.nonce, list(envelope.stanzas), ct_len
        )
        == header
    )

    # Recipient tags and HPKE info from their formulas.
    phones = _phones()
    for stanza, recipient in zip(envelope.stanzas, vector["recipients"], strict=True):
        public = phones[recipient["name"]].public_key()
        seq8 = vector["seq"].to_bytes(8, "big")
        suite = bytes([public.suite])
        tag = hashlib.sha256(
            b"doorbell/v1 recipient\x00" + device_id + seq8 + suite + public.raw
        ).digest()[:16]
        assert stanza.tag == tag and tag.hex() == recipient["tag"]
        info = b"doorbell/v1 data key\x00" + device_id + seq8 + suite + tag
        assert info.hex() == recipient["hpke_info"]
        assert len(stanza.wrapped) == (80 if public.suite == 1 else 1168)
        secret = phones[recipient["name"]]
        data_key = secret.suite.hpke().decrypt(stanza.wrapped, secret.hpke_key(), info=info)
        assert data_key.hex() == vector["data_key"]

    # Signature: deterministic Ed25519 over the context and SHA-256 of the signed bytes.
    signed = data[: envelope.signed_len]
    message = b"doorbell/v1 object signature\x00" + hashlib.sha256(signed).digest()
    assert message.hex() == vector["signed_message"]
    assert device.sign(message).hex() == vector["signature"] == data[-64:].hex()
    device.public_key.verify(data[-64:], message)
    assert hashlib.sha256(data[-64:]).hexdigest() == vector["chain_hash"]

    # Payload: decrypts to the vector, which re-encodes and re-encrypts byte for byte.
    data_key = bytes.fromhex(vector["data_key"])
    payload = AESGCM(data_key).decrypt(
        envelope.nonce, data[envelope.header_len : envelope.signed_len], header
    )
    assert payload.hex() == vector["payload"]
    assert (
        AESGCM(data_key).encrypt(envelope.nonce, payload, header)
        == data[envelope.header_len : envelope.signed_len]
    )
    body = bytes.fromhex(vector["body"])
    meta = fmt.encode_meta(vector["meta"])
    prefix = fmt.inner_prefix(
        fmt.Kind(vector["kind"]), vector["epoch"], vector["time_us"], meta, len(body)
    )
    assert len(payload) == fmt.padme(len(prefix) + len(body))
    assert payload == prefix + body + bytes(len(payload) - len(prefix) - len(body))

    for recipient in vector["recipients"]:
        opened = Reader([phones[recipient["name"]]], [device.public_key]).open(data)
        assert opened.kind == vector["kind"]
        assert opened.epoch == vector["epoch"]
        assert opened.time_us == vector["time_us"]
        assert opened.meta == vector["meta"]
        assert bytes(opened.body) == body


def test_objects_form_a_chain() -> None:
    objects = VECTORS["objects"]
    assert objects[0]["prev"] == "00" * 32
    for before, after in itertools.pairwise(objects):
        assert after["prev"] == before["chain_hash"]
        assert after["seq"] == before["seq"] + 1


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["description"])
def test_invalid_objects_rejected(vector: dict[str, Any]) -> None:
    reader = Reader(list(_phones().values()), [_device().public_key])
    with pytest.raises(SealingError, match=vector["error"]):
        reader.open(bytes.fromhex(vector["object"]))
