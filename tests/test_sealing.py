"""The sealer and the reader: round trips, tampering, forgery, key hygiene, revocation,
sequence numbers, and hostile-input parsing of the object format.

Where a test needs to look inside an object it works from docs/FORMAT.md, not from the
product's own helpers, so a format slip on both sides cannot cancel out.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import json
import os
import stat
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorbell import cli as device_cli
from doorbell.capture.synthetic import SyntheticSource
from doorbell.phone.chain import Verification, verify_source
from doorbell.phone.objects import DirectorySource
from doorbell.sealing import (
    BadSignature,
    ChainHead,
    DecryptionFailed,
    DevicePublicKey,
    DeviceSigningKey,
    KeyFileError,
    Keyring,
    KeyringStore,
    KeyStringError,
    Kind,
    MalformedObject,
    NoRecipients,
    NotARecipient,
    Reader,
    RecipientPrivateKey,
    RecipientPublicKey,
    Scratch,
    SealedObject,
    Sealer,
    SealingError,
    Suite,
    UntrustedDevice,
    write_atomic,
)
from doorbell.sealing import format as fmt
from doorbell.sealing.sealer import seal_bytes
from doorbell.sealing.state import HEAD_BLOCK, SequenceFile
from doorbell.transport.local import LocalDirectorySink

X, M = Suite.X25519, Suite.MLKEM768_X25519
Enrol = Callable[..., RecipientPrivateKey]
FIXED_TIME_US = 1_764_450_000_250_000  # conftest.FIXED_TIME in microseconds
FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --- FORMAT.md, written out independently of doorbell.sealing.format -------------------

MAGIC = b"\x89DBELL\r\n"
WRAPPED_LEN = {1: 80, 2: 1168}
NOW = datetime(2026, 11, 29, 21, 50, tzinfo=UTC)


def header_len(data: bytes) -> int:
    offset = 95
    for _ in range(data[94]):
        offset += 17 + WRAPPED_LEN[data[offset]]
    return offset + 8


def ciphertext_len(data: bytes) -> int:
    h = header_len(data)
    return int.from_bytes(data[h - 8 : h], "big")


def stanzas(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(suite byte, recipient tag, wrapped key) of every stanza."""
    out, offset = [], 95
    for _ in range(data[94]):
        suite = data[offset]
        end = offset + 17 + WRAPPED_LEN[suite]
        out.append((suite, data[offset + 1 : offset + 17], data[offset + 17 : end]))
        offset = end
    return out


def recover_data_key(data: bytes, phone: RecipientPrivateKey) -> bytes:
    """Unwrap an object's data key with a phone's secret key, per FORMAT.md 3.2."""
    device_id, seq = data[10:42], data[42:50]
    suite = bytes([phone.suite])
    tag = hashlib.sha256(
        b"doorbell/v1 recipient\0" + device_id + seq + suite + phone.public_key().raw
    ).digest()[:16]
    info = b"doorbell/v1 data key\0" + device_id + seq + suite + tag
    if phone.suite is X:
        kem, secret = hpke.KEM.X25519, x25519.X25519PrivateKey.from_private_bytes(phone.raw)
    else:
        kem = hpke.KEM.MLKEM768_X25519
        # FORMAT.md section 1: the 32-byte X-Wing seed expands by SHAKE256 to 96 bytes.
        expanded = phone.raw if len(phone.raw) == 96 else hashlib.shake_256(phone.raw).digest(96)
        secret = hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
            x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
        )
    hpke_suite = hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    for suite_byte, stanza_tag, wrapped in stanzas(data):
        if suite_byte == phone.suite and stanza_tag == tag:
            return hpke_suite.decrypt(wrapped, secret, info=info)
    raise AssertionError("no stanza for this phone")


def decrypt_payload(data: bytes, data_key: bytes) -> bytes:
    h = header_len(data)
    return AESGCM(data_key).decrypt(data[82:94], data[h : h + ciphertext_len(data)], data[:h])


def padme(length: int) -> int:
    if length < 2:
        return length
    e = length.bit_length() - 1  # floor(log2(L))
    s = e.bit_length()  # floor(log2(E)) + 1
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


SIZE_CLASS = 65536


def padded(kind: Kind, length: int) -> int:
    """What a Doorbell writer pads a payload to (FORMAT.md section 4, "Doorbell writers")."""
    if kind is Kind.SEGMENT:
        return padme(length)
    size = SIZE_CLASS
    while size < length:
        size *= 2
    return size


def sealed_bytes(objects: list[SealedObject]) -> list[bytes]:
    return [bytes(o.data) for o in objects]


# --- 1. round trips ---------------------------------------------------------------------

ROSTERS = {
    "1-x25519": [X],
    "1-mlkem": [M],
    "2-x25519": [X, X],
    "2-mlkem": [M, M],
    "2-mixed": [X, M],
    "16-x25519": [X] * 16,
    "16-mixed": [X, M] * 8,
}


@pytest.mark.parametrize("suites", ROSTERS.values(), ids=ROSTERS.keys())
def test_every_recipient_opens_the_same_payload(
    state_dir: Path, enrol: Enrol, fixed_clock: Callable[[], float], suites: list[Suite]
) -> None:
    phones = [enrol(f"phone {i}", suite) for i, suite in enumerate(suites)]
    meta = {"type": "ring", "clip": "ab" * 16, "camera": "porte d'entrée ☃", "first_index": 3}
    body = bytes(range(256)) * 5 + b"jpeg"
    with Sealer(state_dir, clock=fixed_clock) as sealer:
        sealed = sealer.seal(Kind.EVENT, meta, body)
        device = sealer.device_key

    assert [(s.kind, s.seq) for s in sealed] == [(Kind.KEYRING, 0), (Kind.EVENT, 1)]
    keyring_object, event = sealed_bytes(sealed)
    assert [suite for suite, _, _ in stanzas(event)] == [int(s) for s in suites]
    for phone in phones:
        reader = Reader([phone], [device])
        opened = reader.open(event)
        assert (opened.kind, opened.seq, opened.epoch) == (Kind.EVENT, 1, len(suites))
        assert opened.meta == meta
        assert bytes(opened.body) == body
        assert opened.time_us == FIXED_TIME_US
        announced = reader.open(keyring_object)
        assert announced.kind is Kind.KEYRING
        assert announced.meta == {"epoch": len(suites)}
        listed = Keyring.from_json(announced.body, "keyring object")
        assert [r.name for r in listed.recipients] == [f"phone {i}" for i in range(len(suites))]

    for suite in Suite:
        outsider = Reader([RecipientPrivateKey.generate(suite)], [device])
        with pytest.raises(NotARecipient, match="not sealed to this phone"):
            outsider.open(event)


