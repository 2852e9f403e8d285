"""The keyring (FORMAT.md section 7): edits, its JSON document, and the on-device store."""

from __future__ import annotations

import contextlib
import json
import re
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doorbell.sealing import (
    KeyFileError,
    Keyring,
    KeyringError,
    KeyringStore,
    Kind,
    PhoneSigningKey,
    Reader,
    RecipientPrivateKey,
    RecipientPublicKey,
    Role,
    Sealer,
    Suite,
)
from doorbell.sealing.keyring import ClassicalConsent, MixedSuites

X, M = Suite.X25519, Suite.MLKEM768_X25519
NOW = datetime(2026, 11, 29, 21, 50, 7, 123456, tzinfo=UTC)
FUZZ = settings(max_examples=400, deadline=None, database=None)


def _key(suite: Suite = X) -> RecipientPublicKey:
    return RecipientPrivateKey.generate(suite).public_key()


@pytest.fixture(scope="module")
def two_phones() -> Keyring:
    return Keyring().add("alice-phone", _key(M), NOW).add("bob", _key(X), NOW)


LATER = NOW + timedelta(hours=2)
SIGNING = PhoneSigningKey.generate().public_key


@pytest.fixture(scope="module")
def roles() -> Keyring:
    """An owner with a signing key, a member, a guest and a recovery key."""
    return (
        Keyring()
        .add("alice-phone", _key(M), NOW, signing=PhoneSigningKey.generate().public_key)
        .add("bob", _key(M), NOW, role=Role.MEMBER, signing=PhoneSigningKey.generate().public_key)
        .add("carol", _key(M), NOW, role=Role.GUEST, expires=LATER)
        .add(
            "recovery",
            _key(M),
            NOW,
            role=Role.RECOVERY,
            signing=PhoneSigningKey.generate().public_key,
        )
    )


def _document(keyring: Keyring) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(keyring.to_json())
    return document


# --- edits -------------------------------------------------------------------------------


def test_every_edit_bumps_the_epoch(two_phones: Keyring) -> None:
    assert Keyring().epoch == 0
    assert two_phones.epoch == 2
    revoked = two_phones.revoke("bob")
    assert revoked.epoch == 3
    assert [r.name for r in revoked.recipients] == ["alice-phone"]
    assert [r.name for r in two_phones.recipients] == ["alice-phone", "bob"]  # unchanged


def test_added_time_is_utc_to_the_second() -> None:
    local = datetime(2026, 11, 29, 23, 50, 7, 999, tzinfo=timezone(timedelta(hours=2)))
    keyring = Keyring().add("alice", _key(), local)
    assert keyring.recipients[0].added == datetime(2026, 11, 29, 21, 50, 7, tzinfo=UTC)


def test_duplicate_name_or_key_is_refused(two_phones: Keyring) -> None:
    with pytest.raises(KeyringError, match="a phone named 'bob' is already enrolled"):
        two_phones.add("bob", _key(), NOW)
    bob_key = two_phones.recipients[1].key
    with pytest.raises(KeyringError, match="this key is already enrolled as 'bob'"):
        two_phones.add("bobs-tablet", bob_key, NOW)


