"""The committed test vectors (tests/vectors/v1.json) still open, and every deterministic
value in them is re-derived here from the spec's formulas, not read back from the file."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from vectors.chains import run_chain_vector

from doorbell.phone.rules import check_contents
from doorbell.sealing import (
    DevicePublicKey,
    DeviceSigningKey,
    Keyring,
    KeyringError,
    PhoneIdentity,
    PhoneSigningKey,
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


# --- the phone's rules: committed vectors every reader must agree with -----------------------


def _reader() -> Reader:
    return Reader(list(_phones().values()), [_device().public_key])


@pytest.mark.parametrize("vector", VECTORS["invalid_signatures"], ids=lambda v: v["description"])
def test_non_canonical_signatures_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises(SealingError, match=vector["error"]):
        _reader().open(bytes.fromhex(vector["object"]))


@pytest.mark.parametrize("vector", VECTORS["invalid_payloads"], ids=lambda v: v["description"])
def test_invalid_payloads_rejected(vector: dict[str, Any]) -> None:
    """Authentic objects whose payload breaks a rule of FORMAT.md 4 or 4.1 (or 7): rejected
    when opened, or by the phone's checks before any part is used."""
    with pytest.raises(SealingError, match=re.escape(vector["error"])):
        check_contents(_reader().open(bytes.fromhex(vector["object"])))


@pytest.mark.parametrize(
    "vector",
    VECTORS["chains"] + VECTORS["chains_review"] + VECTORS["chains_damaged"],
    ids=lambda v: v["description"],
)
def test_chain_vectors(vector: dict[str, Any]) -> None:
    device_id = _device().public_key.device_id.hex()
    assert run_chain_vector(vector, device_id, _reader()) == vector["codes"]


def test_chain_vectors_cover_every_new_rule() -> None:
    codes = {code for vector in VECTORS["chains"] for code in vector["codes"]}
    assert codes >= {
        "reordered",
        "replaced",
        "fork",
        "restart-mismatch",
        "notice-hides-delivered",
        "bad-discard",
        "overlapping-notices",
        "eviction-order",
        "stanzas",
        "keyring-rollback",
    }
    assert any(vector["codes"] == [] for vector in VECTORS["chains"])


def test_review_vectors_cover_the_rules_the_review_added() -> None:
    codes = {code for vector in VECTORS["chains_review"] for code in vector["codes"]}
    assert codes >= {"unpublished-keyring", "stanzas", "missing", "replaced", "clip"}
    assert sum(vector["codes"] == [] for vector in VECTORS["chains_review"]) >= 2
    assert any(v.get("remembered_version") == 2 for v in VECTORS["chains_review"])


def test_hybrid_stanza_opens_with_the_x_wing_combiner_written_out() -> None:
    """Suite 02 is X-Wing as in draft-connolly-cfrg-xwing-kem-06 and later (= MLKEM768-X25519
    of draft-irtf-cfrg-concrete-hybrid-kems, HPKE KEM id 0x647A): the shared secret is
    SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel), then RFC 9180's base-mode key
    schedule. Written out here from those documents, not through pyca's HPKE."""
    import hmac

    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    vector = VECTORS["objects"][1]
    envelope = fmt.parse_envelope(bytes.fromhex(vector["object"]))
    [pq] = [p for p in VECTORS["phones"] if p["suite"] == "mlkem768-x25519"]
    secret, public = bytes.fromhex(pq["secret_raw"]), bytes.fromhex(pq["public_raw"])
    [recipient] = [r for r in vector["recipients"] if r["name"] == pq["name"]]
    [stanza] = [s for s in envelope.stanzas if s.tag.hex() == recipient["tag"]]
    enc, ct = stanza.wrapped[:1120], stanza.wrapped[1120:]
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(secret[:64]).decapsulate(ct_m)
    ss_x = x25519.X25519PrivateKey.from_private_bytes(secret[64:]).exchange(
        x25519.X25519PublicKey.from_public_bytes(ct_x)
    )
    shared = hashlib.sha3_256(ss_m + ss_x + ct_x + public[1184:] + b"\\.//^\\").digest()

    suite_id = b"HPKE" + bytes.fromhex("647a") + bytes.fromhex("0001") + bytes.fromhex("0002")

    def extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return hmac.digest(salt or bytes(32), b"HPKE-v1" + suite_id + label + ikm, "sha256")

    def expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
        return hmac.digest(prk, labeled + b"\x01", "sha256")[:length]

    info = bytes.fromhex(recipient["hpke_info"])
    context = b"\x00" + extract(b"", b"psk_id_hash", b"") + extract(b"", b"info_hash", info)
    schedule = extract(shared, b"secret", b"")
    key, nonce = expand(schedule, b"key", context, 32), expand(schedule, b"base_nonce", context, 12)
    assert AESGCM(key).decrypt(nonce, ct, b"").hex() == vector["data_key"]