def test_a_phone_with_several_keys_opens_with_whichever_is_enrolled(
    state_dir: Path, enrol: Enrol
) -> None:
    enrolled = enrol("tablet", M)
    with Sealer(state_dir) as sealer:
        event = bytes(sealer.seal(Kind.EVENT, {}, b"x")[-1].data)
        device = sealer.device_key
    reader = Reader([RecipientPrivateKey.generate(X), enrolled], [device])
    assert bytes(reader.open(event).body) == b"x"


def test_objects_opened_into_one_scratch_match_objects_opened_alone(
    state_dir: Path, enrol: Enrol
) -> None:
    """Small, large, then small again: the scratch grows while a body of the smaller buffer
    is still held, and each body is the one its object carries."""
    phone = enrol("alice", M)
    bodies = [b"a" * 10, os.urandom(300_000), b"c" * 7, os.urandom(700_000), b""]
    with Sealer(state_dir) as sealer:
        sealed = [
            sealer.seal(Kind.SEGMENT, {"index": i}, body)[-1] for i, body in enumerate(bodies)
        ]
        device = sealer.device_key
    reader = Reader([phone], [device])
    scratch = Scratch()
    held = []
    for body, data in zip(bodies, sealed_bytes(sealed), strict=True):
        opened = reader.open_envelope(reader.verify(data), scratch)
        assert bytes(opened.body) == body == bytes(reader.open(data).body)
        assert opened.meta == reader.open(data).meta
        held.append(opened.body)
    # A body lasts until the next object is opened into the same buffer; after growing,
    # the old buffer stays whole for whoever still holds a view of it.
    assert bytes(held[0]) == bodies[0]


@pytest.mark.parametrize("kind", [Kind.NOTICE, Kind.SEGMENT], ids=["notice", "segment"])
@pytest.mark.parametrize("size", [0, 1, 13, 200, 4096, 100_003])
def test_payload_layout_and_padding_follow_the_spec(
    state_dir: Path, enrol: Enrol, fixed_clock: Callable[[], float], size: int, kind: Kind
) -> None:
    phone = enrol("phone")
    body = os.urandom(size)
    meta = {"notice": "clip-end", "last_index": 7}
    with Sealer(state_dir, clock=fixed_clock) as sealer:
        data = bytes(sealer.seal(kind, meta, body)[-1].data)

    assert data[:10] == MAGIC + b"\x01\x00"
    assert len(data) == header_len(data) + ciphertext_len(data) + 64
    plain = decrypt_payload(data, recover_data_key(data, phone))
    kind_byte, reserved, epoch, time_us, m = struct.unpack_from(">BBIqH", plain)
    assert (kind_byte, reserved, epoch, time_us) == (kind, 0, 1, FIXED_TIME_US)
    assert json.loads(plain[16 : 16 + m]) == meta
    (b,) = struct.unpack_from(">I", plain, 16 + m)
    assert plain[20 + m : 20 + m + b] == body
    length = 20 + m + b
    assert len(plain) == padded(kind, length)
    assert ciphertext_len(data) == padded(kind, length) + 16
    assert plain[length:] == bytes(len(plain) - length)
    if kind is Kind.NOTICE:
        assert len(plain) == (SIZE_CLASS if length <= SIZE_CLASS else 2 * SIZE_CLASS)


# --- 1b. one size for everything but media segments -----------------------------------------

STREAM, CLIP = "5e" * 16, "c1" * 16


def _real_snapshot() -> bytes:
    """A JPEG from the snapshot code, of the synthetic 720p camera's picture, 640 px wide."""
    source = SyntheticSource(1280, 720, fps=15, realtime=False, seconds=1.0)
    try:
        for _unit in source.frames():
            snapshot = source.snapshot(640)
            if snapshot is not None:
                return snapshot
    finally:
        source.close()
    raise AssertionError("the synthetic camera made no picture")


def _every_small_kind(snapshot: bytes, keyring: Keyring) -> dict[str, tuple[Kind, Any, bytes]]:
    """One payload of every kind but media segments, with the meta the daemon writes (the
    restart notice comes from the sealer itself)."""
    event = {"clip": CLIP, "stream": STREAM, "first_index": 0, "position": 3.5, "camera": "door"}
    return {
        "ring with snapshot": (Kind.EVENT, {"type": "ring", **event}, snapshot),
        "motion without snapshot": (Kind.EVENT, {"type": "motion", **event}, b""),
        "clip-end": (
            Kind.NOTICE,
            {"notice": "clip-end", "clip": CLIP, "stream": STREAM, "last_index": 4,
             "reason": "post-roll"},
            b"",
        ),
        "discarded": (
            Kind.NOTICE,
            {"notice": "discarded", "reason": "quota",
             "ranges": [{"first": 1, "last": 3, "last_hash": "cd" * 32}]},
            b"",
        ),
        "init": (
            Kind.INIT,
            {"stream": STREAM, "codec": "h264", "width": 1280, "height": 720, "fps": 30,
             "camera": "door"},
            b"ftyp" + os.urandom(700) + b"moov",
        ),
        "keyring": (Kind.KEYRING, {"epoch": keyring.epoch}, keyring.to_json()),
    }  # fmt: skip


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("suites", [[M], [X, M, M, X, M]], ids=["1 phone", "5 phones"])
def test_events_notices_keyrings_and_inits_are_one_size(
    state_dir: Path, enrol: Enrol, suites: list[Suite]
) -> None:
    phones = [enrol(f"phone {i}", suite) for i, suite in enumerate(suites)]
    snapshot = _real_snapshot()
    assert 10_000 < len(snapshot) < SIZE_CLASS // 2, "the synthetic camera's 640 px JPEG"
    # The keyring object the sealer publishes first, and a restart notice of its own: the
    # sealer is dropped without closing, as a power cut would, and started again.
    first_run = Sealer(state_dir)
    published = first_run.seal(Kind.EVENT, RING, b"")
    device = first_run.device_key
    del first_run
    gc.collect()
    with Sealer(state_dir) as sealer:
        restarted = sealer.seal(Kind.EVENT, RING, b"")
        assert [o.kind for o in restarted] == [Kind.NOTICE, Kind.KEYRING, Kind.EVENT]
        objects = {"published keyring": published[0], "restart notice": restarted[0]}
        for name, (kind, meta, body) in _every_small_kind(snapshot, sealer.keyring).items():
            objects[name] = sealer.seal(kind, meta, body)[-1]

    reader = Reader(phones, [device])
    sizes = {name: len(sealed.data) for name, sealed in objects.items()}
    for name, sealed in objects.items():
        assert reader.open(bytes(sealed.data)).kind is sealed.kind, name
        assert ciphertext_len(bytes(sealed.data)) == SIZE_CLASS + 16, name
    assert len(set(sizes.values())) == 1, sizes
    stanza_bytes = sum(17 + WRAPPED_LEN[s] for s in suites)
    assert set(sizes.values()) == {95 + stanza_bytes + 8 + SIZE_CLASS + 16 + 64}


