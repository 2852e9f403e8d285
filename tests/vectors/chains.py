"""The vectors of the phone's rules (FORMAT.md sections 4.1, 5, 6 and 7), for generate.py.

- ``invalid_signatures``: single objects a reader must reject before using anything;
- ``invalid_payloads``: authentic objects that open, but whose payload a reader that uses
  their kind must reject (meta not strict JSON, a required meta key missing, a keyring
  object whose epochs disagree or whose document is not strict JSON);
- ``chains``: sets of objects of one device, with what the phone remembered before, and
  the problems (by finding code) a reader must report. ``codes`` is the set of problem
  codes; an empty set means the set verifies. ``remembered`` is one device's entry of a
  ``seen.json`` of version 1, or of ``remembered_version`` when a vector has one;
- ``chains_review``: more of the same, for the rules a hostile review of the phone added
  (keyrings never published, objects withheld from this phone, every remembered object,
  re-announced evictions, a restart right after a quota range, clip-end notices);
- ``chains_damaged``: ``discarded`` notices with reason ``"damaged"`` (a spooled file the
  device found damaged), added to version 1 without changing a byte of the layout.

Every set is signed by the published test device key: a stolen device key can sign all
of these, and the phone must still report them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from doorbell.phone.chain import verify_source
from doorbell.phone.memory import PhoneMemory
from doorbell.phone.objects import DirectorySource
from doorbell.phone.rules import check_contents
from doorbell.sealing import format as fmt
from doorbell.sealing.keyring import Keyring
from doorbell.sealing.keys import DeviceSigningKey, RecipientPrivateKey
from doorbell.sealing.reader import ED25519_L, Reader
from doorbell.sealing.sealer import _seal, _wrappers, object_name, seal_bytes

TIME_US = 1_795_000_000_000_000
STREAM = "22" * 16
CLIP = "33" * 16


def signature_vectors(valid: bytes) -> list[dict[str, Any]]:
    s = int.from_bytes(valid[-32:], "little")
    s_plus_l = valid[:-32] + (s + ED25519_L).to_bytes(32, "little")
    return [
        {
            "description": "signature with S + L instead of S (non-canonical, RFC 8032 5.1.7)",
            "object": s_plus_l.hex(),
            "error": "not canonical",
        }
    ]


def payload_vectors(
    device: DeviceSigningKey, phone: RecipientPrivateKey, keyring: Keyring
) -> list[dict[str, Any]]:
    def raw(meta: bytes, kind: fmt.Kind = fmt.Kind.EVENT, body: bytes = b"") -> bytes:
        wrappers = _wrappers(keyring)
        return bytes(
            _seal(
                device,
                keyring.epoch,
                wrappers,
                0,
                fmt.ZERO_PREV,
                kind,
                meta,
                body,
                TIME_US,
                os.urandom,
            )
        )

    def sealed(
        kind: fmt.Kind, meta: dict[str, Any], body: bytes = b"", epoch: int | None = None
    ) -> bytes:
        used = keyring if epoch is None else replace(keyring, epoch=epoch)
        return bytes(seal_bytes(device, used, 0, fmt.ZERO_PREV, kind, meta, body, TIME_US))

    document = keyring.to_json()
    plan = [
        ("meta with a duplicate key", raw(b'{"type":"ring","type":"motion"}'), "duplicate key"),
        ("meta with NaN", raw(b'{"position":NaN}'), "NaN is not a JSON number"),
        ("meta with 1e999", raw(b'{"position":1e999}'), "does not fit a double"),
        ("meta that is not UTF-8", raw(b'{"type":"\xc0\xae"}'), "not UTF-8"),
        ("meta with an unpaired surrogate", raw(b'{"type":"\\udc00"}'), "unpaired surrogate"),
        ("event without a clip", sealed(fmt.Kind.EVENT, {"type": "ring"}), "'clip' is missing"),
        (
            "segment with a negative index",
            sealed(
                fmt.Kind.SEGMENT,
                {"stream": STREAM, "index": -1, "start": 0, "duration": 2, "frames": 1},
            ),
            "'index' is -1",
        ),
        ("notice of an unknown kind", sealed(fmt.Kind.NOTICE, {"notice": "pre-roll"}), "'notice'"),
        (
            "keyring object whose meta epoch differs from its document",
            sealed(fmt.Kind.KEYRING, {"epoch": 7}, document),
            "meta epoch 7, payload epoch 1 and document epoch 1",
        ),
        (
            "keyring object whose payload epoch differs from its document",
            sealed(fmt.Kind.KEYRING, {"epoch": 1}, document, epoch=2),
            "meta epoch 1, payload epoch 2 and document epoch 1",
        ),
        (
            "keyring document with a duplicate key",
            sealed(
                fmt.Kind.KEYRING,
                {"epoch": 1},
                document.replace(b'"recipients"', b'"recipients": [], "recipients"', 1),
            ),
            "duplicate key 'recipients'",
        ),
    ]
    reader = Reader([phone], [device.public_key])
    out = []
    for description, data, error in plan:
        try:
            check_contents(reader.open(data))
        except Exception as exc:
            assert error in str(exc), (description, str(exc))
        else:
            raise AssertionError(f"the reference reader accepts {description!r}")
        out.append({"description": description, "object": data.hex(), "error": error})
    return out


@dataclass
class _Chain:
    device: DeviceSigningKey
    keyring: Keyring
    objects: dict[int, bytes] = field(default_factory=dict)
    remembered: dict[str, Any] | None = None
    skip: set[int] = field(default_factory=set)

    def hash(self, seq: int) -> bytes:
        return fmt.chain_hash(self.objects[seq][-64:])

    def seal(
        self,
        seq: int,
        prev: bytes,
        kind: fmt.Kind,
        meta: dict[str, Any],
        body: bytes = b"",
        keyring: Keyring | None = None,
    ) -> None:
        used = keyring or self.keyring
        time_us = TIME_US + seq % 1_000_000
        self.objects[seq] = bytes(
            seal_bytes(self.device, used, seq, prev, kind, meta, body, time_us)
        )

    def append(
        self, kind: fmt.Kind, meta: dict[str, Any], body: bytes = b"", **options: Any
    ) -> int:
        seq = max(self.objects) + 1 if self.objects else 0
        self.seal(seq, self.hash(seq - 1) if seq else fmt.ZERO_PREV, kind, meta, body, **options)
        return seq

    def keyring_object(self, keyring: Keyring | None = None) -> int:
        used = keyring or self.keyring
        return self.append(fmt.Kind.KEYRING, {"epoch": used.epoch}, used.to_json(), keyring=used)

    def event(self) -> int:
        return self.append(
            fmt.Kind.EVENT, {"type": "ring", "clip": CLIP, "stream": "", "first_index": 0}
        )

    def segment(self, index: int) -> int:
        meta = {
            "stream": STREAM,
            "index": index,
            "start": index * 2.0,
            "duration": 2.0,
            "frames": 30,
        }
        return self.append(fmt.Kind.SEGMENT, meta, b"moof")

    def remember_head(self, seq: int, digest: bytes | None = None) -> None:
        self.remembered = {"head": {"seq": seq, "hash": (digest or self.hash(seq)).hex()}}

    def remember_all(self, head: int) -> None:
        """A phone that verified 0..head, none of them a media segment (``seen.json`` v2)."""
        self.remember_head(head)
        assert self.remembered is not None
        self.remembered.update(seen=[[0, head]], kept=[[0, head]])

    def start(self, events: int) -> None:
        self.keyring_object()
        for _ in range(events):
            self.event()


def restart_meta(previous: tuple[int, bytes] | None, first: int, last: int) -> dict[str, Any]:
    return {
        "notice": "restart",
        "previous": None if previous is None else {"seq": previous[0], "hash": previous[1].hex()},
        "skipped": {"first": first, "last": last},
    }


def quota_meta(*ranges: tuple[int, int, bytes], reason: str = "quota") -> dict[str, Any]:
    items = [{"first": a, "last": b, "last_hash": h.hex()} for a, b, h in ranges]
    return {"notice": "discarded", "reason": reason, "ranges": items}


N = fmt.Kind.NOTICE


def _honest(c: _Chain) -> None:
    c.start(3)
    c.seal(10, c.hash(3), N, restart_meta((3, c.hash(3)), 4, 9))
    c.keyring_object()
    for index in range(4):
        c.segment(index)  # 12..15, continuous
    c.append(N, quota_meta((12, 13, c.hash(13))))
    c.skip = {12, 13}


def _reordered(n_present: bool) -> Callable[[_Chain], None]:
    def build(c: _Chain) -> None:
        c.start(4)
        c.seal(
            5,
            c.hash(1),
            fmt.Kind.EVENT,
            {"type": "ring", "clip": CLIP, "stream": "", "first_index": 0},
        )
        c.skip = set() if n_present else {4}

    return build


def _replaced(c: _Chain) -> None:
    c.start(3)
    c.seal(
        4,
        bytes(range(32)),
        fmt.Kind.EVENT,
        {"type": "ring", "clip": CLIP, "stream": "", "first_index": 0},
    )


def _restart_case(case: str) -> Callable[[_Chain], None]:
    def build(c: _Chain) -> None:
        c.start(3)
        head = (3, c.hash(3))
        notice, prev, meta = 10, c.hash(3), restart_meta(head, 4, 9)
        if case == "prev":
            prev = c.hash(2)
        elif case == "first":
            meta = restart_meta(head, 6, 9)
        elif case == "block":
            notice = 2004
            meta = restart_meta(head, 4, 2003)
        elif case == "null":
            prev, meta = fmt.ZERO_PREV, restart_meta(None, 0, 9)
        elif case == "hides":
            c.event()
            c.event()  # 4 and 5 delivered; the notice names the stale head 3
        elif case == "remembered":
            c.event()
            c.event()
            c.remember_head(5)
            c.skip = {4, 5}
        c.seal(notice, prev, N, meta)
        c.keyring_object()

    return build


def _discard_case(case: str) -> Callable[[_Chain], None]:
    def build(c: _Chain) -> None:
        c.start(1)
        for index in range(4):
            c.segment(index)  # 2..5
        c.skip = {2, 3}
        if case == "pre-roll":
            c.append(N, quota_meta((2, 3, c.hash(3)), reason="pre-roll"))
        elif case == "past":
            c.append(N, quota_meta((2, 6, c.hash(3))))
        elif case == "overlap":
            c.append(N, quota_meta((2, 3, c.hash(3)), (3, 3, c.hash(3))))
        elif case == "last_hash":
            c.append(N, quota_meta((2, 3, bytes(32))))
        elif case == "remembered":
            c.remember_head(3)
            c.append(N, quota_meta((2, 3, c.hash(3))))

    return build


def _eviction_order(c: _Chain) -> None:
    c.keyring_object()
    c.append(
        fmt.Kind.INIT,
        {"stream": STREAM, "codec": "h264", "width": 320, "height": 240, "fps": 15},
        b"ftyp",
    )
    c.append(fmt.Kind.EVENT, {"type": "ring", "clip": CLIP, "stream": STREAM, "first_index": 0})
    for index in range(3):
        c.segment(index)  # 3..5: the clip
    end = {
        "notice": "clip-end",
        "clip": CLIP,
        "stream": STREAM,
        "last_index": 2,
        "reason": "post-roll",
    }
    c.append(N, end)
    c.segment(3)
    c.segment(4)  # 7, 8: continuous recording
    c.append(N, quota_meta((4, 4, c.hash(4))))  # clip segment 1 evicted, 7 survives
    c.skip = {4}


def _huge_ranges(c: _Chain) -> None:
    c.start(1)
    big = 2**62
    bridge = bytes(range(32))
    c.seal(big, bridge, N, quota_meta((2, big - 1, bridge)))
    c.seal(2**63, c.hash(big), N, restart_meta((big, c.hash(big)), big + 1, 2**63 - 1))


def _stranger(c: _Chain) -> None:
    c.start(1)
    stranger = RecipientPrivateKey(c.keyring.recipients[0].key.suite, bytes([7]) * 32).public_key()
    extra = replace(
        c.keyring.add("stranger", stranger, c.keyring.recipients[0].added), epoch=c.keyring.epoch
    )
    c.append(
        fmt.Kind.EVENT,
        {"type": "ring", "clip": CLIP, "stream": "", "first_index": 0},
        keyring=extra,
    )


def _rollback(c: _Chain) -> None:
    stranger = RecipientPrivateKey(c.keyring.recipients[0].key.suite, bytes([7]) * 32).public_key()
    newer = c.keyring.add("partner", stranger, c.keyring.recipients[0].added)
    c.keyring_object(newer)
    c.keyring_object()


def _remembered_rollback(c: _Chain) -> None:
    stranger = RecipientPrivateKey(c.keyring.recipients[0].key.suite, bytes([7]) * 32).public_key()
    newer = c.keyring.add("partner", stranger, c.keyring.recipients[0].added)
    c.start(1)
    c.remembered = {"keyring": {"seq": 1, "document": newer.to_json().decode()}}
    c.keyring_object()  # seq 2, epoch 1: older than the epoch 2 the phone saw at seq 1


def _remembered_fork(c: _Chain) -> None:
    c.start(2)
    c.remember_head(2, bytes(range(32)))


CASES: list[tuple[str, Callable[[_Chain], None], list[str]]] = [
    ("honest: a restart and a quota eviction, both announced", _honest, []),
    ("seq N+1 names N-3, N absent", _reordered(False), ["missing", "reordered"]),
    ("seq N+1 names N-3, N present", _reordered(True), ["reordered"]),
    ("prev names nothing, seq-1 present", _replaced, ["replaced"]),
    ("restart: prev is not previous.hash", _restart_case("prev"), ["missing", "restart-mismatch"]),
    (
        "restart: skipped does not start after previous",
        _restart_case("first"),
        ["missing", "restart-mismatch"],
    ),
    ("restart: skips more than one block", _restart_case("block"), ["missing", "restart-mismatch"]),
    (
        "restart: previous null with older objects present",
        _restart_case("null"),
        ["missing", "notice-hides-delivered", "restart-mismatch"],
    ),
    (
        "restart: skipped covers delivered objects",
        _restart_case("hides"),
        ["missing", "notice-hides-delivered"],
    ),
    (
        "restart: skipped covers objects the phone remembers (power-cut deletion)",
        _restart_case("remembered"),
        ["missing", "notice-hides-delivered"],
    ),
    ("discarded: reason pre-roll", _discard_case("pre-roll"), ["bad-discard", "missing"]),
    ("discarded: range reaches the notice", _discard_case("past"), ["bad-discard", "missing"]),
    ("discarded: overlapping ranges", _discard_case("overlap"), ["overlapping-notices"]),
    ("discarded: last_hash does not bridge", _discard_case("last_hash"), ["replaced"]),
    (
        "discarded: hides an object the phone remembers",
        _discard_case("remembered"),
        ["notice-hides-delivered"],
    ),
    (
        "quota evicts a clip while continuous recording survives",
        _eviction_order,
        ["eviction-order"],
    ),
    (
        "2^62 evicted and 2^62 skipped (ranges, not loops)",
        _huge_ranges,
        ["missing", "restart-mismatch"],
    ),
    ("a stanza for a key not in the keyring", _stranger, ["stanzas"]),
    ("keyring epoch goes back within the set", _rollback, ["keyring-rollback"]),
    ("keyring epoch older than the one remembered", _remembered_rollback, ["keyring-rollback"]),
    ("an object differs from the one remembered at its seq", _remembered_fork, ["fork"]),
]


def _stranger_keyring(c: _Chain) -> Keyring:
    """A keyring of one phone that is not the vectors' phone (epoch 1)."""
    suite = c.keyring.recipients[0].key.suite
    stranger = RecipientPrivateKey(suite, bytes([7]) * 32).public_key()
    return Keyring().add("stranger", stranger, c.keyring.recipients[0].added)


