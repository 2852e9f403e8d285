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
