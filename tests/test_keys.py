"""Key strings (FORMAT.md section 2), fingerprints and key files."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doorbell.sealing import (
    BadSignature,
    DevicePublicKey,
    DeviceSigningKey,
    KeyFileError,
    KeyStringError,
    PhoneIdentity,
    PhoneSigningKey,
    PhoneVerifyKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    Suite,
    load_device_key,
    read_key_file,
    save_key_file,
)

X, M = Suite.X25519, Suite.MLKEM768_X25519
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
FUZZ = settings(max_examples=400, deadline=None, database=None)


def spec_key_string(prefix: str, raw: bytes) -> str:
    """FORMAT.md: prefix || base32(raw || SHA-256(prefix || raw)[:4]), lower case, no '='."""
    checksum = hashlib.sha256(prefix.encode() + raw).digest()[:4]
    return prefix + base64.b32encode(raw + checksum).decode().rstrip("=").lower()


def _x25519_public() -> str:
    return RecipientPrivateKey.generate(X).public_key().to_string()


def _mlkem_public() -> str:
    return RecipientPrivateKey.generate(M).public_key().to_string()


# kind: (prefix, raw length, string length, make a key, parse a key string)
KINDS: dict[str, tuple[str, int, int, Callable[[], object], Callable[[str], object]]] = {
    "public-x25519": (
        "dbpub-x25519-",
        32,
        71,
        lambda: RecipientPrivateKey.generate(X).public_key(),
        RecipientPublicKey.from_string,
    ),
    "public-mlkem": (
        "dbpub-mlkem768x25519-",
        1216,
        1973,
        lambda: RecipientPrivateKey.generate(M).public_key(),
        RecipientPublicKey.from_string,
    ),
    "secret-x25519": (
        "dbsec-x25519-",
        32,
        71,
        lambda: RecipientPrivateKey.generate(X),
        RecipientPrivateKey.from_string,
    ),
    "secret-mlkem": (
        "dbsec-xwing-",
        32,
        12 + 58,
        lambda: RecipientPrivateKey.generate(M),
        RecipientPrivateKey.from_string,
    ),
    "secret-mlkem-expanded": (
        "dbsec-mlkem768x25519-",
        96,
        181,
        lambda: RecipientPrivateKey(M, RecipientPrivateKey.generate(M).expanded),
        RecipientPrivateKey.from_string,
    ),
    "identity-x25519": (
        "dbid-x25519-",
        64,
        12 + 109,
        lambda: _identity(X),
        PhoneIdentity.from_string,
    ),
    "identity-mlkem": (
        "dbid-mlkem768x25519-",
        1248,
        20 + 2004,
        lambda: _identity(M),
        PhoneIdentity.from_string,
    ),
    "phone-signing-public": (
        "dbsig-ed25519-",
        32,
        72,
        lambda: PhoneSigningKey.generate().public_key,
        PhoneVerifyKey.from_string,
    ),
    "phone-signing-secret": (
        "dbsigsec-ed25519-",
        32,
        75,
        PhoneSigningKey.generate,
        PhoneSigningKey.from_string,
    ),
    "device-public": (
        "dbdev-ed25519-",
        32,
        72,
        lambda: DeviceSigningKey.generate().public_key,
        DevicePublicKey.from_string,
    ),
    "device-secret": (
        "dbdevsec-ed25519-",
        32,
        75,
        DeviceSigningKey.generate,
        DeviceSigningKey.from_string,
    ),
}


def _identity(suite: Suite) -> PhoneIdentity:
    return PhoneIdentity(
        RecipientPrivateKey.generate(suite).public_key(), PhoneSigningKey.generate().public_key
    )


def _raw(key: object) -> bytes:
    if isinstance(key, DeviceSigningKey | PhoneSigningKey):
        body = key.to_string().split("-", 2)[2].upper()
        return base64.b32decode(body + "=" * (-len(body) % 8))[:32]
    if isinstance(key, PhoneIdentity):
        return key.key.raw + key.signing.raw
    raw = getattr(key, "raw", None)
    assert isinstance(raw, bytes)
    return raw


@pytest.mark.parametrize("kind", KINDS)
def test_key_string_round_trip_matches_the_spec(kind: str) -> None:
    prefix, raw_len, string_len, make, parse = KINDS[kind]
    key = make()
    text = key.to_string()  # type: ignore[attr-defined]
    raw = _raw(key)
    assert len(raw) == raw_len
    assert len(text) == string_len
    assert text == spec_key_string(prefix, raw)
    assert text == text.lower()
    assert "=" not in text
    again = parse(text)
    assert again.to_string() == text  # type: ignore[attr-defined]
    assert _raw(again) == raw


def test_secret_key_string_gives_back_the_same_public_key() -> None:
    for suite in Suite:
        secret = RecipientPrivateKey.generate(suite)
        restored = RecipientPrivateKey.from_string(secret.to_string())
        assert restored.public_key() == secret.public_key()
        assert restored.suite is suite


# draft-connolly-cfrg-xwing-kem-08, appendix C, first vector: the seed (SHAKE128 of
# nothing) and its public key, here as the first 16 and the last 32 of its 1216 bytes.
XWING_SEED = bytes.fromhex("7f9c2ba4e88f827d616045507605853ed73b8093f6efbc88eb1a6eacfa66ef26")
XWING_PUBLIC_HEAD = "e2236b35a8c24b39b10aa1323a96a919"
XWING_PUBLIC_TAIL = "859edb06eff389b27dce59844570216223593d4ba32d9abac8cd049040ef6534"


def test_the_hybrid_secret_is_an_x_wing_seed() -> None:
    """The 32-byte seed expands as X-Wing says (SHAKE256 to 96 bytes: the ML-KEM-768 seed,
    then the X25519 key), and pyca's MLKEM768-X25519 key made from it has the published
    X-Wing public key: browsers and other X-Wing code can hold the same key."""
    secret = RecipientPrivateKey(M, XWING_SEED)
    assert secret.expanded == hashlib.shake_256(XWING_SEED).digest(96)
    public = secret.public_key().raw
    assert public.hex().startswith(XWING_PUBLIC_HEAD)
    assert public.hex().endswith(XWING_PUBLIC_TAIL)
    assert len(public) == 1216
    assert secret.to_string().startswith("dbsec-xwing-")


def test_the_expanded_hybrid_secret_of_version_1_still_reads() -> None:
    """Phones made before the seed form keep their 96-byte key: same public key, same
    string, and it opens what is sealed to it."""
    seeded = RecipientPrivateKey.generate(M)
    expanded = RecipientPrivateKey.from_string(
        spec_key_string("dbsec-mlkem768x25519-", seeded.expanded)
    )
    assert expanded.public_key() == seeded.public_key()
    assert expanded.to_string().startswith("dbsec-mlkem768x25519-")
    enc = M.hpke().encrypt(b"k" * 32, seeded.public_key().hpke_key(), info=b"i")
    assert M.hpke().decrypt(enc, expanded.hpke_key(), info=b"i") == b"k" * 32


def test_an_identity_is_the_decryption_key_and_the_signing_key() -> None:
    signing = PhoneSigningKey.generate()
    for suite in Suite:
        key = RecipientPrivateKey.generate(suite).public_key()
        identity = PhoneIdentity.from_string(PhoneIdentity(key, signing.public_key).to_string())
        assert (identity.key, identity.signing) == (key, signing.public_key)
    signing.public_key.verify(signing.sign(b"message"), b"message")
    with pytest.raises(BadSignature, match="phone signature does not verify"):
        signing.public_key.verify(signing.sign(b"message"), b"other")


def test_fingerprint_and_device_id_follow_the_spec() -> None:
    device = DeviceSigningKey.generate().public_key
    digest = hashlib.sha256(device.raw).digest()
    assert device.device_id == digest
    hexed = digest.hex()[:32]
    assert device.fingerprint == ":".join(hexed[i : i + 4] for i in range(0, 32, 4))
    phone = RecipientPrivateKey.generate(M).public_key()
    assert phone.fingerprint.replace(":", "") == hashlib.sha256(phone.raw).hexdigest()[:32]


def test_secrets_are_not_in_reprs() -> None:
    secret = RecipientPrivateKey.generate(X)
    assert secret.raw.hex() not in repr(secret)
    assert repr(secret.raw) not in repr(secret)
    device = DeviceSigningKey.generate()
    assert device.to_string() not in repr(device)
    assert _raw(device).hex() not in repr(device)


# --- mistakes people make typing or pasting keys -----------------------------------------

SAMPLE_KINDS = ["public-x25519", "public-mlkem", "device-public", "secret-mlkem"]


def _positions(body_len: int) -> list[int]:
    """Every position of a short body; a spread sample of a long one."""
    if body_len <= 200:
        return list(range(body_len - 1))
    return [*range(0, 40), *range(40, body_len - 1, 97), body_len - 2]


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_a_single_mistyped_character_is_caught(kind: str) -> None:
    prefix, _, _, make, parse = KINDS[kind]
    text = make().to_string()  # type: ignore[attr-defined]
    body = text[len(prefix) :]
    accepted = []
    for position in _positions(len(body)):
        for char in ALPHABET:
            if char == body[position]:
                continue
            typo = prefix + body[:position] + char + body[position + 1 :]
            try:
                parse(typo)
            except KeyStringError as exc:
                assert "checksum does not match" in str(exc) or "base32" in str(exc)
            else:
                accepted.append((position, char))
    assert not accepted


@pytest.mark.parametrize("kind", ["public-x25519", "secret-x25519", "device-public"])
def test_a_mistype_in_the_last_character_is_caught(kind: str) -> None:
    """32-byte keys end in a character with 2 unused bits: FORMAT.md requires rejecting
    non-canonical base32, so no other last character may decode to the same key."""
    _, _, _, make, parse = KINDS[kind]
    text = make().to_string()  # type: ignore[attr-defined]
    accepted = []
    for char in ALPHABET:
        if char != text[-1]:
            try:
                parse(text[:-1] + char)
            except KeyStringError:
                continue
            accepted.append(char)
    assert not accepted, f"{text[-1]!r} mistyped as any of {accepted} is accepted"


@pytest.mark.parametrize("bad", ["0", "1", "8", "9", "!", "é", "-", "="])
def test_characters_outside_base32_are_named_with_their_position(bad: str) -> None:
    text = _x25519_public()
    typo = text[:30] + bad + text[31:]
    with pytest.raises(KeyStringError, match=f"invalid character {bad!r} at position 31"):
        RecipientPublicKey.from_string(typo)


@pytest.mark.parametrize("cut", [1, 2, 5, 30, 57])
def test_truncation_says_truncated(cut: int) -> None:
    text = _x25519_public()
    with pytest.raises(KeyStringError, match=f"truncated: {71 - cut} characters, expected 71"):
        RecipientPublicKey.from_string(text[:-cut])
    long_text = _mlkem_public()
    with pytest.raises(KeyStringError, match="truncated"):
        RecipientPublicKey.from_string(long_text[:-cut])


def test_extra_characters_say_too_long() -> None:
    with pytest.raises(KeyStringError, match="too long: 72 characters, expected 71"):
        RecipientPublicKey.from_string(_x25519_public() + "a")


def test_truncated_into_the_prefix_is_not_a_key_string() -> None:
    with pytest.raises(KeyStringError, match="is not a Doorbell key string"):
        RecipientPublicKey.from_string("dbpub-x25")


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_key_string(text: str) -> None:
    with pytest.raises(KeyStringError, match="empty key string"):
        RecipientPublicKey.from_string(text)


@pytest.mark.parametrize(
    "text", ["hello", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO", "dbpub-rsa-aaaa", "age1qqqq"]
)
def test_unknown_prefix_is_not_a_key_string(text: str) -> None:
    with pytest.raises(KeyStringError, match="is not a Doorbell key string; expected a phone"):
        RecipientPublicKey.from_string(text)


def test_device_key_where_a_phone_key_is_expected_names_both_kinds() -> None:
    device = DeviceSigningKey.generate()
    with pytest.raises(KeyStringError) as caught:
        RecipientPublicKey.from_string(device.public_key.to_string())
    message = str(caught.value)
    assert "this is a doorbell device public key" in message
    assert "expected a phone public key (x25519) or phone public key (mlkem768-x25519)" in message


@pytest.mark.parametrize(
    ("make", "parse", "is_a", "expected"),
    [
        (
            lambda: RecipientPrivateKey.generate(X).to_string(),
            RecipientPublicKey.from_string,
            "phone secret key (x25519)",
            "phone public key",
        ),
        (
            lambda: RecipientPrivateKey.generate(X).public_key().to_string(),
            DevicePublicKey.from_string,
            "phone public key (x25519)",
            "doorbell device public key",
        ),
        (
            lambda: DeviceSigningKey.generate().to_string(),
            DevicePublicKey.from_string,
            "doorbell device secret key",
            "doorbell device public key",
        ),
        (
            lambda: RecipientPrivateKey.generate(M).public_key().to_string(),
            RecipientPrivateKey.from_string,
            "phone public key (mlkem768-x25519)",
            "phone secret key",
        ),
    ],
    ids=["secret-for-public", "phone-for-device", "device-secret-for-public", "public-for-secret"],
)
def test_wrong_kind_names_both_kinds(
    make: Callable[[], str], parse: Callable[[str], object], is_a: str, expected: str
) -> None:
    with pytest.raises(KeyStringError, match=re.escape(f"this is a {is_a}, expected a {expected}")):
        parse(make())


@pytest.mark.parametrize("kind", KINDS)
def test_whitespace_and_case_are_tolerated(kind: str) -> None:
    _, _, _, make, parse = KINDS[kind]
    text = make().to_string()  # type: ignore[attr-defined]
    wrapped = "\n".join(text[i : i + 16] for i in range(0, len(text), 16))
    spaced = "  " + " \t".join(text[i : i + 5] for i in range(0, len(text), 5)) + "\r\n"
    for variant in (wrapped, spaced, text.upper(), wrapped.upper(), text.title()):
        assert parse(variant).to_string() == text  # type: ignore[attr-defined]


def test_valid_checksum_over_invalid_mlkem_material_is_rejected() -> None:
    # Every 12-bit coefficient 0xfff is >= q = 3329: no valid ML-KEM-768 encapsulation key.
    text = spec_key_string("dbpub-mlkem768x25519-", b"\xff" * 1216)
    with pytest.raises(KeyStringError, match="invalid mlkem768-x25519 public key"):
        RecipientPublicKey.from_string(text)


# --- hostile text ------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=120))
def test_from_string_random_text_only_key_string_error(text: str) -> None:
    with pytest.raises(KeyStringError):
        RecipientPublicKey.from_string(text)


@FUZZ
@given(
    st.sampled_from(["dbpub-x25519-", "dbpub-mlkem768x25519-", "dbdev-ed25519-", "dbsec-x25519-"]),
    st.text(alphabet=ALPHABET + " \nA=0", max_size=2000),
)
def test_from_string_random_body_only_key_string_error(prefix: str, body: str) -> None:
    with pytest.raises(KeyStringError):
        RecipientPublicKey.from_string(prefix + body)


@FUZZ
@given(st.booleans(), st.binary(min_size=32, max_size=32), st.binary(min_size=1216, max_size=1216))
def test_from_string_random_material_with_valid_checksum(
    short: bool, raw32: bytes, raw1216: bytes
) -> None:
    if short:
        # Most 32-byte strings are X25519 keys; the few degenerate points are refused.
        try:
            key = RecipientPublicKey.from_string(spec_key_string("dbpub-x25519-", raw32))
        except KeyStringError as exc:
            assert "not a usable key" in str(exc)
        else:
            assert key.raw == raw32
        return
    try:
        key = RecipientPublicKey.from_string(spec_key_string("dbpub-mlkem768x25519-", raw1216))
    except KeyStringError as exc:
        assert "mlkem768-x25519" in str(exc)
    else:
        assert key.raw == raw1216


# --- key files ---------------------------------------------------------------------------


def test_key_file_is_one_line_mode_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "identity.key"
        text = RecipientPrivateKey.generate(X).to_string()
        save_key_file(path, text)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == text.encode() + b"\n"
    assert read_key_file(path) == text + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]  # no temporary left


def test_save_key_file_replaces_a_loose_mode(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    path.write_text("old")
    path.chmod(0o644)
    save_key_file(path, DeviceSigningKey.generate().to_string())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(KeyFileError, match=f"key file {missing} does not exist"):
        read_key_file(missing)
    big = tmp_path / "big.key"
    big.write_bytes(b"a" * 20_000)
    with pytest.raises(KeyFileError, match="20000 bytes, too large"):
        read_key_file(big)
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe key")
    with pytest.raises(KeyFileError, match="not a text key file"):
        read_key_file(binary)
    with pytest.raises(KeyFileError, match="cannot write key file"):
        save_key_file(big / "sub.key", "x")


def test_device_key_is_created_once_then_reused(tmp_path: Path) -> None:
    key, created = load_device_key(tmp_path)
    assert created
    again, created_again = load_device_key(tmp_path)
    assert not created_again
    assert again.public_key == key.public_key
    assert stat.S_IMODE((tmp_path / "device.key").stat().st_mode) == 0o600


def test_corrupt_device_key_file_names_the_file(tmp_path: Path) -> None:
    text = DeviceSigningKey.generate().to_string()
    (tmp_path / "device.key").write_text(text[:-3] + "\n")
    with pytest.raises(KeyFileError, match=r"device\.key: .*truncated"):
        load_device_key(tmp_path)
    (tmp_path / "device.key").write_text(RecipientPrivateKey.generate(X).to_string())
    with pytest.raises(KeyFileError, match="phone secret key"):
        load_device_key(tmp_path)