def _event_meta() -> dict[str, Any]:
    return {"type": "ring", "clip": CLIP, "stream": "", "first_index": 0}


def _honest_review(c: _Chain) -> None:
    """A quota eviction announced twice (the device stopped before deleting what it
    evicted), and a restart notice sealed under a keyring changed while the device was
    down, before that keyring's object."""
    c.start(1)
    for index in range(4):
        c.segment(index)  # 2..5, continuous
    c.append(N, quota_meta((2, 3, c.hash(3))))  # 6
    partner = _stranger_keyring(c).recipients[0]
    changed = c.keyring.add(partner.name, partner.key, partner.added)
    c.seal(7, c.hash(6), N, restart_meta((6, c.hash(6)), 7, 6), keyring=changed)
    c.keyring = changed
    c.keyring_object()  # 8
    c.append(N, quota_meta((2, 3, c.hash(3))))  # 9: evicted again after the restart
    c.event()
    c.skip = {2, 3}


def _late_enrolment(c: _Chain) -> None:
    """Objects 0..5 sealed before this phone was enrolled (2..3 evicted, announced in a
    notice it cannot read); the keyring object at 6 enrols it."""
    phone = c.keyring.recipients[0]
    before = _stranger_keyring(c)
    c.keyring_object(before)
    c.append(fmt.Kind.EVENT, _event_meta(), keyring=before)
    c.segment(0)
    c.segment(1)
    c.append(N, quota_meta((2, 3, c.hash(3))), keyring=before)  # 4
    c.append(fmt.Kind.EVENT, _event_meta(), keyring=before)  # 5
    c.keyring = before.add(phone.name, phone.key, phone.added)
    c.keyring_object()  # 6
    c.event()
    c.skip = {2, 3}