def test_keyring_holds_at_most_64() -> None:
    keyring = Keyring()
    for index in range(64):
        keyring = keyring.add(f"phone {index}", _key(), NOW)
    with pytest.raises(KeyringError, match=r"full \(64 recipients\)"):
        keyring.add("one too many", _key(), NOW)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "1 to 64 characters, got 0"),
        ("x" * 65, "1 to 64 characters, got 65"),
        (" alice", "surrounding spaces"),
        ("alice ", "surrounding spaces"),
        ("ali\nce", "control characters"),
        ("ali\x00ce", "control characters"),
        ("ali\u200bce", "control characters"),  # zero-width space, format category Cf
        ("\u202eenohp", "control characters"),  # right-to-left override
    ],
    ids=["empty", "long", "leading", "trailing", "newline", "nul", "zwsp", "rtl"],
)
def test_names_shown_to_every_phone_are_checked(name: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring().add(name, _key(), NOW)


def test_names_may_be_any_printable_text() -> None:
    for name in ("x", "x" * 64, "Ana's Pixel 8", "téléphone de Zoë", "手机"):
        assert Keyring().add(name, _key(), NOW).recipients[0].name == name


def test_revoking_an_unknown_name_suggests_the_closest(two_phones: Keyring) -> None:
    with pytest.raises(KeyringError) as caught:
        two_phones.revoke("alice-phon")
    message = str(caught.value)
    assert "no phone named 'alice-phon' is enrolled" in message
    assert "did you mean 'alice-phone'?" in message
    assert "enrolled: 'alice-phone', 'bob'" in message
    with pytest.raises(KeyringError, match=r"enrolled: none"):
        Keyring().revoke("anyone")


# --- the document --------------------------------------------------------------------------


def test_document_matches_the_spec(roles: Keyring) -> None:
    document = _document(roles)
    expected = []
    for r in roles.recipients:
        entry: dict[str, Any] = {
            "name": r.name,
            "role": r.role.value,
            "suite": r.key.suite.label,
            "key": r.key.to_string(),
        }
        if r.signing is not None:
            entry["signing_key"] = r.signing.to_string()
        entry["added"] = "2026-11-29T21:50:07Z"
        if r.role is Role.GUEST:
            entry["expires"] = "2026-11-29T23:50:07Z"
        expected.append(entry)
    assert document == {
        "format": "doorbell-keyring",
        "version": 2,
        "epoch": 4,
        "recipients": expected,
    }
    assert [r["role"] for r in document["recipients"]] == ["owner", "member", "guest", "recovery"]
    assert [("signing_key" in r) for r in document["recipients"]] == [True, True, False, True]
    assert roles.to_json().decode("utf-8")


def test_a_version_1_document_still_reads(two_phones: Keyring) -> None:
    """Phones keep reading what earlier doorbells published: no roles, no signing keys,
    every phone enrolled by the owner at the doorbell."""
    document = _document(two_phones)
    document["version"] = 1
    for entry in document["recipients"]:
        del entry["role"]
    parsed = Keyring.from_json(json.dumps(document).encode(), "v1")
    assert parsed == two_phones
    assert [(r.role, r.signing, r.expires) for r in parsed.recipients] == [
        (Role.OWNER, None, None),
        (Role.OWNER, None, None),
    ]


def test_a_guest_needs_an_expiry_and_nobody_else_has_one() -> None:
    with pytest.raises(KeyringError, match="a guest needs an expiry time"):
        Keyring().add("g", _key(), NOW, role=Role.GUEST)
    with pytest.raises(KeyringError, match="a guest needs an expiry time"):
        Keyring().add("m", _key(), NOW, role=Role.MEMBER, expires=LATER)
    with pytest.raises(KeyringError, match="must be in the future"):
        Keyring().add("g", _key(), NOW, role=Role.GUEST, expires=NOW)


def test_expired_guests_leave_in_a_new_epoch(roles: Keyring) -> None:
    assert roles.next_expiry() == LATER.replace(microsecond=0)
    assert roles.without_expired(LATER - timedelta(seconds=1)) is roles
    after = roles.without_expired(LATER)
    assert after.epoch == roles.epoch + 1
    assert [r.name for r in after.recipients] == ["alice-phone", "bob", "recovery"]
    assert after.next_expiry() is None


def test_a_signing_key_belongs_to_one_recipient(roles: Keyring) -> None:
    owner = roles.recipients[0]
    assert owner.signing is not None
    assert roles.signed_by(owner.signing) == owner
    assert roles.signed_by(PhoneSigningKey.generate().public_key) is None
    with pytest.raises(KeyringError, match="signing key is already enrolled as 'alice-phone'"):
        roles.add("eve", _key(M), NOW, signing=owner.signing)
    assert [r.role.manages for r in roles.recipients] == [True, False, False, True]


def test_document_round_trip(two_phones: Keyring) -> None:
    assert Keyring.from_json(two_phones.to_json(), "test") == two_phones
    assert Keyring.from_json(memoryview(two_phones.to_json()), "test") == two_phones
    empty = Keyring().add("a", _key(), NOW).revoke("a")
    assert Keyring.from_json(empty.to_json(), "test") == empty


def _broken(roles: Keyring, change: str) -> bytes:
    document = _document(roles)
    first = document["recipients"][0]
    second = document["recipients"][1]
    guest = document["recipients"][2]
    edits = {
        "format": lambda: document.update(format="age-keyring"),
        "no-format": lambda: document.pop("format"),
        "version": lambda: document.update(version=3),
        "epoch-negative": lambda: document.update(epoch=-1),
        "epoch-big": lambda: document.update(epoch=2**32),
        "epoch-string": lambda: document.update(epoch="2"),
        "epoch-bool": lambda: document.update(epoch=True),
        "recipients-object": lambda: document.update(recipients={}),
        "recipient-list": lambda: document["recipients"].append([]),
        "name-number": lambda: first.update(name=7),
        "name-control": lambda: first.update(name="a\tb"),
        "suite-missing": lambda: first.pop("suite"),
        "suite-unknown": lambda: first.update(suite="rsa"),
        "suite-mismatch": lambda: first.update(suite="x25519"),
        "key-typo": lambda: first.update(key=first["key"][:-4] + "aaaa"),
        "key-device": lambda: first.update(
            key="dbdev-ed25519-" + first["key"].split("-", 2)[2][:58]
        ),
        "added-format": lambda: first.update(added="2026-11-29 21:50:07"),
        "added-offset": lambda: first.update(added="2026-11-29T21:50:07+01:00"),
        "duplicate-name": lambda: second.update(name=first["name"]),
        "duplicate-key": lambda: second.update(key=first["key"], suite=first["suite"]),
        "role-missing": lambda: first.pop("role"),
        "role-unknown": lambda: first.update(role="admin"),
        "role-number": lambda: first.update(role=1),
        "signing-typo": lambda: first.update(signing_key=first["signing_key"][:-4] + "aaaa"),
        "signing-number": lambda: first.update(signing_key=7),
        "signing-device": lambda: first.update(
            signing_key="dbdev-ed25519-" + first["signing_key"].split("-", 2)[2]
        ),
        "duplicate-signing": lambda: second.update(signing_key=first["signing_key"]),
        "guest-forever": lambda: guest.pop("expires"),
        "member-expires": lambda: second.update(expires="2030-01-01T00:00:00Z"),
        "expires-format": lambda: guest.update(expires="tomorrow"),
        "expires-early": lambda: guest.update(expires=guest["added"]),
    }
    edits[change]()
    return json.dumps(document).encode()


BROKEN = {
    "format": r"not a Doorbell keyring \(format field\)",
    "no-format": r"not a Doorbell keyring \(format field\)",
    "version": "unsupported keyring version 3",
    "epoch-negative": "epoch must be an integer",
    "epoch-big": "epoch must be an integer",
    "epoch-string": "epoch must be an integer",
    "epoch-bool": "epoch must be an integer",
    "recipients-object": "recipients must be a list",
    "recipient-list": "recipient 4: not an object",
    "name-number": "recipient 0: name must be a string",
    "name-control": "recipient 0: name 'a\\\\tb' has control characters",
    "suite-missing": "recipient 0: suite, key and added must be strings",
    "suite-unknown": "recipient 0: unknown suite 'rsa'",
    "suite-mismatch": "recipient 0: suite 'x25519' does not match the key",
    "key-typo": "recipient 0: phone public key .mlkem768-x25519. checksum does not match",
    "key-device": "recipient 0: .*doorbell device public key",
    "added-format": "recipient 0: added '2026-11-29 21:50:07' is not YYYY-MM-DDTHH:MM:SSZ",
    "added-offset": "recipient 0: added .* is not YYYY-MM-DDTHH:MM:SSZ",
    "duplicate-name": "duplicate recipient names",
    "duplicate-key": "duplicate recipient keys",
    "role-missing": "recipient 0: role must be one of owner, member, guest, recovery, got None",
    "role-unknown": "recipient 0: role must be one of .* got 'admin'",
    "role-number": "recipient 0: role must be one of .* got 1",
    "signing-typo": "recipient 0: signing_key: phone signing public key checksum does not match",
    "signing-number": "recipient 0: signing_key must be a string",
    "signing-device": "recipient 0: signing_key: this is a doorbell device public key",
    "duplicate-signing": "duplicate recipient signing keys",
    "guest-forever": "recipient 2: a guest has an expires time, and only a guest",
    "member-expires": "recipient 1: a guest has an expires time, and only a guest",
    "expires-format": "recipient 2: expires 'tomorrow' is not YYYY-MM-DDTHH:MM:SSZ",
    "expires-early": "recipient 2: expires is not after added",
}


@pytest.mark.parametrize("change", BROKEN)
def test_broken_document_names_its_source_and_the_field(roles: Keyring, change: str) -> None:
    with pytest.raises(KeyringError, match=r"^/etc/keyring\.json: " + BROKEN[change]):
        Keyring.from_json(_broken(roles, change), "/etc/keyring.json")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not a JSON keyring"),
        (b"\xff\xfe{}", "not a JSON keyring"),
        (b"[1, 2]", "not a Doorbell keyring"),
        (b"null", "not a Doorbell keyring"),
        (b"[" * 200_000, "not a JSON keyring"),
        (b" " * 262_145, "keyring is 262145 bytes, limit 262144"),
    ],
    ids=["empty", "binary", "list", "null", "deep", "huge"],
)
def test_non_keyring_input_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(KeyringError, match=f"^here: {message}"):
        Keyring.from_json(raw, "here")