def test_what_outgrows_the_size_class_takes_the_next_doubling(
    state_dir: Path, enrol: Enrol
) -> None:
    # 40 hybrid phones make a keyring document of about 85 KB; a 70 KB snapshot.
    phones = [enrol(f"phone {i:02}", M) for i in range(40)]
    big_snapshot = b"\xff\xd8" + os.urandom(70_000) + b"\xff\xd9"
    huge_snapshot = b"\xff\xd8" + os.urandom(200_000) + b"\xff\xd9"
    with Sealer(state_dir) as sealer:
        keyring_object, small = sealer.seal(Kind.EVENT, RING, b"")
        big = sealer.seal(Kind.EVENT, RING, big_snapshot)[-1]
        huge = sealer.seal(Kind.EVENT, RING, huge_snapshot)[-1]
        notice = sealer.seal_notice({"notice": "clip-end", "clip": CLIP, "stream": STREAM,
                                     "last_index": 0, "reason": "shutdown"})[-1]  # fmt: skip
        device = sealer.device_key

    assert 2 * SIZE_CLASS > len(KeyringStore(state_dir).load().to_json()) > SIZE_CLASS
    lengths = {
        name: ciphertext_len(bytes(sealed.data)) - 16
        for name, sealed in [("keyring", keyring_object), ("empty event", small),
                             ("70 KB snapshot", big), ("200 KB snapshot", huge),
                             ("notice", notice)]
    }  # fmt: skip
    assert lengths == {
        "keyring": 2 * SIZE_CLASS,
        "empty event": SIZE_CLASS,
        "70 KB snapshot": 2 * SIZE_CLASS,
        "200 KB snapshot": 4 * SIZE_CLASS,
        "notice": SIZE_CLASS,
    }
    reader = Reader([phones[-1]], [device])
    assert bytes(reader.open(bytes(huge.data)).body) == huge_snapshot


def test_the_doubling_stops_at_the_largest_ciphertext_a_reader_accepts() -> None:
    largest = fmt.MIN_INNER + fmt.MAX_META + fmt.MAX_BODY
    assert fmt.padded_payload_len(Kind.EVENT, largest) == fmt.MAX_CIPHERTEXT - 16 >= largest
    assert fmt.padded_payload_len(Kind.EVENT, 64 * 2**20) == 64 * 2**20
    assert fmt.padded_payload_len(Kind.EVENT, 64 * 2**20 + 1) == fmt.MAX_CIPHERTEXT - 16
    assert fmt.padded_payload_len(Kind.SEGMENT, largest) == fmt.MAX_CIPHERTEXT - 16


def test_empty_keyring_seals_nothing(state_dir: Path) -> None:
    with Sealer(state_dir) as sealer, pytest.raises(NoRecipients, match="no phone is enrolled"):
        sealer.seal(Kind.EVENT, {}, b"")
    assert not (state_dir / "head.bin").exists()


# --- 2. every bit flip, every truncation, every appended byte ----------------------------


@pytest.fixture
def small_object(state_dir: Path, enrol: Enrol) -> tuple[bytes, Reader]:
    phone = enrol("phone")
    with Sealer(state_dir) as sealer:
        # A media segment: Padmé keeps it small, so every one of its bits can be flipped.
        data = bytes(sealer.seal(Kind.SEGMENT, {}, b"hi!")[-1].data)
        device = sealer.device_key
    return data, Reader([phone], [device])


def _expected_error(offset: int, data: bytes) -> type[SealingError]:
    """Which error a flipped bit at ``offset`` must cause (single x25519 stanza)."""
    h = header_len(data)
    if offset < 10 or offset in (94, 95) or h - 8 <= offset < h:
        return MalformedObject  # magic, version, flags, stanza count, suite, ct length
    if 10 <= offset < 42:
        return UntrustedDevice  # the device id now names a device nobody pinned
    return BadSignature  # seq, prev, nonce, stanza, ciphertext, signature


def test_every_single_bit_flip_is_rejected(small_object: tuple[bytes, Reader]) -> None:
    data, reader = small_object
    assert bytes(reader.open(data).body) == b"hi!"
    assert len(data) == 95 + 97 + 8 + ciphertext_len(data) + 64
    wrong: list[str] = []
    for offset in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[offset] ^= 1 << bit
            expected = _expected_error(offset, data)
            try:
                reader.open(bytes(flipped))
            except SealingError as exc:
                if type(exc) is not expected:
                    wrong.append(f"byte {offset} bit {bit}: {type(exc).__name__}: {exc}")
            else:
                wrong.append(f"byte {offset} bit {bit}: accepted")
    assert not wrong, "\n".join(wrong[:20])


def test_every_truncation_is_malformed(small_object: tuple[bytes, Reader]) -> None:
    data, reader = small_object
    for length in range(len(data)):
        with pytest.raises(MalformedObject, match=r"truncated|bad magic"):
            reader.open(data[:length])


def test_truncated_messages_name_the_field(small_object: tuple[bytes, Reader]) -> None:
    data, reader = small_object
    with pytest.raises(MalformedObject, match="shorter than the magic"):
        reader.open(data[:5])
    with pytest.raises(MalformedObject, match="truncated header"):
        reader.open(data[:50])
    with pytest.raises(MalformedObject, match="stanza 0: truncated"):
        reader.open(data[:120])
    with pytest.raises(MalformedObject, match="ciphertext length: truncated"):
        reader.open(data[: header_len(data) - 3])
    with pytest.raises(MalformedObject, match=f"truncated: object is {len(data) - 1} bytes"):
        reader.open(data[:-1])


@pytest.mark.parametrize("extra", [b"\x00", b"\xff", b"\x00" * 64, b"garbage"])
def test_any_trailing_bytes_are_rejected(small_object: tuple[bytes, Reader], extra: bytes) -> None:
    data, reader = small_object
    with pytest.raises(MalformedObject, match="trailing bytes"):
        reader.open(data + extra)
    with pytest.raises(MalformedObject, match="trailing bytes"):
        reader.verify(data + extra)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (8, 2, "unsupported version 2"),
        (9, 1, "flags byte is 0x01"),
        (94, 0, "stanza count 0 is outside 1..64"),
        (94, 65, "stanza count 65 is outside 1..64"),
        (95, 3, "stanza 0: unknown suite 3"),
    ],
)
def test_header_fields_are_checked_by_name(
    small_object: tuple[bytes, Reader], offset: int, value: int, message: str
) -> None:
    data, reader = small_object
    patched = bytearray(data)
    patched[offset] = value
    with pytest.raises(MalformedObject, match=message):
        reader.open(bytes(patched))