def _withheld(c: _Chain) -> None:
    """Seq 2..3 deleted; seq 5 sealed to a stranger between keyrings that list this phone."""
    c.start(4)
    c.append(fmt.Kind.EVENT, _event_meta(), keyring=_stranger_keyring(c))  # 5
    c.keyring = replace(c.keyring, epoch=c.keyring.epoch + 1)
    c.keyring_object()  # 6
    c.event()
    c.skip = {2, 3}


def _remembered_behind_a_stranger(c: _Chain) -> None:
    """Rings 2..3 the phone saw are deleted; one object sealed to a stranger follows."""
    c.start(4)
    c.append(fmt.Kind.EVENT, _event_meta(), keyring=_stranger_keyring(c))  # 5
    c.remember_all(4)
    c.skip = {2, 3}


def _unpublished(c: _Chain) -> None:
    c.start(2)
    partner = _stranger_keyring(c).recipients[0]
    spied = c.keyring.add(partner.name, partner.key, partner.added)  # epoch 2, never sealed
    c.append(fmt.Kind.EVENT, _event_meta(), keyring=spied)
    c.append(fmt.Kind.EVENT, _event_meta(), keyring=spied)


def _hides_remembered_event(c: _Chain) -> None:
    c.start(3)
    c.remember_all(3)
    c.append(N, quota_meta((2, 2, c.hash(2))))
    c.skip = {2}