def test_more_than_64_recipients_is_refused(two_phones: Keyring) -> None:
    document = _document(two_phones)
    document["recipients"] = document["recipients"] * 33
    with pytest.raises(KeyringError, match="recipients must be a list of at most 64"):
        Keyring.from_json(json.dumps(document).encode(), "x")


def test_huge_integer_epoch_is_a_keyring_error(two_phones: Keyring) -> None:
    """A 5000-digit number is valid JSON but past Python's int conversion limit."""
    raw = two_phones.to_json().replace(b'"epoch": 2', b'"epoch": ' + b"9" * 5000)
    with pytest.raises(KeyringError, match="here: "):
        Keyring.from_json(raw, "here")


# --- hostile documents ---------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=300))
def test_from_json_random_bytes_only_keyring_error(raw: bytes) -> None:
    with pytest.raises(KeyringError):
        Keyring.from_json(raw, "fuzz")


@FUZZ
@given(
    st.sampled_from(
        [
            *("format", "version", "epoch", "recipients", "name", "suite", "key", "added"),
            *("role", "signing_key", "expires"),
        ]
    ),
    _json,
)
def test_from_json_any_field_value_only_keyring_error(field: str, value: Any) -> None:
    keyring = Keyring().add(
        "alice",
        RecipientPublicKey(X, bytes(range(32))),
        NOW,
        role=Role.GUEST,
        signing=SIGNING,
        expires=LATER,
    )
    document = _document(keyring)
    target = document if field in document else document["recipients"][0]
    target[field] = value
    with contextlib.suppress(KeyringError):
        Keyring.from_json(json.dumps(document).encode(), "fuzz")


