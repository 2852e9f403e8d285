// Signed commands and the doorbell's answers (PROTOCOL §7) against
// tests/vectors/commands-v1.json: the command this phone signs is the vector's byte for
// byte, both answers open (the sealed one with the phone's secret), and anything not
// signed by the pinned doorbell for this request is refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { concat, fromBase64, fromHex, fromUtf8, toBase64, utf8 } from '../src/bytes.js';
import { decodeKeyString, PREFIX } from '../src/keystrings.js';
import { bytesKeyHolder } from '../src/crypto/kem.js';
import { importSigningSeed } from '../src/keystore.js';
import {
  COMMAND_CONTEXT,
  invite,
  liveRenew,
  liveStop,
  openAnswer,
  revoke,
  setRecovery,
  signCommand,
  windowConfirm,
} from '../src/protocol/commands.js';
import { recoveryIdentity } from '../src/protocol/recovery.js';

const vectors = JSON.parse(readFileSync(new URL('../../tests/vectors/commands-v1.json', import.meta.url)));
const deviceSeed = decodeKeyString(vectors.device_secret, [PREFIX.deviceSecret]).raw;
const devicePublicKey = ed25519.getPublicKey(deviceSeed);
const signingSeed = decodeKeyString(vectors.phone_signing_secret, [PREFIX.signingSecret]).raw;
const phoneSecret = decodeKeyString(vectors.phone_secret, [PREFIX.secret[2]]).raw;
const nonce = fromHex(vectors.nonce);

test("the phone's signed command is the vector's, and its signature verifies", async () => {
  const key = await importSigningSeed(signingSeed);
  const payload = await signCommand({
    sign: async (message) => new Uint8Array(await crypto.subtle.sign('Ed25519', key, message)),
    signingPublicKey: ed25519.getPublicKey(signingSeed),
    deviceId: fromHex(vectors.device_id),
    name: 'revoke',
    args: revoke('old-tablet')[1],
    time: 1796000000.75,
    nonce,
  });
  assert.equal(fromUtf8(payload), vectors.command);
  const outer = JSON.parse(vectors.command);
  const body = fromBase64(outer.body);
  assert.ok(ed25519.verify(fromBase64(outer.signature), concat(COMMAND_CONTEXT, body), ed25519.getPublicKey(signingSeed)));
  assert.deepEqual(JSON.parse(fromUtf8(body)), {
    v: 1,
    device: vectors.device_id,
    signer: JSON.parse(fromUtf8(body)).signer,
    time: 1796000000,
    nonce: toBase64(nonce),
    command: 'revoke',
    args: { name: 'old-tablet' },
  });
});

test('the clear answer (a refusal) opens to its body', async () => {
  const body = await openAnswer(utf8(vectors.answer_clear), devicePublicKey, nonce, null);
  assert.deepEqual(body, { v: 1n, device: vectors.device_id, request: toBase64(nonce), ok: false, reason: 'refused: an example' });
});

test("the sealed answer opens with the phone's secret", async () => {
  const holder = await bytesKeyHolder(2, phoneSecret);
  const body = await openAnswer(utf8(vectors.answer_sealed), devicePublicKey, nonce, holder);
  assert.deepEqual(body, { v: 1n, device: vectors.device_id, request: toBase64(nonce), ok: true, revoked: 'old-tablet', epoch: 7n });
});

test('an answer not signed by the pinned doorbell, for another request, or to another phone is refused', async () => {
  const holder = await bytesKeyHolder(2, phoneSecret);
  const stranger = await bytesKeyHolder(2, new Uint8Array(32).fill(7));
  const sealed = utf8(vectors.answer_sealed);
  const otherDevice = ed25519.getPublicKey(new Uint8Array(32).fill(1));
  const otherNonce = nonce.slice();
  otherNonce[0] ^= 1;
  const outer = JSON.parse(vectors.answer_sealed);
  const data = fromBase64(outer.data);
  data[data.length - 1] ^= 1;
  const altered = utf8(JSON.stringify({ ...outer, data: toBase64(data) }));
  const relabelled = utf8(JSON.stringify({ ...JSON.parse(vectors.answer_clear), to: 'sealed' }));
  const cases = [
    [sealed, otherDevice, nonce, holder, 'bad-signature', /not signed by this doorbell/],
    [sealed, devicePublicKey, otherNonce, holder, 'bad-signature', /not signed by this doorbell/],
    [altered, devicePublicKey, nonce, holder, 'bad-signature', /not signed by this doorbell/],
    [relabelled, devicePublicKey, nonce, holder, 'bad-signature', /not signed by this doorbell/],
    [sealed, devicePublicKey, nonce, stranger, 'not-for-us', /not sealed to this phone/],
    [utf8('{"to":"sealed","to":"clear"}'), devicePublicKey, nonce, holder, 'garbled', /duplicate key ['"]to['"]/],
    [utf8(JSON.stringify({ ...outer, to: 'shouted' })), devicePublicKey, nonce, holder, 'garbled', /neither clear nor sealed/],
    [utf8(JSON.stringify({ ...outer, signature: 'AAAA' })), devicePublicKey, nonce, holder, 'unsigned', /not signed/],
    [new Uint8Array(64 * 1024 + 1), devicePublicKey, nonce, holder, 'too-large', /65537-byte answer/],
  ];
  for (const [payload, device, request, key, code, pattern] of cases) {
    await assert.rejects(openAnswer(payload, device, request, key), (error) => {
      assert.equal(error.code, code);
      assert.match(error.message, pattern);
      return true;
    });
  }
});

test('a correctly signed answer to another request is refused', async () => {
  // The doorbell's signature covers the nonce the phone expects; the body names another.
  const body = utf8(JSON.stringify({ v: 1, device: vectors.device_id, request: toBase64(new Uint8Array(16)), ok: true }));
  const deviceId = fromHex(vectors.device_id);
  const signed = concat(utf8('doorbell answer v1\0'), deviceId, nonce, utf8('clear\0'), body);
  const answer = { to: 'clear', data: toBase64(body), signature: toBase64(ed25519.sign(signed, deviceSeed)) };
  await assert.rejects(openAnswer(utf8(JSON.stringify(answer)), devicePublicKey, nonce, null), { code: 'another-request' });
});

test('the builders give the commands and args the Python phone sends', async () => {
  assert.deepEqual(invite(), ['invite', { role: 'member' }]);
  assert.deepEqual(invite({ role: 'guest', expires: 86400, seconds: 600, name: 'visitor' }), [
    'invite',
    { role: 'guest', seconds: 600, expires: 86400, name: 'visitor' },
  ]);
  assert.throws(() => invite({ role: 'recovery' }), { code: 'role' });
  assert.throws(() => invite({ role: 'guest' }), { code: 'expires', message: /a guest needs an expiry/ });
  assert.throws(() => invite({ role: 'member', expires: 60 }), { code: 'expires', message: /only a guest/ });
  assert.throws(() => invite({ seconds: 3601 }), { code: 'seconds' });
  assert.deepEqual(windowConfirm('ab12', '123 456'), ['window-confirm', { window: 'ab12', code: '123 456' }]);
  assert.deepEqual(liveRenew(Uint8Array.of(1, 2, 255)), ['live-renew', { session: '0102ff' }]);
  assert.deepEqual(liveStop('0102ff'), ['live-stop', { session: '0102ff' }]);
  const identity = await recoveryIdentity(fromHex(vectors.recovery.entropy));
  assert.deepEqual(setRecovery(identity), ['set-recovery', { identity: vectors.recovery.identity }]);
});
