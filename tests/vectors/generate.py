"""Produces tests/vectors/v1.json once. The committed file is the contract; never regenerate
it for a change in code: a difference means the code broke compatibility.

HPKE draws its own randomness, so a second run cannot reproduce the objects byte for
byte. Run against an existing file, this script therefore keeps every section already
committed and only adds the sections it lacks (it was run that way to add the chain
vectors of the phone's notice, keyring and chain rules). Each new vector's expected
findings are written here by hand from FORMAT.md, and the script refuses to write a
vector on which the reference reader disagrees.

Every private key here is a published TEST VECTOR key. Never use one for anything real.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from chains import (
    DAMAGED_CASES,
    REVIEW_CASES,
    chain_vectors,
    payload_vectors,
    signature_vectors,
)
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from doorbell.sealing import format as fmt
from doorbell.sealing.keyring import Keyring, Role
from doorbell.sealing.keys import (
    DeviceSigningKey,
    PhoneIdentity,
    PhoneSigningKey,
    RecipientPrivateKey,
    Suite,
)
from doorbell.sealing.sealer import seal_bytes


def _seeded(label: str, n: int) -> bytes:
    """Deterministic test material so the vector file is reproducible in review."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"doorbell test vector {label} {counter}".encode()).digest()
        counter += 1
    return out[:n]


def _counter_random(label: str):  # type: ignore[no-untyped-def]
    calls = [0]

    def random(n: int) -> bytes:
        calls[0] += 1
        return _seeded(f"{label} random {calls[0]}", n)

    return random


def main() -> None:
    device = DeviceSigningKey(_seeded("device", 32))
    ed25519.Ed25519PrivateKey.from_private_bytes(_seeded("device", 32))
    phone_x = RecipientPrivateKey(Suite.X25519, _seeded("phone x25519", 32))
    x25519.X25519PrivateKey.from_private_bytes(phone_x.raw)
    mlkem.MLKEM768PrivateKey.from_seed_bytes(_seeded("phone mlkem seed", 64))
    phone_pq = RecipientPrivateKey(
        Suite.MLKEM768_X25519, _seeded("phone mlkem seed", 64) + _seeded("phone pq x25519", 32)
    )
    added = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    keyring_one = Keyring().add("test-phone-x25519", phone_x.public_key(), added)
    keyring_two = keyring_one.add("test-phone-pq", phone_pq.public_key(), added)

    objects = []
    prev = fmt.ZERO_PREV
    plan = [
        (
            "event, one x25519 recipient",
            keyring_one,
            fmt.Kind.EVENT,
            {"type": "ring", "clip": "00" * 16, "stream": "11" * 16, "first_index": 0},
            b"\xff\xd8 not really a jpeg \xff\xd9",
        ),
        (
            "segment, mixed x25519 and mlkem768-x25519 recipients",
            keyring_two,
            fmt.Kind.SEGMENT,
            {"stream": "11" * 16, "index": 0, "start": 0.0, "duration": 2.0, "frames": 60},
            bytes(range(256)) * 4,
        ),
        (
            "keyring object",
            keyring_two,
            fmt.Kind.KEYRING,
            {"epoch": keyring_two.epoch},
            keyring_two.to_json(),
        ),
    ]
    for seq, (description, keyring, kind, meta, body) in enumerate(plan):
        time_us = 1_795_000_000_000_000 + seq * 2_000_000
        random = _counter_random(f"object {seq}")
        data_key = _seeded(f"object {seq} random 1", 32)
        nonce = _seeded(f"object {seq} random 2", 12)
        data = bytes(seal_bytes(device, keyring, seq, prev, kind, meta, body, time_us, random))
        envelope = fmt.parse_envelope(data)
        prefix = fmt.inner_prefix(kind, keyring.epoch, time_us, fmt.encode_meta(meta), len(body))
        payload_len = fmt.padded_inner_len(len(prefix), len(body))
        payload = prefix + body + bytes(payload_len - len(prefix) - len(body))
        objects.append(
            {
                "description": description,
                "seq": seq,
                "prev": prev.hex(),
                "data_key": data_key.hex(),
                "nonce": nonce.hex(),
                "kind": int(kind),
                "epoch": keyring.epoch,
                "time_us": time_us,
                "meta": meta,
                "body": body.hex(),
                "payload": payload.hex(),
                "recipients": [
                    {
                        "name": r.name,
                        "tag": fmt.recipient_tag(
                            device.public_key.device_id, seq, r.key.suite, r.key.raw
                        ).hex(),
                        "hpke_info": fmt.hpke_info(
                            device.public_key.device_id,
                            seq,
                            r.key.suite,
                            fmt.recipient_tag(
                                device.public_key.device_id, seq, r.key.suite, r.key.raw
                            ),
                        ).hex(),
                    }
                    for r in keyring.recipients
                ],
                "header_len": envelope.header_len,
                "signed_message": fmt.signed_message(data[: envelope.signed_len]).hex(),
                "signature": envelope.signature.hex(),
                "chain_hash": envelope.chain_hash.hex(),
                "object": data.hex(),
            }
        )
        prev = envelope.chain_hash

    valid = bytes.fromhex(objects[0]["object"])
    invalid = [
        ("bad magic", b"\x88" + valid[1:], "bad magic"),
        ("version 2", valid[:8] + b"\x02" + valid[9:], "unsupported version"),
        ("non-zero flags", valid[:9] + b"\x01" + valid[10:], "flags"),
        ("zero stanzas", valid[:94] + b"\x00" + valid[95:], "stanza count"),
        ("unknown suite", valid[:95] + b"\x09" + valid[96:], "unknown suite"),
        ("truncated by one byte", valid[:-1], "truncated"),
        ("one trailing byte", valid + b"\x00", "trailing"),
        ("signature bit flipped", valid[:-1] + bytes([valid[-1] ^ 1]), "signature"),
        (
            "ciphertext bit flipped",
            valid[:300] + bytes([valid[300] ^ 1]) + valid[301:],
            "signature",
        ),
    ]
    document = {
        "warning": "TEST VECTORS ONLY. Every private key in this file is public. "
        "Never use any of them for anything real.",
        "format_version": fmt.VERSION,
        "device": {
            "secret": device.to_string(),
            "public": device.public_key.to_string(),
            "public_raw": device.public_key.raw.hex(),
            "device_id": device.public_key.device_id.hex(),
            "fingerprint": device.public_key.fingerprint,
        },
        "phones": [
            {
                "name": name,
                "suite": key.suite.label,
                "secret": key.to_string(),
                "secret_raw": key.raw.hex(),
                "public": key.public_key().to_string(),
                "public_raw": key.public_key().raw.hex(),
            }
            for name, key in (("test-phone-x25519", phone_x), ("test-phone-pq", phone_pq))
        ],
        "keyring": json.loads(keyring_two.to_json()),
        "padme": {str(n): fmt.padme(n) for n in (0, 1, 2, 9, 100, 1000, 4097, 65536, 2097193)},
        "objects": objects,
        "invalid": [{"description": d, "object": o.hex(), "error": e} for d, o, e in invalid],
    }
    document["invalid_signatures"] = signature_vectors(valid)
    document["invalid_payloads"] = payload_vectors(device, phone_x, keyring_one)
    document["chains"] = chain_vectors(device, phone_x, keyring_one)
    document["chains_review"] = chain_vectors(device, phone_x, keyring_one, REVIEW_CASES)
    document["chains_damaged"] = chain_vectors(device, phone_x, keyring_one, DAMAGED_CASES)
    document["keyring_v2"] = keyring_v2_vectors(device)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("v1.json")
    if target.exists():
        committed = json.loads(target.read_text())
        document = {**document, **committed}  # what was committed stays as it was
    target.write_text(json.dumps(document, indent=1) + "\n")