@pytest.mark.parametrize("ct_len", [0, 35, fmt.MAX_CIPHERTEXT + 1, 2**64 - 1])
def test_ciphertext_length_outside_bounds_is_rejected(
    small_object: tuple[bytes, Reader], ct_len: int
) -> None:
    data, reader = small_object
    h = header_len(data)
    patched = data[: h - 8] + ct_len.to_bytes(8, "big") + data[h:]
    with pytest.raises(MalformedObject, match=f"ciphertext length {ct_len} is outside"):
        reader.open(patched)


# --- 3. forgery ---------------------------------------------------------------------------


class Impostor:
    """Claims another device's id but can only sign with its own key."""

    def __init__(self, own: DeviceSigningKey, claimed: DevicePublicKey) -> None:
        self._own = own
        self.public_key = claimed

    def sign(self, message: bytes) -> bytes:
        return self._own.sign(message)


@pytest.fixture
def real_stream(state_dir: Path, enrol: Enrol) -> tuple[list[bytes], RecipientPrivateKey, Reader]:
    """Objects from the real device, the phone enrolled in it, and that phone's reader."""
    phone = enrol("alice", M)
    with Sealer(state_dir) as sealer:
        objects = sealed_bytes(sealer.seal(Kind.EVENT, {"type": "ring"}, b"real snapshot"))
        device = sealer.device_key
    return objects, phone, Reader([phone], [device])


def _public_keyring(*phones: RecipientPrivateKey) -> Keyring:
    keyring = Keyring()
    for index, phone in enumerate(phones):
        keyring = keyring.add(f"phone {index}", phone.public_key(), NOW)
    return keyring


def test_object_signed_by_another_key_is_untrusted(
    real_stream: tuple[list[bytes], RecipientPrivateKey, Reader],
) -> None:
    objects, phone, reader = real_stream
    forger = DeviceSigningKey.generate()
    prev = fmt.chain_hash(objects[-1][-64:])
    forged = seal_bytes(forger, _public_keyring(phone), 2, prev, Kind.EVENT, {}, b"fake", 0)
    with pytest.raises(UntrustedDevice, match=forger.public_key.device_id.hex()[:16]):
        reader.open(forged)
    # It is a well-formed object a reader trusting the forger would open.
    assert bytes(Reader([phone], [forger.public_key]).open(forged).body) == b"fake"


def test_object_claiming_the_real_device_id_fails_the_signature(
    real_stream: tuple[list[bytes], RecipientPrivateKey, Reader],
) -> None:
    objects, phone, reader = real_stream
    real_id = objects[-1][10:42]
    device = reader.device(real_id)
    impostor = Impostor(DeviceSigningKey.generate(), device)
    prev = fmt.chain_hash(objects[-1][-64:])
    keyring = _public_keyring(phone)
    forged = bytes(seal_bytes(impostor, keyring, 2, prev, Kind.EVENT, {}, b"fake", 0))  # type: ignore[arg-type]
    assert forged[10:42] == real_id
    # Everything but the signature is right: the phone's stanza unwraps.
    assert len(recover_data_key(forged, phone)) == 32
    with pytest.raises(BadSignature, match="does not verify"):
        reader.open(forged)
    with pytest.raises(BadSignature):
        reader.verify(forged)


def test_device_id_patched_into_a_forgers_object_fails_the_signature(
    real_stream: tuple[list[bytes], RecipientPrivateKey, Reader],
) -> None:
    objects, phone, reader = real_stream
    forger = DeviceSigningKey.generate()
    keyring = _public_keyring(phone)
    forged = bytearray(seal_bytes(forger, keyring, 5, bytes(32), Kind.EVENT, {}, b"", 0))
    forged[10:42] = objects[-1][10:42]
    with pytest.raises(BadSignature):
        reader.open(bytes(forged))


def test_signature_moved_from_another_object_fails(
    real_stream: tuple[list[bytes], RecipientPrivateKey, Reader],
) -> None:
    (keyring_object, event), _, reader = real_stream
    spliced = event[:-64] + keyring_object[-64:]
    with pytest.raises(BadSignature):
        reader.open(spliced)


def test_recipient_cannot_reencrypt_under_the_original_header(
    real_stream: tuple[list[bytes], RecipientPrivateKey, Reader],
) -> None:
    objects, phone, reader = real_stream
    data = objects[-1]
    data_key = recover_data_key(data, phone)
    plain = decrypt_payload(data, data_key)
    assert b"real snapshot" in plain
    evil = plain.replace(b"real snapshot", b"fake snapshot")
    h = header_len(data)
    ciphertext = AESGCM(data_key).encrypt(data[82:94], evil, data[:h])
    assert len(ciphertext) == ciphertext_len(data)
    forged = data[:h] + ciphertext + data[h + len(ciphertext) :]

    # The GCM tag is valid: only the signature stands between the phone and the forgery.
    unchecked = reader.open_envelope(fmt.parse_envelope(forged))
    assert bytes(unchecked.body) == b"fake snapshot"
    with pytest.raises(BadSignature, match="does not verify"):
        reader.open(forged)


def test_genuine_object_of_an_unpinned_device_is_untrusted(
    tmp_path: Path, real_stream: tuple[list[bytes], RecipientPrivateKey, Reader]
) -> None:
    _, phone, reader = real_stream
    other_state = tmp_path / "other-doorbell"
    other_state.mkdir()
    with KeyringStore(other_state).editing() as box:
        box[0] = box[0].add("alice", phone.public_key(), NOW)
    with Sealer(other_state) as other:
        foreign = bytes(other.seal(Kind.EVENT, {}, b"")[-1].data)
        other_id = other.device_key.device_id.hex()[:16]
    with pytest.raises(UntrustedDevice, match=f"signed by device {other_id}"):
        reader.open(foreign)
    with pytest.raises(UntrustedDevice):
        reader.verify(foreign)


# --- 4. the device keeps no data key ---------------------------------------------------


