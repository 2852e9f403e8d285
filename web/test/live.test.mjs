// Live view (src/format/live.js) against tests/vectors/live-v1.json: every viewer opens
// the session object to its details, the fragments open in order to their media, and
// every refusal FORMAT §11 asks for (malformed, another session's or doorbell's, not
// signed by the doorbell, signed yet not decrypting, replayed or late) happens with its code.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concat, fromHex, toHex, u64, utf8 } from '../src/bytes.js';
import { decodeKeyString, PREFIX } from '../src/keystrings.js';
import { bytesKeyHolder } from '../src/crypto/kem.js';
import { parseStrictJson } from '../src/format/strictjson.js';
import { LiveError, LiveFragments, openLiveSession, viewerTag } from '../src/format/live.js';

// Parsed strictly, as the reader parses details: integers are BigInt.
const V = parseStrictJson(readFileSync(new URL('../../tests/vectors/live-v1.json', import.meta.url)));
const deviceSeed = decodeKeyString(V.device_secret, [PREFIX.deviceSecret]).raw;
const devicePublicKey = ed25519.getPublicKey(deviceSeed);
const sessionObject = fromHex(V.session_object);
const sessionKey = fromHex(V.session_key);

async function holderOf(viewer) {
  const { prefix, raw } = decodeKeyString(viewer.secret, [PREFIX.secret[1], PREFIX.secret[2], PREFIX.expandedSecret]);
  return bytesKeyHolder(prefix === PREFIX.secret[1] ? 1 : 2, raw);
}

async function session(viewer = V.viewers[0]) {
  return openLiveSession(sessionObject, { devicePublicKey, keys: [await holderOf(viewer)] });
}

/** A fragment as the doorbell seals one: under the vector session key, signed by its key. */
async function seal(counter, flags, captureUs, chunk, { session: id = fromHex(V.session), key = sessionKey } = {}) {
  const head = concat(utf8('DBLF'), Uint8Array.of(1, 0), id, u64(counter));
  const aead = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  const nonce = concat(new Uint8Array(4), u64(counter));
  const inner = concat(Uint8Array.of(flags), u64(captureUs), chunk);
  const body = concat(head, new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: head }, aead, inner)));
  return concat(body, ed25519.sign(concat(utf8('doorbell live fragment v1\0'), sha256(body)), deviceSeed));
}

async function refused(promise, code, pattern) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof LiveError, String(error));
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  });
}

test('every viewer opens the session object to its details, under the vector session key', async () => {
  const deviceId = sessionObject.subarray(6, 38);
  assert.equal(toHex(deviceId), toHex(sha256(devicePublicKey)));
  for (const viewer of V.viewers) {
    const holder = await holderOf(viewer);
    assert.equal(toHex(viewerTag(deviceId, fromHex(V.session), holder.suite, holder.publicKey)), viewer.tag);
    const opened = await openLiveSession(sessionObject, { devicePublicKey, keys: [holder] });
    assert.equal(toHex(opened.sessionId), V.session);
    assert.deepEqual(opened.details, V.details);
    assert.equal(opened.details.started_us, 1796000000000000n);
    // The key stays inside WebCrypto; it is the vector's: it opens what the vector key seals.
    assert.equal(opened.sessionKey.extractable, false);
    const fragments = new LiveFragments(opened, devicePublicKey);
    const own = await fragments.open(await seal(1n, 1, 5n, utf8('moof')));
    assert.equal(toHex(own.chunk), toHex(utf8('moof')));
  }
  // The details: AES-256-GCM under the session key, nonce 0, every byte before them as AAD.
  const headerLength = Number(V.session_header_len);
  const body = sessionObject.subarray(0, sessionObject.length - 64);
  const aead = await crypto.subtle.importKey('raw', sessionKey, 'AES-GCM', false, ['decrypt']);
  const details = await crypto.subtle.decrypt(
    { name: 'AES-GCM', iv: new Uint8Array(12), additionalData: body.subarray(0, headerLength) },
    aead,
    body.subarray(headerLength),
  );
  assert.deepEqual(parseStrictJson(new Uint8Array(details)), V.details);
});

test('the fragments open in order to their media, flags and capture times', async () => {
  const fragments = new LiveFragments(await session(V.viewers[1]), devicePublicKey);
  assert.equal(fragments.last, 0n);
  for (const expected of V.fragments) {
    const raw = fromHex(expected.fragment);
    const opened = await fragments.open(raw);
    assert.equal(opened.counter, new DataView(raw.buffer).getBigUint64(22));
    assert.equal(opened.keyframe, expected.keyframe);
    assert.equal(opened.end, false);
    assert.equal(opened.captureUs, expected.capture_us);
    assert.equal(toHex(opened.chunk), expected.data);
    assert.equal(fragments.last, opened.counter);
  }
});