def keyring_v2_vectors(device: DeviceSigningKey) -> dict[str, object]:
    """Keyring document version 2 (FORMAT.md section 7): phones with roles and signing keys,
    hybrid secrets as X-Wing seeds, the document sealed in a keyring object, and broken
    documents with the error a reader gives."""
    added = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
    expires = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    roles = [
        ("test-owner", Role.OWNER, None),
        ("test-member", Role.MEMBER, None),
        ("test-guest", Role.GUEST, expires),
        ("test-recovery", Role.RECOVERY, None),
    ]
    phones = []
    keyring = Keyring()
    for name, role, until in roles:
        secret = RecipientPrivateKey(Suite.MLKEM768_X25519, _seeded(f"v2 {name} x-wing seed", 32))
        signing = PhoneSigningKey(_seeded(f"v2 {name} signing", 32))
        keyring = keyring.add(
            name,
            secret.public_key(),
            added,
            role=role,
            signing=None if role is Role.GUEST else signing.public_key,
            expires=until,
        )
        phones.append(
            {
                "name": name,
                "role": role.value,
                "secret": secret.to_string(),
                "secret_seed": secret.raw.hex(),
                "secret_expanded": secret.expanded.hex(),
                "public_raw": secret.public_key().raw.hex(),
                "signing_secret": signing.to_string(),
                "signing_public_raw": signing.public_key.raw.hex(),
                "identity": PhoneIdentity(secret.public_key(), signing.public_key).to_string(),
            }
        )
    document = keyring.to_json()
    time_us = 1_796_000_000_000_000
    data = seal_bytes(
        device,
        keyring,
        0,
        fmt.ZERO_PREV,
        fmt.Kind.KEYRING,
        {"epoch": keyring.epoch},
        document,
        time_us,
        _counter_random("keyring v2"),
    )
    parsed = json.loads(document)

    def broken(change: str, index: int | None, **fields: object) -> dict[str, object]:
        """The document with ``fields`` set (None: removed) in recipient ``index``, or at
        the top when ``index`` is None."""
        copy = json.loads(document)
        target = copy if index is None else copy["recipients"][index]
        for key, value in fields.items():
            if value is None:
                target.pop(key)
            else:
                target[key] = value
        return {"description": change, "document": copy}

    owner_signing = parsed["recipients"][0]["signing_key"]
    invalid = [
        (broken("unknown role", 0, role="admin"), "role"),
        (broken("role missing", 1, role=None), "role"),
        (broken("guest without expires", 2, expires=None), "expires"),
        (broken("member with expires", 1, expires="2027-01-01T00:00:00Z"), "expires"),
        (broken("expires before added", 2, expires="2026-12-01T00:00:00Z"), "expires"),
        (broken("signing key typo", 0, signing_key=owner_signing[:-2] + "aa"), "signing_key"),
        (broken("duplicate signing key", 1, signing_key=owner_signing), "signing keys"),
        (broken("version 3", None, version=3), "version"),
    ]
    return {
        "phones": phones,
        "document": parsed,
        "object": bytes(data).hex(),
        "invalid_documents": [{**case, "error": error} for case, error in invalid],
    }


if __name__ == "__main__":
    main()
