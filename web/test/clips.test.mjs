// Clip planning (doorbell/phone/export.py's planning) on entries built here and on the
// committed vector chains.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { fromHex } from '../src/bytes.js';
import { Reader } from '../src/format/object.js';
import { bytesKeyHolder } from '../src/crypto/kem.js';
import { planClips } from '../src/chain/clips.js';
import { verifySource } from '../src/chain/verify.js';

const STREAM = 'a'.repeat(32);
const OTHER = 'b'.repeat(32);
const CLIP = 'c'.repeat(32);
const SECOND = 'd'.repeat(32);
const KIND = { init: 1, segment: 2, event: 3, keyring: 4, notice: 5 };

/** A verification of the objects described, in seq order: only what planning reads. */
function verification(objects) {
  return {
    entries: objects.map(([kind, meta, timeUs = 0n], seq) => ({
      name: `object-${seq}`,
      seq: BigInt(seq),
      contents: { kind: KIND[kind], timeUs: BigInt(timeUs), epoch: 1, meta, keyring: null },
      rejected: false,
    })),
  };
}

const init = (stream = STREAM) => ['init', { stream }];
const segment = (index, { stream = STREAM, start = index * 2, duration = 2, time = 1000n + BigInt(index) } = {}) => [
  'segment',
  { stream, index, start, duration },
  time,
];
const event = (type, first, { clip = CLIP, stream = STREAM, position = 3.5, time = 5000n } = {}) => [
  'event',
  { type, clip, stream, first_index: first, position },
  time,
];
const clipEnd = (last, { clip = CLIP, stream = STREAM } = {}) => ['notice', { notice: 'clip-end', clip, stream, last_index: last }];

test('a clip with a segment missing has a gap, and plays what is there', () => {
  const plan = planClips(verification([init(), event('ring', 0), segment(0), segment(1), segment(3), clipEnd(3)]));
  assert.equal(plan.length, 1);
  const [clip] = plan;
  assert.equal(clip.clip, CLIP);
  assert.equal(clip.type, 'ring');
  assert.equal(clip.stream, STREAM);
  assert.equal(clip.timeUs, 5000n);
  assert.equal(clip.init.name, 'object-0');
  assert.deepEqual(clip.segments.map((e) => e.contents.meta.index), [0, 1, 3]);
  assert.deepEqual(clip.gaps, [[2n, 2n]]);
  assert.equal(clip.interrupted, false);
  assert.equal(clip.seconds, 6);
  assert.equal(clip.preRollSeconds, 3.5);
});

test('a clip without its clip-end is interrupted and runs to the newest segment', () => {
  const plan = planClips(verification([init(), segment(4), event('motion', 5), segment(5), segment(6)]));
  const clip = plan.find((c) => c.clip === CLIP);
  assert.equal(clip.type, 'motion');
  assert.equal(clip.interrupted, true);
  assert.deepEqual(clip.segments.map((e) => e.contents.meta.index), [5, 6]);
  assert.deepEqual(clip.gaps, []);
  assert.equal(clip.preRollSeconds, 3.5 - 10);
  const loose = plan.find((c) => c.clip === null);
  assert.equal(loose.type, 'recording');
  assert.deepEqual(loose.segments.map((e) => e.contents.meta.index), [4]);
  assert.equal(loose.interrupted, false);
});

test('a ring and a motion event of one clip are one clip, a ring', () => {
  const plan = planClips(
    verification([init(), event('motion', 0), segment(0), event('ring', 0, { time: 6000n }), segment(1), clipEnd(1)]),
  );
  assert.equal(plan.length, 1);
  assert.equal(plan[0].type, 'ring');
  assert.equal(plan[0].timeUs, 5000n);
  assert.equal(plan[0].snapshots.length, 2);
});

test('continuous recording outside clips is split where an index is skipped; newest first', () => {
  const plan = planClips(
    verification([
      init(),
      segment(0, { time: 100n }),
      segment(1, { time: 101n }),
      segment(3, { time: 103n }),
      init(OTHER),
      segment(0, { stream: OTHER, time: 50n }),
    ]),
  );
  assert.deepEqual(
    plan.map((c) => [c.clip, c.stream, c.timeUs, c.segments.length]),
    [
      [null, STREAM, 103n, 1],
      [null, STREAM, 100n, 2],
      [null, OTHER, 50n, 1],
    ],
  );
  assert.ok(plan.every((c) => c.init !== null && c.gaps.length === 0 && c.preRollSeconds === null));
});

