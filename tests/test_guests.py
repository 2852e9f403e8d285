"""Guests (FORMAT.md section 7): from the moment a guest expires nothing is sealed to it,
and the doorbell seals the keyring without it then, not at its next restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon_harness import DaemonRig, wait_for

from doorbell.phone.home import PhoneHome
from doorbell.sealing import (
    Keyring,
    KeyringStore,
    Kind,
    PhoneSigningKey,
    Reader,
    RecipientPrivateKey,
    Role,
    Sealer,
    Suite,
    load_device_key,
    prepare_state_dir,
)
from doorbell.sealing import format as fmt

START = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


def _keyring_objects(folder: Path, reader: Reader) -> list[Keyring]:
    found = []
    for path in sorted(folder.glob("*.sealed")):
        opened = reader.open(path.read_bytes())
        if opened.kind is Kind.KEYRING:
            found.append(Keyring.from_json(opened.body, path.name))
    return found


def test_the_sealer_stops_sealing_to_a_guest_the_moment_it_expires(state_dir: Path) -> None:
    owner = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
    guest = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
    expires = START + timedelta(seconds=3)
    store = KeyringStore(prepare_state_dir(state_dir))
    with store.editing() as box:
        box[0] = box[0].add(
            "owner", owner.public_key(), START, signing=PhoneSigningKey.generate().public_key
        )
        box[0] = box[0].add("visitor", guest.public_key(), START, role=Role.GUEST, expires=expires)
    now = [START.timestamp() + 2.9]
    with Sealer(state_dir, clock=lambda: now[0]) as sealer:
        before = sealer.seal(Kind.EVENT, {"type": "ring"}, b"a")
        assert not sealer.expiry_due()
        now[0] = expires.timestamp()
        assert sealer.expiry_due()
        published = sealer.publish_keyring()
        after = sealer.seal(Kind.EVENT, {"type": "ring"}, b"b")
        device = sealer.device_key
    guest_reader = Reader([guest], [device])
    owner_reader = Reader([owner], [device])
    assert [o.kind for o in before] == [Kind.KEYRING, Kind.EVENT]
    assert all(guest_reader.can_open(fmt.parse_envelope(o.data)) for o in before)
    # At expiry: a keyring object of the next epoch without the guest, sealed on its own.
    [keyring_object] = published
    announced = Keyring.from_json(owner_reader.open(keyring_object.data).body, "published")
    assert [r.name for r in announced.recipients] == ["owner"]
    assert announced.epoch == store.load().epoch == 3
    assert not guest_reader.can_open(fmt.parse_envelope(keyring_object.data))
    [event] = after
    assert not guest_reader.can_open(fmt.parse_envelope(event.data))
    assert len(fmt.parse_envelope(event.data).stanzas) == 1
    assert bytes(owner_reader.open(event.data).body) == b"b"


def test_the_daemon_seals_the_keyring_when_a_guest_expires(rig: DaemonRig) -> None:
    guest_home = PhoneHome(rig.root / "guest")
    guest = guest_home.init(Suite.X25519)
    device, _ = load_device_key(rig.state)
    guest_home.trust(device.public_key, "doorbell")
    with KeyringStore(rig.state).editing() as box:
        box[0] = box[0].add(
            "visitor",
            guest.public_key(),
            datetime.now(UTC),
            role=Role.GUEST,
            expires=datetime.now(UTC) + timedelta(seconds=3),
        )
    epoch = KeyringStore(rig.state).load().epoch
    rig.start()
    rig.wait_ready()
    owner = rig.home.reader()
    # Nothing is rung: the keyring object of the next epoch comes of the expiry alone.
    wait_for(
        lambda: any(k.epoch == epoch + 1 for k in _keyring_objects(rig.bucket, owner)),
        30,
        "the keyring without the guest",
    )
    [*_, last] = _keyring_objects(rig.bucket, owner)
    assert [r.name for r in last.recipients] == ["test-phone"]
    assert [r.name for r in KeyringStore(rig.state).load().recipients] == ["test-phone"]
    rig.wait_preroll()
    rig.command("ring")
    wait_for(
        lambda: rig.status().get("clips") == 1 and rig.status().get("clip") is None, 60, "clip"
    )
    assert rig.stop() == 0
    guest_reader = guest_home.reader()
    expired_at = next(
        path.name
        for path in sorted(rig.bucket.glob("*.sealed"))
        if owner.open(path.read_bytes()).epoch == epoch + 1
    )
    later = [p for p in sorted(rig.bucket.glob("*.sealed")) if p.name >= expired_at]
    assert len(later) > 5  # the keyring, the event and the clip's segments
    for path in later:
        assert not guest_reader.can_open(fmt.parse_envelope(path.read_bytes())), path.name
    result, _ = rig.verify()
    assert result.ok, [f.message for f in result.problems]
    assert "visitor" in rig.log_text() and "expired" in rig.log_text()
