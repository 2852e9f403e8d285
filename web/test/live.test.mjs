// Live view (src/format/live.js) against tests/vectors/live-v1.json: every viewer opens
// the session object to its details, the fragments open in order to their media, and
// every refusal FORMAT §11 asks for (malformed, another session's, not signed by the
// doorbell, altered, replayed or late) happens with its code.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { fromHex, toHex } from '../src/bytes.js';
import { decodeKeyString, PREFIX } from '../src/keystrings.js';
import { bytesKeyHolder } from '../src/crypto/kem.js';
import { LiveError, LiveFragments, openLiveSession, viewerTag } from '../src/format/live.js';

const V = JSON.parse(readFileSync(new URL('../../tests/vectors/live-v1.json', import.meta.url)));
const deviceSeed = decodeKeyString(V.device_secret, [PREFIX.deviceSecret]).raw;
const devicePublicKey = ed25519.getPublicKey(deviceSeed);
const sessionObject = fromHex(V.session_object);

async function holderOf(viewer) {
  const { prefix, raw } = decodeKeyString(viewer.secret, [PREFIX.secret[1], PREFIX.secret[2], PREFIX.expandedSecret]);
  return bytesKeyHolder(prefix === PREFIX.secret[1] ? 1 : 2, raw);
}

async function session(viewer = V.viewers[0]) {
  return openLiveSession(sessionObject, { devicePublicKey, keys: [await holderOf(viewer)] });
}

test('every viewer opens the session object to its details and key', async () => {
  for (const viewer of V.viewers) {
    const holder = await holderOf(viewer);
    const deviceId = sessionObject.subarray(6, 38);
    assert.equal(toHex(viewerTag(deviceId, fromHex(V.session), holder.suite, holder.publicKey)), viewer.tag);
    const opened = await openLiveSession(sessionObject, { devicePublicKey, keys: [holder] });
    assert.equal(toHex(opened.sessionId), V.session);
    assert.equal(toHex(opened.sessionKey), V.session_key);
    assert.deepEqual(JSON.parse(JSON.stringify(opened.details)), V.details);
  }
});

test('the fragments open in order to their media, flags and capture times', async () => {
  const fragments = new LiveFragments(await session(), devicePublicKey);
  assert.equal(fragments.last, 0n);
  for (const expected of V.fragments) {
    const raw = fromHex(expected.fragment);
    const opened = await fragments.open(raw);
    assert.equal(opened.counter, fromHex(expected.fragment.slice(44, 60)).reduce((a, b) => (a << 8n) | BigInt(b), 0n));
    assert.equal(opened.keyframe, expected.keyframe);
    assert.equal(opened.end, false);
    assert.equal(opened.captureUs, BigInt(expected.capture_us));
    assert.equal(toHex(opened.chunk), expected.data);
    assert.equal(fragments.last, opened.counter);
  }
});

test('every invalid fragment is refused with the reason Python gives', async () => {
  const codes = { malformed: 'malformed', forged: 'forged', 'replayed or late': 'replayed', foreign: 'foreign' };
  for (const c of V.invalid_fragments) {
    const fragments = new LiveFragments(await session(), devicePublicKey);
    for (const earlier of c.after ?? []) await fragments.open(fromHex(V.fragments[earlier].fragment));
    await assert.rejects(fragments.open(fromHex(c.fragment)), (error) => {
      assert.ok(error instanceof LiveError, c.description);
      assert.match(error.message, new RegExp(c.error), c.description);
      const code = Object.entries(codes).find(([prefix]) => c.error.startsWith(prefix))[1];
      assert.equal(error.code, code, c.description);
      return true;
    });
  }
});

test('replayed, foreign and altered fragments; a refused one leaves the counter alone', async () => {
  const fragments = new LiveFragments(await session(), devicePublicKey);
  const first = fromHex(V.fragments[0].fragment);
  await fragments.open(first);
  await assert.rejects(fragments.open(first), { code: 'replayed', message: /replayed or late: fragment 1 after 1/ });
  const foreign = fromHex(V.fragments[1].fragment);
  foreign[6] ^= 1;
  await assert.rejects(fragments.open(foreign), { code: 'foreign' });
  const unknownVersion = fromHex(V.fragments[1].fragment);
  unknownVersion[4] = 2;
  await assert.rejects(fragments.open(unknownVersion), { code: 'malformed' });
  const resigned = fromHex(V.fragments[1].fragment);
  resigned[resigned.length - 1] ^= 0x40;
  await assert.rejects(fragments.open(resigned), { code: 'forged' });
  assert.equal(fragments.last, 1n);
  const second = await fragments.open(fromHex(V.fragments[1].fragment));
  assert.equal(second.counter, 2n);
});

test('every bit of the session object matters, and strangers and other doorbells are refused', async () => {
  const holder = await holderOf(V.viewers[0]);
  for (const position of [0, 4, 5, 6, 40, 54, 60, 200, sessionObject.length - 100, sessionObject.length - 1]) {
    const altered = sessionObject.slice();
    altered[position] ^= 1;
    await assert.rejects(openLiveSession(altered, { devicePublicKey, keys: [holder] }), LiveError, `byte ${position}`);
  }
  await assert.rejects(openLiveSession(sessionObject.subarray(0, 100), { devicePublicKey, keys: [holder] }), { code: 'malformed' });
  const stranger = await bytesKeyHolder(1, new Uint8Array(32).fill(5));
  await assert.rejects(openLiveSession(sessionObject, { devicePublicKey, keys: [stranger] }), {
    code: 'not-for-us',
    message: /not a viewer/,
  });
  const otherDevice = ed25519.getPublicKey(new Uint8Array(32).fill(1));
  await assert.rejects(openLiveSession(sessionObject, { devicePublicKey: otherDevice, keys: [holder] }), {
    code: 'foreign',
  });
  const liar = { suite: holder.suite, publicKey: holder.publicKey, decap: stranger.decap };
  await assert.rejects(openLiveSession(sessionObject, { devicePublicKey, keys: [liar] }), { code: 'forged' });
});