@FUZZ
@given(st.data())
def test_from_json_mutated_text_only_keyring_error(data: st.DataObject) -> None:
    raw = bytearray(Keyring().add("alice", _key(), NOW).to_json())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at : at + data.draw(st.integers(0, 3))] = data.draw(st.binary(max_size=3))
    try:
        Keyring.from_json(bytes(raw), "fuzz")
    except KeyringError as exc:
        assert str(exc).startswith("fuzz: ")


# --- the store in the state directory ------------------------------------------------------


def test_store_starts_empty_and_saves_edits(tmp_path: Path) -> None:
    store = KeyringStore(tmp_path)
    assert store.load() == Keyring()
    assert not (tmp_path / "keyring.json").exists()
    key = _key()
    with store.editing() as box:
        box[0] = box[0].add("alice", key, NOW)
    assert store.load().recipients[0].key == key
    assert store.load().epoch == 1
    assert stat.S_IMODE((tmp_path / "keyring.json").stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_edit_writes_nothing(tmp_path: Path) -> None:
    store = KeyringStore(tmp_path)
    with store.editing() as box:
        box[0] = box[0].add("alice", _key(), NOW)
    before = (tmp_path / "keyring.json").read_bytes()
    with pytest.raises(KeyringError, match="no phone named 'bob'"), store.editing() as box:
        box[0] = box[0].add("carol", _key(), NOW)
        box[0] = box[0].revoke("bob")
    assert (tmp_path / "keyring.json").read_bytes() == before


def test_corrupt_keyring_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "keyring.json").write_text('{"format": "doorbell-keyring", "version": 9}')
    with pytest.raises(KeyringError, match=re.escape(f"{tmp_path / 'keyring.json'}: unsupported")):
        KeyringStore(tmp_path).load()


