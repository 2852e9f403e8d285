// The recovery key (PROTOCOL §8): words to entropy to seeds to the identity, against the
// `recovery` section of tests/vectors/commands-v1.json, and words a person mistyped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { fromHex, toHex } from '../src/bytes.js';
import { decodeKeyString, PREFIX } from '../src/keystrings.js';
import { expandXwingSeed } from '../src/crypto/xwing.js';
import { importSigningSeed, x25519Pkcs8 } from '../src/keystore.js';
import { identityString, parseIdentity } from '../src/protocol/identity.js';
import {
  entropyFromWords,
  recoveryIdentity,
  recoverySeeds,
  recoveryWords,
  RecoveryWordsError,
} from '../src/protocol/recovery.js';

const vector = JSON.parse(readFileSync(new URL('../../tests/vectors/commands-v1.json', import.meta.url))).recovery;

test('the entropy is the vector words, and the words give back the entropy', () => {
  assert.deepEqual(recoveryWords(fromHex(vector.entropy)), vector.words);
  assert.equal(toHex(entropyFromWords(vector.words)), vector.entropy);
  assert.equal(toHex(entropyFromWords(vector.words.join(' '))), vector.entropy);
});

test('words as a person types them: any case, any spacing, across lines', () => {
  const typed = `  ${vector.words.slice(0, 12).join('  ').toUpperCase()}\n\t${vector.words.slice(12).join(' ')}\n`;
  assert.equal(toHex(entropyFromWords(typed)), vector.entropy);
});

test('the X-Wing seed, the Ed25519 seed and the identity are the vector', async () => {
  const { xwingSeed, ed25519Seed } = await recoverySeeds(fromHex(vector.entropy));
  assert.equal(toHex(xwingSeed), vector.x_wing_seed);
  const signing = decodeKeyString(vector.signing_secret, [PREFIX.signingSecret]).raw;
  assert.equal(toHex(ed25519Seed), toHex(signing));
  const identity = await recoveryIdentity(fromHex(vector.entropy));
  assert.equal(identity.suite, 2);
  assert.equal(identity.publicKey.length, 1216);
  assert.deepEqual(identity.signingPublicKey, ed25519.getPublicKey(signing));
  assert.equal(identityString(identity), vector.identity);
});

test("the seeds import as the keystore imports them: non-extractable keys of the vector's identity", async () => {
  const { xwingSeed, ed25519Seed } = await recoverySeeds(fromHex(vector.entropy));
  const identity = parseIdentity(vector.identity);
  const signing = await importSigningSeed(ed25519Seed);
  assert.equal(signing.extractable, false);
  const message = new TextEncoder().encode('doorbell command v1\0{}');
  const signature = new Uint8Array(await crypto.subtle.sign('Ed25519', signing, message));
  assert.ok(ed25519.verify(signature, message, identity.signingPublicKey));
  // X25519 of the base point (u = 9) is the public key: the imported half is the vector's.
  const { x25519Secret } = expandXwingSeed(xwingSeed);
  const x25519 = await crypto.subtle.importKey('pkcs8', x25519Pkcs8(x25519Secret), { name: 'X25519' }, false, ['deriveBits']);
  assert.equal(x25519.extractable, false);
  const base = await crypto.subtle.importKey('raw', Uint8Array.of(9, ...new Uint8Array(31)), { name: 'X25519' }, true, []);
  const publicKey = new Uint8Array(await crypto.subtle.deriveBits({ name: 'X25519', public: base }, x25519, 256));
  assert.deepEqual(publicKey, identity.publicKey.subarray(1184));
});

test('a word outside the list is named by its position, with the word it likely meant', () => {
  const cases = [
    [5, 'yuong', 'young'], // two letters swapped
    [1, 'shoott', 'shoot'],
    [24, 'marc', 'march'],
    [10, 'hiddenly', 'hidden'], // the first four letters fix a word
    [3, 'qqqqqqqq', null],
  ];
  for (const [position, typo, meant] of cases) {
    const words = vector.words.slice();
    words[position - 1] = typo;
    assert.throws(() => entropyFromWords(words), (error) => {
      assert.ok(error instanceof RecoveryWordsError);
      assert.equal(error.code, 'word');
      assert.equal(error.position, position);
      assert.equal(error.suggestion, meant);
      assert.match(error.message, new RegExp(`^word ${position} \\("${typo}"\\) is not in the recovery word list`));
      if (meant) assert.match(error.message, new RegExp(`did you mean "${meant}"\\?$`));
      return true;
    });
  }
});

test('real words in the wrong order fail the checksum, and say so', () => {
  const swapped = vector.words.slice();
  [swapped[3], swapped[4]] = [swapped[4], swapped[3]];
  assert.throws(() => entropyFromWords(swapped), { code: 'checksum', message: /do not check out: one of them is wrong or two are swapped/ });
});

test('too few or too many words are counted', () => {
  assert.throws(() => entropyFromWords(vector.words.slice(0, 23)), { code: 'count', message: 'a recovery key is 24 words; these are 23' });
  assert.throws(() => entropyFromWords([...vector.words, 'abandon']), { code: 'count', message: /these are 25/ });
  assert.throws(() => entropyFromWords(''), { code: 'count', message: /these are 0/ });
});
