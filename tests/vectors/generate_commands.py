"""Produces tests/vectors/commands-v1.json once: a signed command, a signed answer (clear
and sealed to the phone), and the recovery key's derivation from its words
(docs/PROTOCOL.md sections 7 and 8). The committed file is the contract.

Every private key and secret here is a published TEST VECTOR. Never use one for anything
real."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from doorbell.sealing import commands as proto
from doorbell.sealing.keys import DeviceSigningKey, PhoneSigningKey, RecipientPrivateKey, Suite
from doorbell.sealing.recovery import RecoveryKey


def _seeded(label: str, n: int) -> bytes:
    return hashlib.sha256(f"doorbell commands vector {label}".encode()).digest()[:n]


def main() -> None:
    device = DeviceSigningKey(_seeded("device", 32))
    phone = RecipientPrivateKey(Suite.MLKEM768_X25519, _seeded("phone x-wing seed", 32))
    signing = PhoneSigningKey(_seeded("phone signing", 32))
    device_id = device.public_key.device_id
    nonce = _seeded("nonce", 16)
    command, _ = proto.sign_command(
        signing, device_id, "revoke", {"name": "old-tablet"}, 1_796_000_000, nonce
    )
    clear = proto.seal_answer(device, nonce, {"ok": False, "reason": "refused: an example"}, None)
    sealed = proto.seal_answer(
        device, nonce, {"ok": True, "revoked": "old-tablet", "epoch": 7}, phone.public_key()
    )
    paper = RecoveryKey(_seeded("recovery entropy", 32))
    document = {
        "warning": "TEST VECTORS ONLY. Every secret in this file is public.",
        "device_secret": device.to_string(),
        "device_id": device_id.hex(),
        "phone_secret": phone.to_string(),
        "phone_signing_secret": signing.to_string(),
        "nonce": nonce.hex(),
        "command": command.decode(),
        "answer_clear": clear.decode(),
        "answer_sealed": sealed.decode(),
        "recovery": {
            "entropy": paper.entropy.hex(),
            "words": paper.words,
            "x_wing_seed": paper.secret.raw.hex(),
            "signing_secret": paper.signing.to_string(),
            "identity": paper.identity.to_string(),
        },
    }
    target = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("commands-v1.json")
    )
    if target.exists():
        raise SystemExit(f"{target} exists: the committed vectors are never regenerated")
    target.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