# --- keyring document version 2: roles, signing keys, X-Wing seeds ------------------------

V2 = VECTORS["keyring_v2"]


def _spec_key_string(prefix: str, raw: bytes) -> str:
    checksum = hashlib.sha256(prefix.encode() + raw).digest()[:4]
    return prefix + base64.b32encode(raw + checksum).decode().rstrip("=").lower()


@pytest.mark.parametrize("phone", V2["phones"], ids=lambda p: p["name"])
def test_v2_phone_keys_rederived(phone: dict[str, Any]) -> None:
    """The seed expands by SHAKE256 to the ML-KEM-768 seed and the X25519 key (X-Wing); the
    identity is one key string over the public key and the Ed25519 signing key."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

    seed = bytes.fromhex(phone["secret_seed"])
    assert phone["secret"] == _spec_key_string("dbsec-xwing-", seed)
    expanded = hashlib.shake_256(seed).digest(96)
    assert expanded.hex() == phone["secret_expanded"]
    public = (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).public_key().public_bytes_raw()
        + x25519.X25519PrivateKey.from_private_bytes(expanded[64:]).public_key().public_bytes_raw()
    )
    assert public.hex() == phone["public_raw"]
    assert RecipientPrivateKey.from_string(phone["secret"]).public_key().raw == public
    signing = PhoneSigningKey.from_string(phone["signing_secret"])
    signing_raw = base64.b32decode(
        (body := phone["signing_secret"].removeprefix("dbsigsec-ed25519-").upper())
        + "=" * (-len(body) % 8)
    )[:32]
    signing_public = (
        ed25519.Ed25519PrivateKey.from_private_bytes(signing_raw).public_key().public_bytes_raw()
    )
    assert signing_public.hex() == phone["signing_public_raw"] == signing.public_key.raw.hex()
    assert phone["identity"] == _spec_key_string("dbid-mlkem768x25519-", public + signing_public)
    assert PhoneIdentity.from_string(phone["identity"]).signing == signing.public_key


def test_v2_keyring_object_opens_for_every_role() -> None:
    data = bytes.fromhex(V2["object"])
    device = _device().public_key
    document = json.dumps(V2["document"], indent=2, ensure_ascii=False).encode() + b"\n"
    for phone in V2["phones"]:
        reader = Reader([RecipientPrivateKey.from_string(phone["secret"])], [device])
        opened = reader.open(data)
        assert opened.kind is fmt.Kind.KEYRING
        keyring = check_contents(opened)
        assert keyring is not None
        assert bytes(opened.body) == document
    assert [(r.name, r.role.value) for r in keyring.recipients] == [
        (p["name"], p["role"]) for p in V2["phones"]
    ]
    signing = {p["name"]: p["signing_public_raw"] for p in V2["phones"]}
    for recipient in keyring.recipients:
        if recipient.role.value == "guest":
            assert recipient.signing is None and recipient.expires is not None
        else:
            assert recipient.signing is not None
            assert recipient.signing.raw.hex() == signing[recipient.name]
            assert recipient.expires is None


@pytest.mark.parametrize("case", V2["invalid_documents"], ids=lambda c: c["description"])
def test_v2_invalid_keyring_documents_rejected(case: dict[str, Any]) -> None:
    with pytest.raises(KeyringError, match=re.escape(case["error"])):
        Keyring.from_json(json.dumps(case["document"]).encode(), "vector")