def _walk_bytes(root: object) -> Iterator[bytes]:
    """Every bytes-like value reachable from our own objects' attributes and containers."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, bytes | bytearray | memoryview):
            yield bytes(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif type(obj).__module__.startswith("doorbell"):
            stack.extend(getattr(obj, "__dict__", {}).values())
            for slot in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, slot):
                    stack.append(getattr(obj, slot))


def test_device_cannot_open_what_it_sealed(state_dir: Path, enrol: Enrol) -> None:
    phone = enrol("alice")
    sealer = Sealer(state_dir)
    sealed = sealed_bytes(sealer.seal(Kind.EVENT, {"type": "ring"}, b"snapshot"))
    sealed += sealed_bytes(sealer.seal(Kind.SEGMENT, {"index": 0}, b"video"))
    device = sealer.device_key
    data_keys = [recover_data_key(data, phone) for data in sealed]

    in_memory = list(_walk_bytes(sealer))
    assert in_memory, "the walk should at least reach the sealer's own state"
    sealer.close()
    files = {p: p.read_bytes() for p in state_dir.rglob("*") if p.is_file()}
    assert {p.name for p in files} >= {"device.key", "keyring.json", "sequence.json", "head.bin"}
    for data_key in data_keys:
        for form in (data_key, data_key.hex().encode()):
            for path, content in files.items():
                assert form not in content, f"a data key is stored in {path}"
            assert not any(form in blob for blob in in_memory), "the sealer still holds a data key"

    # Any key material the device has, tried as a recipient key, opens nothing.
    device_key_text = "".join(files[state_dir / "device.key"].decode().split())
    assert device_key_text.startswith("dbdevsec-ed25519-")
    body = device_key_text.removeprefix("dbdevsec-ed25519-").upper()
    seed = base64.b32decode(body + "=" * (-len(body) % 8))[:32]
    candidates = [RecipientPrivateKey(X, seed)]
    candidates += [RecipientPrivateKey(X, blob[:32]) for blob in files.values() if len(blob) >= 32]
    for data in sealed:
        for candidate in candidates:
            with pytest.raises(NotARecipient):
                Reader([candidate], [device]).open(data)


# --- 5. revocation and enrolment take effect on the next object ---------------------------


def test_revocation_applies_to_the_next_object(state_dir: Path, enrol: Enrol) -> None:
    alice, bob = enrol("alice"), enrol("bob", M)
    sealer = Sealer(state_dir)
    device = sealer.device_key
    before = sealed_bytes(sealer.seal(Kind.EVENT, {"n": 1}, b"before"))
    with KeyringStore(state_dir).editing() as box:
        box[0] = box[0].revoke("bob")
    after = sealer.seal(Kind.EVENT, {"n": 2}, b"after")
    sealer.close()

    assert [o.kind for o in after] == [Kind.KEYRING, Kind.EVENT]
    alice_reader, bob_reader = Reader([alice], [device]), Reader([bob], [device])
    for data in before:
        alice_reader.open(data)
        bob_reader.open(data)
    for data in sealed_bytes(after):
        assert len(stanzas(data)) == 1
        with pytest.raises(NotARecipient):
            bob_reader.open(data)
    announced = alice_reader.open(bytes(after[0].data))
    assert announced.meta == {"epoch": 3}
    assert [r.name for r in Keyring.from_json(announced.body, "k").recipients] == ["alice"]
    event = alice_reader.open(bytes(after[1].data))
    assert (bytes(event.body), event.epoch) == (b"after", 3)


def test_phone_added_by_the_cli_gets_the_next_object(
    state_dir: Path, enrol: Enrol, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = enrol("alice", M)
    sealer = Sealer(state_dir)
    first = sealer.seal(Kind.EVENT, {}, b"one")
    newcomer = RecipientPrivateKey.generate(M)
    argv = ["keys", "--state", str(state_dir), "add", "bob", newcomer.public_key().to_string()]
    assert device_cli.main(argv) == 0
    capsys.readouterr()
    following = sealer.seal(Kind.EVENT, {}, b"two")
    device = sealer.device_key
    sealer.close()

    assert [o.kind for o in following] == [Kind.KEYRING, Kind.EVENT]
    bob = Reader([newcomer], [device])
    opened = bob.open(bytes(following[-1].data))
    assert (bytes(opened.body), opened.epoch) == (b"two", 2)
    assert bob.open(bytes(following[0].data)).meta == {"epoch": 2}
    with pytest.raises(NotARecipient):
        bob.open(bytes(first[-1].data))
    assert bytes(Reader([alice], [device]).open(bytes(following[-1].data)).body) == b"two"


# --- 6. sequence numbers -----------------------------------------------------------------


# An event with every key the phone's verifier requires (FORMAT.md section 4.1).
RING = {"type": "ring", "clip": "c" * 32, "stream": "", "first_index": 0}


def _chain_ok(objects: list[SealedObject], tmp_path: Path, reader: Reader) -> Verification:
    bucket = tmp_path / "bucket"
    sink = LocalDirectorySink(bucket)
    for sealed in objects:
        sink.deliver(sealed.name, sealed.data, sealed.kind)
    return verify_source(DirectorySource(bucket), reader)


def test_clean_restart_continues_the_sequence(state_dir: Path, enrol: Enrol) -> None:
    enrol("alice")
    with Sealer(state_dir) as sealer:
        run1 = sealer.seal(Kind.EVENT, {}, b"1") + sealer.seal(Kind.EVENT, {}, b"2")
    assert json.loads((state_dir / "sequence.json").read_text()) == {"next": 3}
    with Sealer(state_dir) as sealer:
        run2 = sealer.seal(Kind.EVENT, {}, b"3")
    assert [(o.seq, o.kind) for o in run1 + run2] == [
        (0, Kind.KEYRING),
        (1, Kind.EVENT),
        (2, Kind.EVENT),
        (3, Kind.KEYRING),
        (4, Kind.EVENT),
    ]
    envelope = fmt.parse_envelope(run2[0].data)
    assert envelope.prev == fmt.chain_hash(bytes(run1[-1].data[-64:]))


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("block", [1024, 4])
def test_unclean_stop_announces_the_skipped_block(
    state_dir: Path, enrol: Enrol, tmp_path: Path, block: int
) -> None:
    alice = enrol("alice")
    sealer = Sealer(state_dir, block=block)
    device = sealer.device_key
    run1 = sealer.seal(Kind.EVENT, RING, b"1") + sealer.seal(Kind.EVENT, RING, b"2")
    run1 += sealer.seal(Kind.EVENT, RING, b"3") + sealer.seal(Kind.EVENT, RING, b"4")
    run1 += sealer.seal(Kind.EVENT, RING, b"5")
    del sealer
    gc.collect()
    reserved = -(-6 // block) * block  # the blocks run 1 durably reserved
    assert json.loads((state_dir / "sequence.json").read_text()) == {"next": reserved}

    with Sealer(state_dir, block=block) as sealer:
        run2 = sealer.seal(Kind.EVENT, RING, b"after")
    assert [(o.seq, o.kind) for o in run2] == [
        (reserved, Kind.NOTICE),
        (reserved + 1, Kind.KEYRING),
        (reserved + 2, Kind.EVENT),
    ]
    reader = Reader([alice], [device])
    notice = reader.open(bytes(run2[0].data))
    head_hash = fmt.chain_hash(bytes(run1[-1].data[-64:]))
    assert notice.meta == {
        "notice": "restart",
        "previous": {"seq": 5, "hash": head_hash.hex()},
        "skipped": {"first": 6, "last": reserved - 1},
    }
    assert notice.prev == head_hash
    result = _chain_ok(run1 + run2, tmp_path, reader)
    assert result.ok, result.problems


@pytest.mark.parametrize("damage", ["delete", "garbage", "zeros", "short"])
def test_lost_or_corrupt_head_file_never_reuses_a_number(
    state_dir: Path, enrol: Enrol, tmp_path: Path, damage: str
) -> None:
    alice = enrol("alice")
    with Sealer(state_dir) as sealer:
        run1 = sealer.seal(Kind.EVENT, RING, b"1")
        device = sealer.device_key
    head = state_dir / "head.bin"
    if damage == "delete":
        head.unlink()
    elif damage == "garbage":
        head.write_bytes(os.urandom(len(head.read_bytes())))
    elif damage == "zeros":
        head.write_bytes(bytes(len(head.read_bytes())))
    else:
        head.write_bytes(head.read_bytes()[:20])

    with Sealer(state_dir) as sealer:
        run2 = sealer.seal(Kind.EVENT, RING, b"2")
    assert [o.seq for o in run1] == [0, 1]
    assert [(o.seq, o.kind) for o in run2] == [(2, Kind.NOTICE), (3, Kind.KEYRING), (4, Kind.EVENT)]
    reader = Reader([alice], [device])
    notice = reader.open(bytes(run2[0].data))
    assert notice.meta == {
        "notice": "restart",
        "previous": None,
        "skipped": {"first": 0, "last": 1},
    }
    assert notice.prev == bytes(32)
    # A phone holding seq 0 and 1 cannot accept "no head was recorded": that notice would
    # explain away the whole history (FORMAT.md section 6.2).
    result = _chain_ok(run1 + run2, tmp_path, reader)
    assert [f.code for f in result.problems] == ["restart-mismatch", "notice-hides-delivered"]


def _head_slot(head: ChainHead) -> bytes:
    body = head.seq.to_bytes(8, "big") + head.hash
    return body + hashlib.sha256(body).digest()[:8]


def test_a_torn_sector_of_the_head_file_leaves_the_other_slot(state_dir: Path) -> None:
    older, newer = ChainHead(7, b"\x07" * 32), ChainHead(8, b"\x08" * 32)
    state_dir.mkdir()
    sequence = SequenceFile(state_dir)
    sequence.record(older, sync=True)
    sequence.record(newer, sync=True)
    sequence.close()
    head = state_dir / "head.bin"
    raw = bytearray(head.read_bytes())
    assert raw[HEAD_BLOCK : HEAD_BLOCK + 48] == _head_slot(newer)
    # Both slots once sat in this sector; now only the first does.
    raw[:512] = os.urandom(512)
    head.write_bytes(raw)
    assert SequenceFile(state_dir).read_head() == newer
    raw[HEAD_BLOCK:] = os.urandom(len(raw) - HEAD_BLOCK)
    head.write_bytes(raw)
    assert SequenceFile(state_dir).read_head() is None


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_head_write_torn_by_a_power_cut_keeps_the_restart_notice_exact(
    state_dir: Path, enrol: Enrol, tmp_path: Path
) -> None:
    alice = enrol("alice")
    sealer = Sealer(state_dir)
    device = sealer.device_key
    run1 = sealer.seal(Kind.EVENT, RING, b"1")
    sealer.sync_head()
    run1 += sealer.seal(Kind.EVENT, RING, b"2")
    sealer.sync_head()
    del sealer
    gc.collect()
    hashes = [fmt.chain_hash(bytes(o.data[-64:])) for o in run1]
    head = state_dir / "head.bin"
    raw = bytearray(head.read_bytes())
    # Heads 1 and 2 were made durable in blocks 0 and 1: the next goes to block 0.
    assert raw[:48] == _head_slot(ChainHead(1, hashes[1]))
    assert raw[HEAD_BLOCK:] == _head_slot(ChainHead(2, hashes[2])) + bytes(48)
    # The power cut fell while it was being written: all of block 0 is garbage.
    raw[:HEAD_BLOCK] = os.urandom(HEAD_BLOCK)
    head.write_bytes(raw)

    with Sealer(state_dir) as sealer:
        run2 = sealer.seal(Kind.EVENT, RING, b"after")
    reader = Reader([alice], [device])
    notice = reader.open(bytes(run2[0].data))
    assert notice.meta["previous"] == {"seq": 2, "hash": hashes[2].hex()}
    result = _chain_ok(run1 + run2, tmp_path, reader)
    assert result.ok, result.problems


def test_a_head_file_in_the_old_layout_still_reads_and_is_never_torn_by_the_move(
    state_dir: Path, enrol: Enrol, tmp_path: Path
) -> None:
    alice = enrol("alice")
    with Sealer(state_dir) as sealer:
        run1 = sealer.seal(Kind.EVENT, RING, b"1") + sealer.seal(Kind.EVENT, RING, b"2")
        device = sealer.device_key
    hashes = [fmt.chain_hash(bytes(o.data[-64:])) for o in run1]
    # Before the slots had a block each, seq n went to offset 48 * (n % 2).
    old = _head_slot(ChainHead(2, hashes[2])) + _head_slot(ChainHead(1, hashes[1]))
    head = state_dir / "head.bin"
    head.write_bytes(old)
    assert SequenceFile(state_dir).read_head() == ChainHead(2, hashes[2])

    # The first head written goes to a block of its own, and leaves the old sector
    # alone: tearing that write cannot lose the head the old file holds.
    sequence = SequenceFile(state_dir)
    sequence.record(ChainHead(3, b"\x03" * 32), sync=True)
    assert head.read_bytes()[:96] == old
    assert sequence.read_head() == ChainHead(3, b"\x03" * 32)
    # The next one goes over the old sector, clearing the old layout's second slot too.
    sequence.record(ChainHead(4, b"\x04" * 32), sync=True)
    assert head.read_bytes()[:96] == _head_slot(ChainHead(4, b"\x04" * 32)) + bytes(48)
    sequence.close()

    head.write_bytes(old)
    with Sealer(state_dir) as sealer:
        run2 = sealer.seal(Kind.EVENT, RING, b"3")
    assert [o.seq for o in run2] == [3, 4]
    result = _chain_ok(run1 + run2, tmp_path, Reader([alice], [device]))
    assert result.ok, result.problems


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"\xff\xfe", b"[]", b'{"next": -1}', b'{"next": "7"}', b'{"next": 1.5}'],
    ids=["empty", "garbage", "binary", "list", "negative", "string", "float"],
)
def test_corrupt_sequence_file_refuses_to_start(
    state_dir: Path, enrol: Enrol, content: bytes
) -> None:
    enrol("alice")
    with Sealer(state_dir) as sealer:
        sealer.seal(Kind.EVENT, {}, b"")
    (state_dir / "sequence.json").write_bytes(content)
    with pytest.raises(KeyFileError, match=r"sequence\.json"):
        Sealer(state_dir)


def test_lost_sequence_file_refuses_to_start(state_dir: Path, enrol: Enrol) -> None:
    enrol("alice")
    with Sealer(state_dir) as sealer:
        sealer.seal(Kind.EVENT, {}, b"")
    (state_dir / "sequence.json").unlink()
    with pytest.raises(KeyFileError, match=r"chain head \(seq 1\) is past the reserved"):
        Sealer(state_dir)


def test_failed_start_releases_the_state_directory(state_dir: Path, enrol: Enrol) -> None:
    """A daemon that reports a bad state file and retries once it is fixed must not find
    its own failed attempt still holding the lock."""
    enrol("alice")
    Sealer(state_dir).close()
    sequence = state_dir / "sequence.json"
    good = sequence.read_bytes()
    sequence.write_bytes(b"garbage")
    with pytest.raises(KeyFileError, match=r"sequence\.json") as failure:
        Sealer(state_dir)
    sequence.write_bytes(good)
    assert failure.value is not None  # the caller still holds the error it reported
    Sealer(state_dir).close()


def test_second_sealer_on_one_state_dir_is_refused(state_dir: Path, enrol: Enrol) -> None:
    enrol("alice")
    with Sealer(state_dir), pytest.raises(KeyFileError, match="another doorbell process"):
        Sealer(state_dir)
    Sealer(state_dir).close()


def test_state_files_are_private(state_dir: Path, enrol: Enrol) -> None:
    enrol("alice")
    with Sealer(state_dir) as sealer:
        sealer.seal(Kind.EVENT, {}, b"")
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for name in ("device.key", "keyring.json", "sequence.json", "head.bin"):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name


def test_rejected_seal_spends_no_sequence_number(
    state_dir: Path, enrol: Enrol, tmp_path: Path
) -> None:
    """A payload the sealer refuses must not leave a gap phones report as a deletion."""
    alice = enrol("alice")
    sealer = Sealer(state_dir)
    device = sealer.device_key
    # Any error will do here; what matters is what it leaves behind.
    with pytest.raises((ValueError, OverflowError, SealingError, struct.error)):
        sealer.seal(Kind.EVENT, RING, b"", time_us=2**63)  # past the i64 time field
    objects = sealer.seal(Kind.EVENT, RING, b"ok")
    sealer.close()
    assert [o.seq for o in objects] == [0, 1]
    result = _chain_ok(objects, tmp_path, Reader([alice], [device]))
    assert result.ok, result.problems


def test_oversized_meta_spends_no_sequence_number(state_dir: Path, enrol: Enrol) -> None:
    enrol("alice")
    with Sealer(state_dir) as sealer:
        with pytest.raises(ValueError, match=r"metadata is .* bytes, limit 16384"):
            sealer.seal(Kind.EVENT, {"x": "a" * 20_000}, b"")
        assert [o.seq for o in sealer.seal(Kind.EVENT, {}, b"")] == [0, 1]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_meta_that_is_not_json_is_refused_before_sealing(
    state_dir: Path, enrol: Enrol, value: float
) -> None:
    """FORMAT.md: meta is a UTF-8 JSON object. NaN and Infinity are not JSON (RFC 8259),
    so a reader written from the spec must reject an object carrying them."""
    enrol("alice")
    with Sealer(state_dir) as sealer:
        with pytest.raises(ValueError):
            sealer.seal(Kind.SEGMENT, {"duration": value}, b"")
        assert [o.seq for o in sealer.seal(Kind.EVENT, {}, b"")] == [0, 1]


# --- 8. hostile-input parsing ------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_object(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A valid object with two stanzas (one per suite) and its decrypted payload."""
    state = tmp_path_factory.mktemp("fuzz-state")
    phones = [RecipientPrivateKey.generate(X), RecipientPrivateKey.generate(M)]
    with KeyringStore(state).editing() as box:
        for index, phone in enumerate(phones):
            box[0] = box[0].add(f"p{index}", phone.public_key(), NOW)
    with Sealer(state) as sealer:
        # A media segment: Padmé keeps it small, so mutations land in the header and meta.
        data = bytes(sealer.seal(Kind.SEGMENT, {"type": "ring", "n": [1, 2]}, b"body!")[-1].data)
    return data, decrypt_payload(data, recover_data_key(data, phones[0]))


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "overwrite", "cut"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 8))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            out[at : at + len(chunk)] = chunk
        else:
            del out[at:]
    return bytes(out)