def test_unreadable_keyring_file_is_a_key_file_error(tmp_path: Path) -> None:
    (tmp_path / "keyring.json").mkdir()
    with pytest.raises(KeyFileError, match="cannot read"):
        KeyringStore(tmp_path).load()


# --- suites: a classical phone beside a post-quantum one only with the owner's consent ------


def test_post_quantum_only_when_every_phone_is_hybrid() -> None:
    hybrid = Keyring().add("alice", _key(M), NOW).add("carol", _key(M), NOW)
    assert (hybrid.post_quantum, hybrid.classical) == (True, ())
    mixed = hybrid.add("bob", _key(X), NOW)
    assert not mixed.post_quantum
    assert [r.name for r in mixed.classical] == ["bob"]
    assert not Keyring().post_quantum, "nothing is sealed to an empty keyring"
    assert not Keyring().add("bob", _key(X), NOW).post_quantum


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        (
            M,
            X,
            "refused: 'second' uses x25519, which a quantum computer can break; every object "
            "wraps its data key for every phone, so with it enrolled nothing sealed would be "
            "post-quantum protected, not even what 'first' read. Enrol it with an "
            "mlkem768-x25519 key, or add it with --allow-classical to accept this; the "
            "keyring is unchanged",
        ),
        (
            X,
            M,
            "refused: footage would not be post-quantum protected for 'second': 'first' uses "
            "x25519, which a quantum computer can break, and every object wraps its data key "
            "for every phone. Revoke 'first' or enrol it again with an mlkem768-x25519 key, or "
            "add 'second' with --allow-classical to accept this; the keyring is unchanged",
        ),
    ],
    ids=["x25519 beside hybrid", "hybrid beside x25519"],
)
def test_mixing_suites_is_refused_and_changes_nothing(
    tmp_path: Path, first: Suite, then: Suite, message: str
) -> None:
    store = KeyringStore(tmp_path)
    store.add("first", _key(first), NOW)
    before = (tmp_path / "keyring.json").read_bytes()
    with pytest.raises(MixedSuites) as refused:
        store.add("second", _key(then), NOW)
    assert str(refused.value) == message
    assert isinstance(refused.value, KeyringError)
    assert (tmp_path / "keyring.json").read_bytes() == before


def test_phones_of_one_suite_need_no_consent(tmp_path: Path) -> None:
    for suite in (X, M):
        directory = tmp_path / suite.label
        directory.mkdir()
        store = KeyringStore(directory)
        store.add("one", _key(suite), NOW)
        stored = store.add("two", _key(suite), NOW)
        assert stored.keyring.post_quantum is suite.post_quantum
        assert stored.classical_allowed == ()
        assert (directory / "keyring.json").read_bytes() == stored.keyring.to_json()


def test_consent_is_recorded_on_the_device_and_never_published(tmp_path: Path) -> None:
    store = KeyringStore(tmp_path)
    alice = RecipientPrivateKey.generate(M)
    store.add("alice", alice.public_key(), NOW)
    bob = _key(X)
    store.add("bob", bob, NOW + timedelta(minutes=5), allow_classical=True)

    on_disk = json.loads((tmp_path / "keyring.json").read_bytes())
    assert on_disk["device_only"] == {
        "classical_allowed": [
            {"name": "bob", "fingerprint": bob.fingerprint, "allowed": "2026-11-29T21:55:07Z"}
        ]
    }
    stored = store.load_file()
    [bob_recipient] = stored.keyring.classical
    assert stored.consent(bob_recipient) == ClassicalConsent(
        "bob", bob.fingerprint, datetime(2026, 11, 29, 21, 55, 7, tzinfo=UTC)
    )
    keyring = store.load()
    assert keyring == stored.keyring and keyring.epoch == 2
    assert b"device_only" not in keyring.to_json()

    # What phones receive is the keyring document alone.
    with Sealer(tmp_path) as sealer:
        published, _ = sealer.seal(Kind.EVENT, {}, b"")
        device = sealer.device_key
    opened = Reader([alice], [device]).open(bytes(published.data))
    assert bytes(opened.body) == keyring.to_json()
    assert "device_only" not in json.loads(bytes(opened.body))