test('every invalid fragment of the vectors is refused with the reason Python gives', async () => {
  const codes = [['malformed', 'malformed'], ['forged', 'forged'], ['replayed or late', 'replayed'], ['foreign', 'foreign']];
  for (const c of V.invalid_fragments) {
    const fragments = new LiveFragments(await session(), devicePublicKey);
    for (const earlier of c.after ?? []) await fragments.open(fromHex(V.fragments[Number(earlier)].fragment));
    const [, code] = codes.find(([prefix]) => c.error.startsWith(prefix));
    await refused(fragments.open(fromHex(c.fragment)), code, new RegExp(c.error));
  }
});

test('replayed, foreign, altered and unknown fragments; a refused one leaves the counter alone', async () => {
  const fragments = new LiveFragments(await session(), devicePublicKey);
  const first = fromHex(V.fragments[0].fragment);
  await fragments.open(first);
  await refused(fragments.open(first), 'replayed', /replayed or late: fragment 1 after 1/);
  const foreign = fromHex(V.fragments[1].fragment);
  foreign[6] ^= 1;
  await refused(fragments.open(foreign), 'foreign', /another session/);
  const unknownVersion = fromHex(V.fragments[1].fragment);
  unknownVersion[4] = 2;
  await refused(fragments.open(unknownVersion), 'malformed');
  const badSignature = fromHex(V.fragments[1].fragment);
  badSignature[badSignature.length - 1] ^= 0x40;
  await refused(fragments.open(badSignature), 'forged', /not signed by the doorbell/);
  // Signed by the doorbell, but not under this session's key: a viewer cannot forge, and
  // the doorbell's own mistake is refused too.
  await refused(fragments.open(await seal(5n, 0, 1n, utf8('x'), { key: new Uint8Array(32) })), 'forged', /signed, yet does not decrypt/);
  await refused(fragments.open(await seal(6n, 0x04, 1n, utf8('x'))), 'malformed', /unknown fragment flags/);
  await refused(fragments.open(new Uint8Array(4 * 1024 * 1024 + 1)), 'malformed');
  assert.equal(fragments.last, 1n);
  const second = await fragments.open(fromHex(V.fragments[1].fragment));
  assert.equal(second.counter, 2n);
  const end = await fragments.open(await seal(9n, 0x02, 7n, new Uint8Array(0)));
  assert.deepEqual([end.end, end.keyframe, end.counter, end.captureUs, end.chunk.length], [true, false, 9n, 7n, 0]);
});

test('two copies of a fragment opened at once count once', async () => {
  const fragments = new LiveFragments(await session(), devicePublicKey);
  const raw = fromHex(V.fragments[0].fragment);
  const results = await Promise.allSettled([fragments.open(raw), fragments.open(raw.slice()), fragments.open(raw.slice())]);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'rejected']);
  assert.ok(results.slice(1).every((r) => r.reason.code === 'replayed'));
  // A later fragment overtakes an earlier one: the earlier is late.
  const overtaken = new LiveFragments(await session(), devicePublicKey);
  await overtaken.open(fromHex(V.fragments[1].fragment));
  await refused(overtaken.open(raw), 'replayed', /fragment 1 after 2/);
});

test('every bit of the session object matters, and strangers and other doorbells are refused', async () => {
  const holder = await holderOf(V.viewers[0]);
  for (const position of [0, 4, 5, 6, 40, 54, 60, 200, sessionObject.length - 100, sessionObject.length - 1]) {
    const altered = sessionObject.slice();
    altered[position] ^= 1;
    await assert.rejects(openLiveSession(altered, { devicePublicKey, keys: [holder] }), LiveError, `byte ${position}`);
  }
  await refused(openLiveSession(sessionObject.subarray(0, 100), { devicePublicKey, keys: [holder] }), 'malformed');
  const altered = sessionObject.slice();
  altered[sessionObject.length - 100] ^= 1;
  await refused(openLiveSession(altered, { devicePublicKey, keys: [holder] }), 'forged', /session object is not signed/);
  const stranger = await bytesKeyHolder(1, new Uint8Array(32).fill(5));
  await refused(openLiveSession(sessionObject, { devicePublicKey, keys: [stranger] }), 'not-for-us', /not a viewer/);
  const otherDevice = ed25519.getPublicKey(new Uint8Array(32).fill(1));
  await refused(openLiveSession(sessionObject, { devicePublicKey: otherDevice, keys: [holder] }), 'foreign');
  const liar = { suite: holder.suite, publicKey: holder.publicKey, decap: stranger.decap };
  await refused(openLiveSession(sessionObject, { devicePublicKey, keys: [liar] }), 'forged', /stanza does not open/);
  // Both keys: the one the session is sealed to opens it.
  const both = await openLiveSession(sessionObject, { devicePublicKey, keys: [stranger, holder] });
  assert.equal(toHex(both.sessionId), V.session);
});