test('a clip-end naming index 2^63 is a range, not a loop', () => {
  const huge = 2n ** 63n;
  const plan = planClips(verification([init(), event('ring', 0), segment(0), clipEnd(huge)]));
  assert.deepEqual(plan[0].gaps, [[1n, huge]]);
});

test('a clip without its init segment has init null; ids that are not 32 hex digits are no clip', () => {
  const plan = planClips(verification([event('ring', 0, { clip: '../etc' }), segment(0), event('ring', 1, { clip: SECOND }), segment(1)]));
  assert.deepEqual(plan.map((c) => c.clip), [SECOND, null]);
  assert.equal(plan[0].init, null);
});

test('clips of a vector chain, verified', async () => {
  const vectors = JSON.parse(readFileSync(new URL('../../tests/vectors/v1.json', import.meta.url), 'utf8'));
  const suite = { x25519: 1, 'mlkem768-x25519': 2 };
  const reader = new Reader({
    devices: [fromHex(vectors.device.public_raw)],
    keys: await Promise.all(vectors.phones.map((p) => bytesKeyHolder(suite[p.suite], fromHex(p.secret_raw)))),
  });
  const vector = vectors.chains.find((v) => v.description.startsWith('quota evicts a clip'));
  const files = new Map(vector.objects.map((o) => [o.name, fromHex(o.object)]));
  const source = { names: async () => [...files.keys()].sort(), read: async (name) => files.get(name) };
  const plan = planClips(await verifySource(source, reader, new Map()));
  const clips = plan.filter((c) => c.clip !== null);
  assert.equal(clips.length, 1);
  assert.ok(clips[0].gaps.length > 0, 'the evicted segments are a gap');
  for (let i = 1; i < plan.length; i++) assert.ok(plan[i - 1].timeUs >= plan[i].timeUs);
});

// --- the cases of the Python phone's export tests (tests/test_phone_cli.py) --------------------

/** Objects sealed one after another, ten seconds apart (export's `_advancing` clock). */
function sealed(objects) {
  return verification(objects.map(([kind, meta], i) => [kind, meta, 1795000000000000n + BigInt(i) * 10_000_000n]));
}
const seg = (index, stream = STREAM) => ['segment', { stream, index: BigInt(index), start: 2 * index, duration: 2 }];
const trigger = (type, clip, first, stream = STREAM) => ['event', { type, clip, stream, first_index: BigInt(first), position: 1.5 }];
const end = (clip, last, stream = STREAM) => ['notice', { notice: 'clip-end', clip, stream, last_index: BigInt(last) }];
const indexes = (clip) => clip.segments.map((e) => Number(e.contents.meta.index));

test('export: what one stream recorded, clip by clip, with the recording between the clips', () => {
  const ring = 'a'.repeat(32);
  const motion = 'b'.repeat(32);
  const plan = planClips(
    sealed([
      init(),
      seg(0),
      seg(1),
      trigger('ring', ring, 2),
      seg(2),
      seg(3),
      end(ring, 3),
      seg(4),
      trigger('motion', motion, 5),
      seg(5),
      end(motion, 5),
    ]),
  );
  // Newest first: export's time order, reversed.
  assert.deepEqual(
    plan.map((c) => [c.name.split('-').slice(2).join('-'), indexes(c)]),
    [
      ['motion-bbbbbbbb', [5]],
      ['recording-aaaaaaaa', [4]],
      ['ring-aaaaaaaa', [2, 3]],
      ['recording-aaaaaaaa', [0, 1]],
    ],
  );
  assert.deepEqual(plan.map((c) => c.clip), [motion, null, ring, null]);
  assert.ok(plan.every((c) => c.playable && c.notes.length === 0 && c.gaps.length === 0 && !c.interrupted));
  assert.equal(plan[0].name, '20261118-110800-motion-bbbbbbbb'); // as datetime.fromtimestamp stamps it
  assert.equal(plan[2].seconds, 4);
  assert.equal(plan[2].preRollSeconds, 1.5 - 4);
  assert.deepEqual(plan[2].snapshots.map((e) => e.name), ['object-3']);
});