def _restart_after_quota(c: _Chain) -> None:
    c.start(1)
    for index in range(3):
        c.segment(index)  # 2..4
    fake = bytes(range(32))
    c.seal(5, fake, N, restart_meta((4, fake), 5, 4))
    c.keyring_object()  # 6
    c.append(N, quota_meta((3, 4, c.hash(4))))  # 7
    c.skip = {3, 4}


def _clip_ends(c: _Chain) -> None:
    c.keyring_object()
    c.append(
        fmt.Kind.INIT,
        {"stream": STREAM, "codec": "h264", "width": 320, "height": 240, "fps": 15},
        b"ftyp",
    )
    c.append(fmt.Kind.EVENT, {"type": "ring", "clip": CLIP, "stream": STREAM, "first_index": 0})
    c.segment(0)
    end = {"notice": "clip-end", "clip": CLIP, "stream": STREAM, "last_index": 0}
    c.append(N, {**end, "reason": "post-roll"})
    c.append(N, {**end, "stream": "44" * 16, "reason": "shutdown"})


REVIEW_CASES: list[tuple[str, Callable[[_Chain], None], list[str]]] = [
    ("honest: a quota range announced again, a restart before its keyring", _honest_review, []),
    ("honest: gaps before this phone was enrolled", _late_enrolment, []),
    (
        "an object withheld from this phone hides deleted ones",
        _withheld,
        ["missing", "stanzas"],
    ),
    (
        "remembered rings deleted, an object for a stranger after them",
        _remembered_behind_a_stranger,
        ["missing"],
    ),
    ("objects sealed under a keyring never published", _unpublished, ["unpublished-keyring"]),
    (
        "discarded: hides a remembered ring that is not the newest",
        _hides_remembered_event,
        ["notice-hides-delivered"],
    ),
    ("a restart right after a quota range does not follow it", _restart_after_quota, ["replaced"]),
    ("a clip ended twice, the second time on another stream", _clip_ends, ["clip"]),
]