@st.composite
def _headerish(draw: st.DrawFn) -> bytes:
    """Random bytes behind a valid magic and version, so the fuzzer gets past the first check."""
    return MAGIC + b"\x01\x00" + draw(st.binary(max_size=400))


@FUZZ
@given(st.one_of(st.binary(max_size=600), _headerish()))
def test_parse_envelope_random_bytes_only_malformed(data: bytes) -> None:
    try:
        envelope = fmt.parse_envelope(data)
    except MalformedObject:
        return
    assert envelope.signed_len + 64 == len(data)


@FUZZ
@given(draw=st.data())
def test_parse_envelope_mutations_only_malformed(
    valid_object: tuple[bytes, bytes], draw: st.DataObject
) -> None:
    data = _mutate(valid_object[0], draw.draw)
    try:
        envelope = fmt.parse_envelope(data)
    except MalformedObject:
        return
    assert envelope.signed_len + 64 == len(data)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_inner_random_bytes_only_malformed(plain: bytes) -> None:
    with contextlib.suppress(MalformedObject):
        fmt.decode_inner(plain)


@FUZZ
@given(draw=st.data())
def test_decode_inner_mutations_only_malformed(
    valid_object: tuple[bytes, bytes], draw: st.DataObject
) -> None:
    try:
        inner = fmt.decode_inner(_mutate(valid_object[1], draw.draw))
    except MalformedObject:
        return
    assert isinstance(inner.meta, dict)