test('export: clips that share segments or lack one, and many streams at once', () => {
  const shared = '1'.repeat(32);
  const gapped = '2'.repeat(32);
  const first = 'a'.repeat(32);
  const second = 'b'.repeat(32);
  const many = Array.from({ length: 20 }, (_, i) => (0x30 + i).toString(16).repeat(16));
  const objects = [
    init(shared),
    trigger('ring', first, 0, shared),
    seg(0, shared),
    seg(1, shared),
    seg(2, shared),
    trigger('motion', second, 1, shared),
    end(second, 1, shared),
    end(first, 2, shared),
    ...[gapped, ...many].map((stream) => init(stream)),
    trigger('ring', gapped, 0, gapped),
  ];
  for (let index = 0; index < 3; index++) {
    for (const stream of [gapped, ...many]) if (!(stream === gapped && index === 1)) objects.push(seg(index, stream));
  }
  objects.push(end(gapped, 2, gapped));
  const plan = planClips(sealed(objects));
  const byName = new Map(plan.map((c) => [c.name.split('-').slice(2).join('-'), c]));
  assert.equal(plan.length, 3 + many.length);
  assert.deepEqual(indexes(byName.get('ring-aaaaaaaa')), [0, 1, 2]);
  assert.deepEqual(indexes(byName.get('motion-bbbbbbbb')), [1]);
  const hole = byName.get('ring-22222222');
  assert.deepEqual(indexes(hole), [0, 2]);
  assert.deepEqual(hole.gaps, [[1n, 1n]]);
  assert.deepEqual(hole.notes, ['segment 1 is missing; the clip has a gap']);
  assert.equal(hole.init.contents.meta.stream, gapped);
  for (const stream of many) {
    const recording = byName.get(`recording-${stream.slice(0, 8)}`);
    assert.deepEqual(indexes(recording), [0, 1, 2]);
    assert.equal(recording.init.contents.meta.stream, stream);
  }
});

test("export: what a clip lacks, in the Python phone's words", () => {
  const plan = planClips(
    sealed([
      trigger('ring', 'a'.repeat(32), 0), // no init segment for its stream
      seg(0),
      init(OTHER),
      trigger('motion', 'b'.repeat(32), 7, OTHER), // interrupted, nothing recorded yet
      trigger('ring', 'c'.repeat(32), 0, OTHER),
      ['segment', { stream: OTHER, index: 0n, start: 0, duration: 2 }],
      ['segment', { stream: OTHER, index: 4n, start: 8, duration: 2 }],
      end('c'.repeat(32), 6, OTHER),
    ]),
  );
  const byClip = new Map(plan.map((c) => [c.clip, c]));
  const orphan = byClip.get('a'.repeat(32));
  assert.deepEqual(orphan.notes, [`the init segment of stream ${STREAM.slice(0, 8)} is missing`]);
  assert.equal(orphan.playable, false);
  const waiting = byClip.get('b'.repeat(32));
  assert.equal(waiting.interrupted, true);
  assert.deepEqual(waiting.notes, ['no end marker (recording interrupted); exported what exists', 'no media segment could be exported']);
  assert.equal(waiting.playable, false);
  const ended = byClip.get('c'.repeat(32));
  assert.deepEqual(ended.gaps, [[1n, 3n], [5n, 6n]]);
  assert.deepEqual(ended.notes, ['segments 1..3 are missing; the clip has a gap', 'segments 5..6 are missing; the clip has a gap']);
  assert.equal(ended.playable, true);
});

test('export: a stream plays from its first init segment; a list of entries plans as its verification', () => {
  const objects = sealed([init(), ['init', { stream: STREAM, codec: 'again' }], seg(0), seg(1)]);
  const [recording] = planClips(objects);
  assert.equal(recording.init.name, 'object-0');
  assert.deepEqual(planClips(objects.entries), [recording]);
});