def damaged_meta(*ranges: tuple[int, int, bytes]) -> dict[str, Any]:
    return quota_meta(*ranges, reason="damaged")


def _damaged_honest(c: _Chain) -> None:
    """Segment 3's spooled file was damaged: the notice's last_hash is the prev of 4."""
    c.start(1)
    for index in range(4):
        c.segment(index)  # 2..5
    c.append(N, damaged_meta((3, 3, c.hash(3))))  # 6
    c.skip = {3}


def _damaged_again(c: _Chain) -> None:
    """Evicted 2..3 by quota, stopped before deleting them; after the restart 3 and its
    event 4 were found damaged and announced, and again after a second stop."""
    c.start(1)
    for index in range(2):
        c.segment(index)  # 2..3, continuous
    c.event()  # 4
    c.append(N, quota_meta((2, 3, c.hash(3))))  # 5
    c.seal(6, c.hash(5), N, restart_meta((5, c.hash(5)), 6, 5))
    c.keyring_object()  # 7
    c.append(N, damaged_meta((3, 4, c.hash(4))))  # 8
    c.append(N, damaged_meta((3, 4, c.hash(4))))  # 9
    c.skip = {2, 3, 4}


def _damaged_remembered(c: _Chain) -> None:
    """A ring the phone saw live is damaged in the spool: it never reaches this copy."""
    c.start(3)
    c.remember_all(3)
    c.append(N, damaged_meta((2, 2, c.hash(2))))
    c.skip = {2}