@pytest.mark.parametrize(
    "meta",
    [
        b'{"n": ' + b"1" * 5000 + b"}",  # past Python's int-from-string digit limit
        b"[" * 100_000,
        b'"a string"',
        b"\xff\xfe",
        b"{",
        b'{"duration": NaN}',
        b'{"duration": -Infinity}',
    ],
    ids=["huge-int", "deep", "not-object", "not-utf8", "unterminated", "nan", "infinity"],
)
def test_decode_inner_bad_meta_is_malformed(meta: bytes) -> None:
    meta = meta[: fmt.MAX_META]
    plain = struct.pack(">BBIqH", 3, 0, 1, 0, len(meta)) + meta + struct.pack(">I", 0)
    with pytest.raises(MalformedObject, match="metadata"):
        fmt.decode_inner(plain)


@pytest.mark.parametrize(
    ("plain", "message"),
    [
        (struct.pack(">BBIqHI", 9, 0, 1, 0, 0, 0), "unknown kind 9"),
        (struct.pack(">BBIqHI", 3, 1, 1, 0, 0, 0), "reserved byte"),
        (struct.pack(">BBIqHI", 3, 0, 1, 0, 16385, 0), "metadata length 16385 exceeds 16384"),
        (struct.pack(">BBIqH", 3, 0, 1, 0, 10) + b"{}\0\0", "metadata runs past the end"),
        (struct.pack(">BBIqHI", 3, 0, 1, 0, 0, 5) + b"abc", "body length 5 runs past the end"),
        (struct.pack(">BBIqHI", 3, 0, 1, 0, 0, 1) + b"a\x00\x01", "padding is not all zero"),
        (b"\x03" * 19, "shorter than 20"),
    ],
    ids=["kind", "reserved", "meta-limit", "meta-past-end", "body-past-end", "padding", "short"],
)
def test_decode_inner_rules_name_the_field(plain: bytes, message: str) -> None:
    with pytest.raises(MalformedObject, match=message):
        fmt.decode_inner(plain)


