"""Produces tests/vectors/live-v1.json once: a live session object for two viewers and
its fragments (docs/FORMAT.md section 11). The committed file is the contract.

Every private key here is a published TEST VECTOR. Never use one for anything real."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from doorbell.sealing import live
from doorbell.sealing.keys import DeviceSigningKey, RecipientPrivateKey, Suite


def _seeded(label: str, n: int) -> bytes:
    return hashlib.sha256(f"doorbell live vector {label}".encode()).digest()[:n]


def main() -> None:
    device = DeviceSigningKey(_seeded("device", 32))
    viewers = [
        RecipientPrivateKey(Suite.X25519, _seeded("viewer x25519", 32)),
        RecipientPrivateKey(Suite.MLKEM768_X25519, _seeded("viewer x-wing seed", 32)),
    ]
    session, key = _seeded("session", 16), _seeded("key", 32)
    details = {"started_us": 1_796_000_000_000_000, "codec": "h264", "width": 1280,
               "height": 720, "fps": 30, "init": "AAAAGGZ0eXA=", "viewers": ["a", "b"]}  # fmt: skip
    data, sealer = live.start_session(
        device, [v.public_key() for v in viewers], details, session=session, key=key
    )
    frames = [(b"\x00\x00\x00\x10moofkeyframe", 1_796_000_000_010_000, True),
              (b"\x00\x00\x00\x10moofdelta", 1_796_000_000_043_333, False)]  # fmt: skip
    fragments = [sealer.seal(body, at, keyframe) for body, at, keyframe in frames]
    flipped = bytearray(fragments[1])
    flipped[40] ^= 1
    other = DeviceSigningKey(_seeded("other device", 32))
    signed = b"doorbell live fragment v1\0" + hashlib.sha256(fragments[1][:-64]).digest()
    forged = fragments[1][:-64] + other.sign(signed)
    document = {
        "warning": "TEST VECTORS ONLY. Every private key in this file is public.",
        "device_secret": device.to_string(),
        "session": session.hex(),
        "session_key": key.hex(),
        "details": details,
        "session_header_len": 4
        + 1
        + 1
        + 32
        + 16
        + 1
        + sum(17 + v.suite.stanza_len for v in viewers),
        "viewers": [
            {
                "secret": v.to_string(),
                "tag": live.viewer_tag(
                    device.public_key.device_id, session, v.suite, v.public_key().raw
                ).hex(),
            }
            for v in viewers
        ],
        "session_object": data.hex(),
        "fragments": [
            {"fragment": f.hex(), "capture_us": at, "keyframe": keyframe, "data": body.hex()}
            for f, (body, at, keyframe) in zip(fragments, frames, strict=True)
        ],
        "invalid_fragments": [
            {
                "description": "a bit flipped in the ciphertext",
                "fragment": bytes(flipped).hex(),
                "error": "forged: not signed by the doorbell",
            },
            {
                "description": "signed by another key",
                "fragment": forged.hex(),
                "error": "forged: not signed by the doorbell",
            },
            {
                "description": "the first fragment after the second",
                "after": [1],
                "fragment": fragments[0].hex(),
                "error": "replayed or late",
            },
            {"description": "truncated", "fragment": fragments[0][:50].hex(), "error": "malformed"},
        ],
    }
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("live-v1.json")
    if target.exists():
        raise SystemExit(f"{target} exists: the committed vectors are never regenerated")
    target.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