def test_consent_goes_with_the_phone_it_was_given_for(tmp_path: Path) -> None:
    store = KeyringStore(tmp_path)
    store.add("alice", _key(M), NOW)
    store.add("bob", _key(X), NOW, allow_classical=True)
    with store.editing() as box:
        box[0] = box[0].revoke("bob")
    assert "device_only" not in json.loads((tmp_path / "keyring.json").read_bytes())
    with pytest.raises(MixedSuites, match="'bob' uses x25519"):
        store.add("bob", _key(X), NOW)
    # Given with a hybrid phone's enrolment, it covers the classical phones already there.
    other = KeyringStore(tmp_path / "other")
    (tmp_path / "other").mkdir()
    other.add("bob", _key(X), NOW)
    other.add("dave", _key(X), NOW)
    stored = other.add("carol", _key(M), NOW, allow_classical=True)
    assert [c.name for c in stored.classical_allowed] == ["bob", "dave"]
    assert other.add("erin", _key(M), NOW).keyring.epoch == 4


@pytest.mark.parametrize(
    ("device_only", "message"),
    [
        ([], "device_only.classical_allowed must be a list"),
        ({"classical_allowed": {}}, "device_only.classical_allowed must be a list"),
        ({"classical_allowed": ["bob"]}, "classical_allowed 0: not an object"),
        (
            {"classical_allowed": [{"name": "bob", "fingerprint": 1, "allowed": ""}]},
            "classical_allowed 0: name and fingerprint must be strings",
        ),
        (
            {"classical_allowed": [{"name": "b", "fingerprint": "f", "allowed": "yesterday"}]},
            "classical_allowed 0: allowed 'yesterday' is not YYYY-MM-DDTHH:MM:SSZ",
        ),
    ],
)
def test_a_broken_consent_record_names_the_file(
    tmp_path: Path, device_only: Any, message: str
) -> None:
    document = _document(Keyring().add("bob", _key(X), NOW))
    document["device_only"] = device_only
    (tmp_path / "keyring.json").write_text(json.dumps(document))
    with pytest.raises(KeyringError, match=re.escape(f"{tmp_path / 'keyring.json'}: ")) as bad:
        KeyringStore(tmp_path).load()
    assert message in str(bad.value)


# --- strict parsing: one document, one meaning -----------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.replace('"recipients"', '"recipients": [], "recipients"', 1),
            "duplicate key 'recipients'",
        ),
        (lambda t: t.replace('"epoch": 2', '"epoch": NaN', 1), "NaN is not a JSON number"),
        (lambda t: t.replace('"epoch": 2', '"epoch": Infinity', 1), "Infinity is not a JSON"),
        (lambda t: t.replace('"epoch": 2', '"epoch": 2, "x": 1e400', 1), "does not fit a double"),
        (lambda t: t.replace('"format"', '"\\ud800": 0, "format"', 1), "unpaired surrogate"),
        (lambda t: "\ufeff" + t, "starts with a byte-order mark"),
    ],
    ids=["duplicate", "nan", "infinity", "overflow", "surrogate", "bom"],
)
def test_a_document_that_is_not_strict_json_is_refused(
    two_phones: Keyring, change: Any, message: str
) -> None:
    text = change(two_phones.to_json().decode())
    with pytest.raises(KeyringError, match=f"^here: not a JSON keyring: .*{message}"):
        Keyring.from_json(text.encode(), "here")


def test_keys_are_unique_by_raw_key_whatever_the_spelling(two_phones: Keyring) -> None:
    document = _document(two_phones)
    first, second = document["recipients"]
    key = first["key"]
    second.update(suite=first["suite"], key=key.upper()[:30] + "\n " + key.upper()[30:])
    with pytest.raises(KeyringError, match="duplicate recipient keys: recipients 0 and 1"):
        Keyring.from_json(json.dumps(document).encode(), "here")


@pytest.mark.parametrize("char", ["\u202a", "\u202e", "\u2066", "\u2069", "\u200b", "\u200f"])
def test_names_refuse_bidi_and_zero_width_characters_by_code_point(char: str) -> None:
    with pytest.raises(KeyringError, match=f"U\\+{ord(char):04X} .* reorders or hides text"):
        Keyring().add(f"ali{char}ce", _key(), NOW)