def _damaged_case(case: str) -> Callable[[_Chain], None]:
    def build(c: _Chain) -> None:
        c.start(1)
        for index in range(3):
            c.segment(index)  # 2..4
        if case == "last_hash":
            c.append(N, damaged_meta((3, 3, bytes(32))))
        elif case == "corrupt":
            c.append(N, quota_meta((3, 3, c.hash(3)), reason="corrupt"))
        c.skip = {3}

    return build


DAMAGED_CASES: list[tuple[str, Callable[[_Chain], None], list[str]]] = [
    ("honest: a damaged segment announced with the next object's prev", _damaged_honest, []),
    (
        "honest: damaged ranges announced twice, overlapping a quota range",
        _damaged_again,
        [],
    ),
    ("honest: a damaged ring this phone remembers", _damaged_remembered, []),
    ("damaged: last_hash does not bridge", _damaged_case("last_hash"), ["replaced"]),
    ("discarded: reason corrupt", _damaged_case("corrupt"), ["bad-discard", "missing"]),
]


def chain_vectors(
    device: DeviceSigningKey,
    phone: RecipientPrivateKey,
    keyring: Keyring,
    cases: list[tuple[str, Callable[[_Chain], None], list[str]]] = CASES,
) -> list[dict[str, Any]]:
    out, wrong = [], []
    for description, build, codes in cases:
        chain = _Chain(device, keyring)
        build(chain)
        objects = [
            {"name": object_name(device.public_key.device_id, seq), "object": data.hex()}
            for seq, data in sorted(chain.objects.items())
            if seq not in chain.skip
        ]
        vector: dict[str, Any] = {
            "description": description,
            "remembered": chain.remembered,
            "objects": objects,
            "codes": codes,
        }
        if chain.remembered is not None and {"seen", "kept"} & set(chain.remembered):
            vector["remembered_version"] = 2
        found = run_chain_vector(
            vector, device.public_key.device_id.hex(), Reader([phone], [device.public_key])
        )
        if found != codes:
            wrong.append(f"{description}: expected {codes}, the reference reader found {found}")
        out.append(vector)
    if wrong:
        raise AssertionError("\n".join(wrong))
    return out


def run_chain_vector(vector: dict[str, Any], device_id: str, reader: Reader) -> list[str]:
    """The sorted set of problem codes the reference reader reports for one chain vector."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "objects"
        folder.mkdir()
        for item in vector["objects"]:
            (folder / item["name"]).write_bytes(bytes.fromhex(item["object"]))
        remembered = {}
        if vector["remembered"] is not None:
            version = vector.get("remembered_version", 1)
            seen = {"version": version, "devices": {device_id: vector["remembered"]}}
            (Path(scratch) / "seen.json").write_text(json.dumps(seen))
            remembered = PhoneMemory(Path(scratch)).load()
        result = verify_source(DirectorySource(folder), reader, remembered)
    return sorted({f.code for f in result.problems})
