"""Live view's session objects and fragments (docs/FORMAT.md section 11): who can open
them, and every way a viewer, the broker or anyone else could try to slip in a
fragment another viewer would show."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from doorbell.sealing import DeviceSigningKey, RecipientPrivateKey, Suite, live

DETAILS = {
    "codec": "h264",
    "width": 1280,
    "height": 720,
    "fps": 30,
    "init": "AAAA",
    "viewers": ["a", "b"],
}
VECTORS = json.loads((Path(__file__).parent / "vectors" / "live-v1.json").read_text())


@pytest.fixture
def setting() -> tuple[DeviceSigningKey, RecipientPrivateKey, RecipientPrivateKey]:
    return (
        DeviceSigningKey.generate(),
        RecipientPrivateKey.generate(Suite.X25519),
        RecipientPrivateKey.generate(Suite.MLKEM768_X25519),
    )


def test_every_viewer_opens_the_session_and_its_fragments(setting: Any) -> None:
    device, alice, bob = setting
    data, sealer = live.start_session(device, [alice.public_key(), bob.public_key()], DETAILS)
    fragments = [sealer.seal(b"key" * 100, 1_000, True), sealer.seal(b"delta", 34_333, False)]
    for phone in (alice, bob):
        session = live.open_session(data, device.public_key, phone)
        assert session.details == DETAILS
        opened = [session.open(f) for f in fragments]
        assert [(f.counter, f.capture_us, f.keyframe, f.data) for f in opened] == [
            (1, 1_000, True, b"key" * 100),
            (2, 34_333, False, b"delta"),
        ]
    outsider = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
    with pytest.raises(live.LiveError, match="not for us"):
        live.open_session(data, device.public_key, outsider)
    with pytest.raises(live.LiveError, match="another doorbell"):
        live.open_session(data, DeviceSigningKey.generate().public_key, alice)


def test_a_viewer_holding_the_key_cannot_forge_for_another(setting: Any) -> None:
    """Alice has the session key: she can encrypt anything Bob would decrypt, but she
    cannot sign as the doorbell, and Bob checks the signature first."""
    device, alice, bob = setting
    data, sealer = live.start_session(device, [alice.public_key(), bob.public_key()], DETAILS)
    real = sealer.seal(b"frame", 10, True)
    bobs = live.open_session(data, device.public_key, bob)
    alices = live.open_session(data, device.public_key, alice)
    key = alices._aead  # what Alice holds once she opened the session
    head = struct.pack(">4sBB16sQ", b"DBLF", 1, 0, alices.session, 2)
    inner = struct.pack(">BQ", 1, 11) + b"a frame of Alice's choosing"
    body = head + key.encrypt(bytes(4) + (2).to_bytes(8, "big"), inner, head)
    for signature in (bytes(64), real[-64:], DeviceSigningKey.generate().sign(body)):
        with pytest.raises(live.LiveError, match="forged: not signed by the doorbell"):
            bobs.open(body + signature)
    assert bobs.open(real).data == b"frame"  # and Bob still takes the doorbell's


def test_replayed_reordered_and_foreign_fragments_are_refused(setting: Any) -> None:
    device, alice, _ = setting
    data, sealer = live.start_session(device, [alice.public_key()], DETAILS)
    first, second = sealer.seal(b"1", 1, True), sealer.seal(b"2", 2, False)
    session = live.open_session(data, device.public_key, alice)
    assert session.open(second).data == b"2"  # a lost fragment costs a frame, not the session
    with pytest.raises(live.LiveError, match="replayed or late: fragment 1 after 2"):
        session.open(first)
    with pytest.raises(live.LiveError, match="replayed or late: fragment 2 after 2"):
        session.open(second)
    _, other_sealer = live.start_session(device, [alice.public_key()], DETAILS)
    with pytest.raises(live.LiveError, match="foreign: a fragment of another session"):
        session.open(other_sealer.seal(b"x", 3, True))


def test_every_bit_of_a_fragment_matters(setting: Any) -> None:
    device, alice, _ = setting
    data, sealer = live.start_session(device, [alice.public_key()], DETAILS)
    fragment = sealer.seal(b"some frame bytes", 5, True)
    for index in range(len(fragment)):
        for bit in (0x01, 0x80):
            session = live.open_session(data, device.public_key, alice)
            flipped = bytearray(fragment)
            flipped[index] ^= bit
            with pytest.raises(live.LiveError):
                session.open(bytes(flipped))


def test_every_bit_of_a_session_object_matters(setting: Any) -> None:
    device, alice, _ = setting
    data, _ = live.start_session(device, [alice.public_key()], DETAILS)
    for index in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[index] ^= 0x10
        with pytest.raises(live.LiveError):
            live.open_session(bytes(flipped), device.public_key, alice)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_only_ever_a_live_error(raw: bytes) -> None:
    device = DeviceSigningKey(bytes(32))
    phone = RecipientPrivateKey(Suite.X25519, bytes(range(32)))
    with pytest.raises(live.LiveError):
        live.open_session(raw, device.public_key, phone)
    session = live.ViewerSession(device.public_key, bytes(16), bytes(32), {})
    with pytest.raises(live.LiveError):
        session.open(raw)


# --- the committed vectors, re-derived from FORMAT.md section 11 --------------------------


def test_the_vectors_open_as_the_spec_says() -> None:
    device = DeviceSigningKey.from_string(VECTORS["device_secret"])
    session_id = bytes.fromhex(VECTORS["session"])
    key = bytes.fromhex(VECTORS["session_key"])
    data = bytes.fromhex(VECTORS["session_object"])
    for viewer in VECTORS["viewers"]:
        phone = RecipientPrivateKey.from_string(viewer["secret"])
        public = phone.public_key()
        tag = hashlib.sha256(
            b"doorbell/v1 live recipient\0" + device.public_key.device_id + session_id
            + bytes([public.suite]) + public.raw
        ).digest()[:16]  # fmt: skip
        assert tag.hex() == viewer["tag"]
        session = live.open_session(data, device.public_key, phone)
        assert session.details == VECTORS["details"]
    # The details: AES-256-GCM under the session key, nonce 0, the header as AAD.
    header_len = VECTORS["session_header_len"]
    body = data[:-64]
    details = AESGCM(key).decrypt(bytes(12), body[header_len:], body[:header_len])
    assert json.loads(details) == VECTORS["details"]
    device.public_key.verify(
        data[-64:], b"doorbell live session v1\0" + hashlib.sha256(body).digest()
    )
    session = live.open_session(data, device.public_key, RecipientPrivateKey.from_string(
        VECTORS["viewers"][0]["secret"]))  # fmt: skip
    for expected in VECTORS["fragments"]:
        raw = bytes.fromhex(expected["fragment"])
        counter = int.from_bytes(raw[22:30], "big")
        inner = AESGCM(key).decrypt(bytes(4) + counter.to_bytes(8, "big"), raw[30:-64], raw[:30])
        assert inner[0] == (1 if expected["keyframe"] else 0)
        assert int.from_bytes(inner[1:9], "big") == expected["capture_us"]
        assert inner[9:].hex() == expected["data"]
        device.public_key.verify(
            raw[-64:], b"doorbell live fragment v1\0" + hashlib.sha256(raw[:-64]).digest()
        )
        opened = session.open(raw)
        assert (opened.counter, opened.data.hex()) == (counter, expected["data"])
    for case in VECTORS["invalid_fragments"]:
        fresh = live.open_session(data, device.public_key, RecipientPrivateKey.from_string(
            VECTORS["viewers"][0]["secret"]))  # fmt: skip
        for earlier in case.get("after", []):
            fresh.open(bytes.fromhex(VECTORS["fragments"][earlier]["fragment"]))
        with pytest.raises(live.LiveError, match=case["error"]):
            fresh.open(bytes.fromhex(case["fragment"]))