def test_a_low_order_x25519_key_is_refused_before_it_reaches_the_keyring() -> None:
    from doorbell.sealing.keys import PUBLIC_PREFIX, encode_key_string

    degenerate = encode_key_string(PUBLIC_PREFIX[Suite.X25519], bytes(32))
    with pytest.raises(KeyStringError, match="not a usable key"):
        RecipientPublicKey.from_string(degenerate)


def test_a_broken_keyring_edit_keeps_the_last_good_keyring(state_dir: Path, enrol: Enrol) -> None:
    alice = enrol("alice")
    sealer = Sealer(state_dir)
    sealer.seal(Kind.SEGMENT, {}, b"before")
    (state_dir / "keyring.json").write_text("{ not json")
    sealed = sealer.seal(Kind.SEGMENT, {}, b"after a broken edit")[-1]
    assert (
        bytes(Reader([alice], [sealer.device_key]).open(sealed.data).body) == b"after a broken edit"
    )
    sealer.close()


def test_keyring_edits_are_noticed_by_their_bytes_not_their_timestamps(
    state_dir: Path, tmp_path: Path
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    alice, bob = RecipientPrivateKey.generate(X), RecipientPrivateKey.generate(X)
    documents = {}
    for phone in (alice, bob):
        elsewhere = tmp_path / phone.public_key().fingerprint
        elsewhere.mkdir()
        KeyringStore(elsewhere).add("phone", phone.public_key(), now)
        documents[phone] = (elsewhere / "keyring.json").read_bytes()
    assert len(documents[alice]) == len(documents[bob])
    state_dir.mkdir()
    keyring = state_dir / "keyring.json"
    keyring.write_bytes(documents[alice])

    with Sealer(state_dir) as sealer:
        device = sealer.device_key
        first = sealer.seal(Kind.SEGMENT, {}, b"1")[-1]
        before = keyring.stat()
        # Rewritten in place with its size and mtime kept: two quick edits look like this
        # on a filesystem whose timestamps are coarser than the time between them.
        with keyring.open("r+b") as stream:
            stream.write(documents[bob])
        os.utime(keyring, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = keyring.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        )
        second = sealer.seal(Kind.SEGMENT, {}, b"2")[-1]
        # Replaced, as every KeyringStore edit replaces it.
        write_atomic(keyring, documents[alice])
        third = sealer.seal(Kind.SEGMENT, {}, b"3")[-1]

    for sealed, body, phone, other in (
        (first, b"1", alice, bob),
        (second, b"2", bob, alice),
        (third, b"3", alice, bob),
    ):
        assert bytes(Reader([phone], [device]).open(sealed.data).body) == body
        with pytest.raises(NotARecipient):
            Reader([other], [device]).open(sealed.data)


def test_a_signed_stanza_for_this_phone_that_does_not_open_is_a_decryption_failure() -> None:
    alice = RecipientPrivateKey.generate(Suite.X25519)
    device = DeviceSigningKey.generate()
    keyring = Keyring().add("alice", alice.public_key(), datetime.now(UTC))
    data = seal_bytes(device, keyring, 0, fmt.ZERO_PREV, Kind.SEGMENT, {}, b"x", 0)
    # The device itself botches the wrapped key (tag intact) and signs the result.
    wrapped = fmt.FIXED_HEADER_LEN + 17
    data[wrapped + 40] ^= 1
    data[-64:] = device.sign(fmt.signed_message(bytes(data[:-64])))
    with pytest.raises(DecryptionFailed, match="stanza for this phone does not open"):
        Reader([alice], [device.public_key]).open(data)


def test_racing_first_uses_of_the_state_directory_agree_on_one_device_key(
    tmp_path: Path,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from doorbell.sealing import load_device_key, prepare_state_dir

    for attempt in range(5):
        state = prepare_state_dir(tmp_path / f"state-{attempt}")
        with ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(lambda _, s=state: load_device_key(s)[0].public_key, range(8)))
        on_disk = load_device_key(state, create=False)[0].public_key
        assert all(key == on_disk for key in keys)


def test_a_signature_forged_for_a_non_canonical_device_key_is_rejected() -> None:
    """y = p + 1 encodes the identity point; OpenSSL accepts it as a public key and then
    verifies (R = identity, S = 0) for any message. The reader refuses the key itself."""
    disguised = DevicePublicKey((2**255 - 19 + 1).to_bytes(32, "little"))
    stanza = fmt.Stanza(X, bytes(16), bytes(X.stanza_len))
    header = fmt.build_header(disguised.device_id, 0, fmt.ZERO_PREV, bytes(12), [stanza], 64)
    identity = (1).to_bytes(32, "little")
    forged = header + bytes(64) + identity + bytes(32)
    disguised.verify(forged[-64:], fmt.signed_message(forged[:-64]))  # OpenSSL: "valid"
    reader = Reader([RecipientPrivateKey.generate(X)], [disguised])
    with pytest.raises(BadSignature, match="not a canonical Ed25519 encoding"):
        reader.verify(forged)


def test_a_body_over_64_mib_is_rejected_even_when_the_payload_holds_it() -> None:
    body_len = fmt.MAX_BODY + 1
    prefix = struct.pack(">BBIqH", Kind.SEGMENT, 0, 1, 0, 0) + struct.pack(">I", body_len)
    payload = bytearray(len(prefix) + body_len)
    payload[: len(prefix)] = prefix
    with pytest.raises(MalformedObject, match=f"body length {body_len} exceeds 67108864"):
        fmt.decode_inner(payload)
