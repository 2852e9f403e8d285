// The JavaScript reader against tests/vectors/v1.json (FORMAT §1-5, 7, 9): every object
// opens to exactly its payload for every recipient, every invalid object is refused with
// the right code, keys and keyrings derive as the vectors say, strict JSON accepts exactly
// what the Python reader accepts, and objects Python seals now open here.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha3_256 } from '@noble/hashes/sha3.js';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { concat, fromHex, fromUtf8, toHex, u64, utf8 } from '../src/bytes.js';
import { decodeKeyString, encodeKeyString, PREFIX } from '../src/keystrings.js';
import { SignatureError, checkCanonicalDeviceKey, verifyStrict } from '../src/crypto/ed25519.js';
import { bytesKeyHolder, publicKeyFromSecret } from '../src/crypto/kem.js';
import { openBase } from '../src/crypto/hpke.js';
import { expandXwingSeed, xwingCombine } from '../src/crypto/xwing.js';
import { parseStrictJson } from '../src/format/strictjson.js';
import { KeyringError, keyringDocument, parseKeyring } from '../src/format/keyring.js';
import {
  MAGIC,
  MAX_CIPHERTEXT,
  NotARecipient,
  ObjectError,
  Reader,
  checkContents,
  hpkeInfo,
  objectName,
  padme,
  parseEnvelope,
  parseObjectName,
  recipientTag,
} from '../src/format/object.js';

const VECTORS_TEXT = readFileSync(new URL('../../tests/vectors/v1.json', import.meta.url));
// Parsed strictly: integers are BigInt and 2.0 stays a Number, as the reader gives meta.
const vectors = parseStrictJson(VECTORS_TEXT);
const PYTHON = '/work/main/.venv/bin/python';
const REPO = new URL('../../', import.meta.url).pathname;

const SUITE = { x25519: 1, 'mlkem768-x25519': 2 };
const deviceSecret = decodeKeyString(vectors.device.secret, [PREFIX.deviceSecret]).raw;
const devicePublic = fromHex(vectors.device.public_raw);
const phones = Object.fromEntries(vectors.phones.map((p) => [p.name, p]));
const holders = Object.fromEntries(
  await Promise.all(vectors.phones.map(async (p) => [p.name, await bytesKeyHolder(SUITE[p.suite], fromHex(p.secret_raw))])),
);
const readerFor = (...names) => new Reader({ devices: [devicePublic], keys: names.map((n) => holders[n]) });
const everyPhone = () => readerFor(...Object.keys(holders));

/** Re-sign altered object bytes with the vector device key, as a doorbell would. */
function resign(bytes) {
  const signed = bytes.subarray(0, bytes.length - 64);
  const message = concat(utf8('doorbell/v1 object signature\0'), sha256(signed));
  return concat(signed, ed25519.sign(message, deviceSecret));
}

async function refused(promise, code, pattern) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof ObjectError, `an ObjectError, not ${error}`);
    assert.equal(error.code, code, error.message);
    if (pattern !== undefined) assert.ok(error.message.includes(pattern), `"${error.message}" names "${pattern}"`);
    return true;
  });
}

test('padme and the ciphertext bound are the vectors and FORMAT §4', () => {
  for (const [length, padded] of Object.entries(vectors.padme)) assert.equal(padme(Number(length)), Number(padded), length);
  assert.equal(MAX_CIPHERTEXT, 69206032);
  assert.equal(padme(2 ** 40 + 1), 2 ** 40 + 2 ** 34);
  assert.deepEqual([...MAGIC], [0x89, ...utf8('DBELL\r\n')]);
});

test('device and phone keys derive as the vectors say', () => {
  assert.equal(toHex(ed25519.getPublicKey(deviceSecret)), vectors.device.public_raw);
  assert.equal(toHex(sha256(devicePublic)), vectors.device.device_id);
  checkCanonicalDeviceKey(devicePublic);
  for (const phone of vectors.phones) {
    const secret = decodeKeyString(phone.secret, [PREFIX.secret[1], PREFIX.secret[2], PREFIX.expandedSecret]).raw;
    assert.equal(toHex(secret), phone.secret_raw);
    assert.equal(toHex(publicKeyFromSecret(SUITE[phone.suite], secret)), phone.public_raw);
    assert.equal(toHex(holders[phone.name].publicKey), phone.public_raw);
  }
});

test('the X-Wing draft vector of FORMAT §1: seed to public key', () => {
  const publicKey = toHex(publicKeyFromSecret(2, fromHex('7f9c2ba4e88f827d616045507605853ed73b8093f6efbc88eb1a6eacfa66ef26')));
  assert.equal(publicKey.length, 1216 * 2);
  assert.ok(publicKey.startsWith('e2236b35a8c24b39b10aa1323a96a919'));
  assert.ok(publicKey.endsWith('859edb06eff389b27dce59844570216223593d4ba32d9abac8cd049040ef6534'));
});

test('keyring_v2 seeds expand by SHAKE256 into their ML-KEM-768 seed, X25519 key and public key', () => {
  for (const phone of vectors.keyring_v2.phones) {
    const seed = fromHex(phone.secret_seed);
    assert.equal(encodeKeyString(PREFIX.secret[2], seed), phone.secret);
    const { mlkemSeed, x25519Secret } = expandXwingSeed(seed);
    assert.equal(toHex(mlkemSeed) + toHex(x25519Secret), phone.secret_expanded);
    const expected = toHex(ml_kem768.keygen(mlkemSeed).publicKey) + toHex(x25519.getPublicKey(x25519Secret));
    assert.equal(expected, phone.public_raw);
    assert.equal(toHex(publicKeyFromSecret(2, seed)), phone.public_raw);
    assert.equal(toHex(publicKeyFromSecret(2, fromHex(phone.secret_expanded))), phone.public_raw);
    const signing = decodeKeyString(phone.signing_secret, [PREFIX.signingSecret]).raw;
    assert.equal(toHex(ed25519.getPublicKey(signing)), phone.signing_public_raw);
    assert.equal(encodeKeyString(PREFIX.identity[2], fromHex(phone.public_raw + phone.signing_public_raw)), phone.identity);
  }
});

test('every vector object opens to exactly its payload, for each of its recipients', async () => {
  for (const vector of vectors.objects) {
    const bytes = fromHex(vector.object);
    const envelope = parseEnvelope(bytes);
    assert.equal(envelope.seq, vector.seq);
    assert.equal(toHex(envelope.prev), vector.prev);
    assert.equal(toHex(envelope.nonce), vector.nonce);
    assert.equal(BigInt(envelope.headerLength), vector.header_len);
    assert.equal(toHex(envelope.signature), vector.signature);
    assert.equal(toHex(envelope.chainHash), vector.chain_hash);
    assert.equal(envelope.deviceIdHex, vectors.device.device_id);
    assert.equal(toHex(concat(utf8('doorbell/v1 object signature\0'), sha256(bytes.subarray(0, envelope.signedLength)))), vector.signed_message);
    assert.equal(
      objectName(envelope.deviceId, envelope.seq),
      `${vectors.device.device_id.slice(0, 16)}-${String(vector.seq).padStart(20, '0')}.sealed`,
    );
    vector.recipients.forEach((recipient, index) => {
      const phone = phones[recipient.name];
      const tag = recipientTag(envelope.deviceId, envelope.seq, SUITE[phone.suite], fromHex(phone.public_raw));
      assert.equal(toHex(tag), recipient.tag);
      assert.equal(toHex(envelope.stanzas[index].tag), recipient.tag);
      assert.equal(toHex(hpkeInfo(envelope.deviceId, envelope.seq, SUITE[phone.suite], tag)), recipient.hpke_info);
    });
    for (const recipient of vector.recipients) {
      for (const reader of [readerFor(recipient.name), everyPhone()]) {
        const opened = await reader.open(bytes);
        assert.equal(BigInt(opened.kind), vector.kind);
        assert.equal(BigInt(opened.epoch), vector.epoch);
        assert.equal(opened.timeUs, vector.time_us);
        assert.deepEqual(opened.meta, vector.meta);
        assert.equal(toHex(opened.body), vector.body);
        assert.equal(opened.seq, vector.seq);
        assert.deepEqual(opened.chainHash, fromHex(vector.chain_hash));
      }
    }
  }
});

test('the vector keyring object carries the keyring document of the vectors', async () => {
  const vector = vectors.objects.find((v) => v.kind === 4n);
  const opened = await readerFor('test-phone-x25519').open(fromHex(vector.object));
  assert.equal(opened.kindName, 'keyring');
  const keyring = opened.keyring;
  assert.equal(keyring.version, 1);
  assert.equal(keyring.epoch, Number(vectors.keyring.epoch));
  assert.deepEqual(keyring.recipients.map((r) => r.name), vectors.phones.map((p) => p.name));
  for (const recipient of keyring.recipients) {
    assert.equal(toHex(recipient.publicKey), phones[recipient.name].public_raw);
    assert.equal(recipient.key, phones[recipient.name].public);
    assert.equal(recipient.role, 'owner');
    assert.equal(recipient.signingKey, null);
  }
  assert.deepEqual(parseKeyring(JSON.stringify(vectors.keyring, (_, v) => (typeof v === 'bigint' ? Number(v) : v))), keyring);
});

test('a hybrid stanza opens with the X-Wing combiner and RFC 9180 written out by hand', async () => {
  // The same computation as tests/test_vectors.py, from noble's primitives, not hpke.js.
  const vector = vectors.objects[1];
  const phone = vectors.phones.find((p) => p.suite === 'mlkem768-x25519');
  const secret = fromHex(phone.secret_raw);
  const publicKey = fromHex(phone.public_raw);
  const recipient = vector.recipients.find((r) => r.name === phone.name);
  const stanza = parseEnvelope(fromHex(vector.object)).stanzas.find((s) => toHex(s.tag) === recipient.tag);
  const [enc, ct] = [stanza.wrapped.subarray(0, 1120), stanza.wrapped.subarray(1120)];
  const [ctM, ctX] = [enc.subarray(0, 1088), enc.subarray(1088)];
  const ssM = ml_kem768.decapsulate(ctM, ml_kem768.keygen(secret.subarray(0, 64)).secretKey);
  const ssX = x25519.getSharedSecret(secret.subarray(64), ctX);
  const shared = sha3_256(concat(ssM, ssX, ctX, publicKey.subarray(1184), utf8('\\.//^\\')));
  assert.deepEqual(shared, xwingCombine(ssM, ssX, ctX, publicKey.subarray(1184)));
  assert.deepEqual(await holders[phone.name].decap(enc), shared);

  const suiteId = concat(utf8('HPKE'), fromHex('647a'), fromHex('0001'), fromHex('0002'));
  const extract = (salt, label, ikm) => hmac(sha256, salt.length ? salt : new Uint8Array(32), concat(utf8('HPKE-v1'), suiteId, utf8(label), ikm));
  const expand = (prk, label, info, length) =>
    hmac(sha256, prk, concat(fromHex(length.toString(16).padStart(4, '0')), utf8('HPKE-v1'), suiteId, utf8(label), info, Uint8Array.of(1))).subarray(0, length);
  const info = fromHex(recipient.hpke_info);
  const context = concat(Uint8Array.of(0), extract(new Uint8Array(0), 'psk_id_hash', new Uint8Array(0)), extract(new Uint8Array(0), 'info_hash', info));
  const schedule = extract(shared, 'secret', new Uint8Array(0));
  const key = await crypto.subtle.importKey('raw', expand(schedule, 'key', context, 32), 'AES-GCM', false, ['decrypt']);
  const dataKey = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: expand(schedule, 'base_nonce', context, 12) }, key, ct);
  assert.equal(toHex(new Uint8Array(dataKey)), vector.data_key);
  assert.equal(toHex(await openBase(holders[phone.name], stanza.wrapped, info)), vector.data_key);
});

// The vector's expected message says which check refused it: these are the signature's.
const SIGNATURE_ERRORS = ['signature', 'not canonical'];

test('every invalid object is refused, with the code and reason of its vector', async () => {
  const cases = [
    ...vectors.invalid.map((c) => [c, SIGNATURE_ERRORS.includes(c.error) ? 'forged' : 'malformed']),
    ...vectors.invalid_signatures.map((c) => [c, 'forged']),
    ...vectors.invalid_payloads.map((c) => [c, 'rejected']),
  ];
  assert.equal(cases.length, vectors.invalid.length + vectors.invalid_signatures.length + vectors.invalid_payloads.length);
  for (const [vector, code] of cases) {
    await refused(everyPhone().open(fromHex(vector.object)), code, vector.error);
  }
});

test('invalid payloads are authentic: the signature verifies, then opening or the contents check refuses', async () => {
  for (const vector of vectors.invalid_payloads) {
    const reader = everyPhone();
    const envelope = await reader.verify(fromHex(vector.object));
    let opened;
    try {
      opened = await reader.openEnvelope(envelope);
    } catch (error) {
      // Strict JSON and the payload layout are checked as the payload is decoded.
      assert.equal(error.code, 'rejected');
      assert.ok(error.message.includes(vector.error), error.message);
      continue;
    }
    assert.throws(() => checkContents(opened), (error) => error.code === 'rejected' && error.message.includes(vector.error));
  }
});

test('a device the reader has not pinned, and a phone the object is not sealed to, are told apart', async () => {
  const bytes = fromHex(vectors.objects[0].object);
  const stranger = new Reader({ devices: [ed25519.getPublicKey(new Uint8Array(32).fill(9))], keys: [holders['test-phone-x25519']] });
  await refused(stranger.open(bytes), 'untrusted', vectors.device.device_id.slice(0, 16));
  const other = readerFor('test-phone-pq');
  const envelope = await other.verify(bytes);
  assert.equal(other.canOpen(envelope), false);
  await assert.rejects(other.openEnvelope(envelope), (error) => error instanceof NotARecipient && error.code === 'not-for-us');
  const nobody = new Reader({ devices: [devicePublic], keys: [] });
  await refused(nobody.open(bytes), 'not-for-us');
});

test('an envelope is opened only after the reader verified its signature', async () => {
  const reader = readerFor('test-phone-x25519');
  const envelope = parseEnvelope(fromHex(vectors.objects[0].object));
  await assert.rejects(reader.openEnvelope(envelope), TypeError);
});

test('signed objects whose stanza or payload does not open are unopenable, not ignored', async () => {
  const original = fromHex(vectors.objects[0].object);
  const envelope = parseEnvelope(original);
  const stanzaByte = resign(original.slice());
  stanzaByte.set([stanzaByte[95 + 17 + 40] ^ 1], 95 + 17 + 40);
  await refused(readerFor('test-phone-x25519').open(resign(stanzaByte)), 'unopenable', 'stanza for this phone does not open');
  const payloadByte = original.slice();
  payloadByte[envelope.headerLength + 3] ^= 1;
  await refused(readerFor('test-phone-x25519').open(resign(payloadByte)), 'unopenable', 'payload does not decrypt');
  // The same bytes without the new signature are simply forged.
  await refused(readerFor('test-phone-x25519').open(payloadByte), 'forged', 'signature');
});

test('signatures are strict: S + L and a non-canonical device key are refused', async () => {
  const message = utf8('doorbell/v1 object signature\0');
  const signature = ed25519.sign(message, deviceSecret);
  await verifyStrict(devicePublic, message, signature);
  const L = (1n << 252n) + 27742317777372353535851777893976580429n;
  let s = 0n;
  for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(signature[i]);
  const bumped = signature.slice();
  let t = s + L;
  for (let i = 32; i < 64; i++, t >>= 8n) bumped[i] = Number(t & 0xffn);
  await assert.rejects(verifyStrict(devicePublic, message, bumped), (e) => e instanceof SignatureError && /not canonical/.test(e.message));
  // y = p + 1 encodes the identity point: under it anyone could sign anything.
  const p = (1n << 255n) - 19n;
  const identity = new Uint8Array(32);
  let y = p + 1n;
  for (let i = 0; i < 32; i++, y >>= 8n) identity[i] = Number(y & 0xffn);
  assert.throws(() => checkCanonicalDeviceKey(identity), /not a canonical/);
  const negativeZero = new Uint8Array(32);
  negativeZero[0] = 1;
  negativeZero[31] = 0x80;
  assert.throws(() => checkCanonicalDeviceKey(negativeZero), /not a canonical/);
  await assert.rejects(verifyStrict(identity, message, signature), SignatureError);
  await assert.rejects(verifyStrict(devicePublic, utf8('another message'), signature), /does not verify/);
});

test('object names are FORMAT §8 names and nothing else', () => {
  const name = objectName(vectors.device.device_id, 42n);
  assert.equal(name, `${vectors.device.device_id.slice(0, 16)}-00000000000000000042.sealed`);
  assert.deepEqual(parseObjectName(name), { deviceIdPrefix: vectors.device.device_id.slice(0, 16), seq: 42n });
  assert.equal(objectName(devicePublic.subarray(0, 8), (1n << 64n) - 1n).slice(17, 37), '18446744073709551615');
  for (const bad of [name.toUpperCase(), `${name}x`, name.replace('.sealed', '.seal'), name.slice(1), `../${name}`, `${name}\n`]) {
    assert.equal(parseObjectName(bad), null, bad);
  }
});

test('keyring_v2: its object opens for every role, and its document is what Python writes', async () => {
  const v2 = vectors.keyring_v2;
  const bytes = fromHex(v2.object);
  let keyring;
  for (const phone of v2.phones) {
    const holder = await bytesKeyHolder(2, decodeKeyString(phone.secret, [PREFIX.secret[2]]).raw);
    const opened = await new Reader({ devices: [devicePublic], keys: [holder] }).open(bytes);
    keyring = opened.keyring;
    assert.equal(fromUtf8(opened.body), keyringDocument(keyring));
  }
  assert.equal(keyring.version, 2);
  assert.equal(keyring.epoch, Number(v2.document.epoch));
  assert.deepEqual(keyring.recipients.map((r) => [r.name, r.role]), v2.phones.map((p) => [p.name, p.role]));
  for (const recipient of keyring.recipients) {
    const phone = v2.phones.find((p) => p.name === recipient.name);
    assert.equal(toHex(recipient.publicKey), phone.public_raw);
    assert.equal(recipient.suite, 'mlkem768-x25519');
    assert.equal(recipient.suiteByte, 2);
    if (recipient.role === 'guest') {
      assert.equal(recipient.signingKey, null);
      assert.ok(recipient.expires instanceof Date && recipient.expires > recipient.added);
    } else {
      assert.equal(toHex(recipient.signingKey), phone.signing_public_raw);
      assert.equal(recipient.expires, null);
    }
  }
});

test('keyring_v2: every invalid document is refused naming its problem', () => {
  for (const vector of vectors.keyring_v2.invalid_documents) {
    const text = JSON.stringify(vector.document, (_, v) => (typeof v === 'bigint' ? Number(v) : v));
    assert.throws(() => parseKeyring(text, 'vector'), (e) => e instanceof KeyringError && e.message.includes(vector.error), vector.description);
  }
});

test('keyring rules beyond the vectors: names, times, keys, versions', () => {
  const good = JSON.parse(JSON.stringify(vectors.keyring_v2.document, (_, v) => (typeof v === 'bigint' ? Number(v) : v)));
  const edited = (change) => {
    const document = structuredClone(good);
    change(document);
    return JSON.stringify(document);
  };
  const cases = [
    [(d) => (d.recipients[0].name = 'bad\u202ename'), 'U+202E at position 3 reorders or hides text'],
    [(d) => (d.recipients[0].name = ' alice'), 'surrounding spaces'],
    [(d) => (d.recipients[0].name = 'alice\u00a0'), 'surrounding spaces'],
    [(d) => (d.recipients[0].name = 'x'.repeat(65)), '1 to 64 characters'],
    [(d) => (d.recipients[0].name = ''), '1 to 64 characters'],
    [(d) => (d.recipients[1].name = d.recipients[0].name), 'duplicate recipient names'],
    [(d) => (d.recipients[1].key = d.recipients[0].key.toUpperCase()), 'duplicate recipient keys'],
    [(d) => (d.recipients[0].added = '2026-02-30T00:00:00Z'), 'is not YYYY-MM-DDTHH:MM:SSZ'],
    [(d) => (d.recipients[0].added = '2026-11-29T12:00:60Z'), 'is not YYYY-MM-DDTHH:MM:SSZ'],
    [(d) => (d.recipients[0].added = '2026-11-29 12:00:00Z'), 'is not YYYY-MM-DDTHH:MM:SSZ'],
    [(d) => (d.recipients[0].suite = 'x25519'), 'does not match the key'],
    [(d) => (d.recipients[0].suite = 'rsa'), "unknown suite 'rsa'"],
    [(d) => (d.recipients[0].key = encodeKeyString(PREFIX.public[1], new Uint8Array(32))), 'degenerate point'],
    [(d) => (d.recipients[0].key = encodeKeyString(PREFIX.public[2], new Uint8Array(1216).fill(0xff))), 'invalid mlkem768-x25519 public key'],
    [(d) => (d.epoch = 2 ** 32), 'epoch must be'],
    [(d) => (d.epoch = 1.5), 'epoch must be'],
    [(d) => (d.version = '2'), 'unsupported keyring version'],
    [(d) => (d.format = 'keyring'), 'not a Doorbell keyring'],
    [(d) => (d.recipients = Array(65).fill(d.recipients[0])), 'at most 64'],
  ];
  for (const [change, message] of cases) {
    assert.throws(() => parseKeyring(edited(change), 'k'), (e) => e instanceof KeyringError && e.message.includes(message), message);
  }
  // What Python's strptime also takes: one-digit fields and lower-case letters.
  const lax = parseKeyring(edited((d) => (d.recipients[0].added = '2026-1-5t1:2:3z')));
  assert.equal(lax.recipients[0].added.toISOString(), '2026-01-05T01:02:03.000Z');
  assert.equal(parseKeyring(edited((d) => (d.recipients[0].added = '0099-01-01T00:00:00Z'))).recipients[0].added.getUTCFullYear(), 99);
  // Version 1 ignores the members version 2 added.
  const v1 = parseKeyring(edited((d) => ((d.version = 1), (d.recipients[0].role = 'emperor'))));
  assert.ok(v1.recipients.every((r) => r.role === 'owner' && r.signingKey === null && r.expires === null));
  assert.throws(() => parseKeyring(' '.repeat(256 * 1024 + 1)), /limit 262144/);
});

test('strict JSON: integers exact as BigInt, fractions as Number, and every FORMAT §4 refusal', () => {
  assert.deepEqual(parseStrictJson('{"a": 18446744073709551615, "b": 2.0, "c": -1, "d": 1e2, "e": [true, null]}'), {
    a: 18446744073709551615n,
    b: 2,
    c: -1n,
    d: 100,
    e: [true, null],
  });
  const proto = parseStrictJson('{"__proto__": {"x": 1}}');
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ['__proto__']);
  const big = (1n << 1024n) - (1n << 970n);
  assert.equal(parseStrictJson(String(big - 1n)), big - 1n);
  assert.equal(parseStrictJson('"\\ud83d\\ude00"'), '\u{1f600}');
  const refusals = [
    [utf8('\ufeff{}'), 'byte-order mark'],
    [Uint8Array.of(0x22, 0xc0, 0x80, 0x22), 'not UTF-8'],
    [Uint8Array.of(0x22, 0xed, 0xa0, 0x80, 0x22), 'not UTF-8'],
    ['{"a": 1, "a": 1}', "duplicate key 'a'"],
    ['{"a": 1, "\\u0061": 2}', "duplicate key 'a'"],
    ['NaN', 'NaN is not a JSON number'],
    ['[-Infinity]', '-Infinity is not a JSON number'],
    ['Infinity', 'Infinity is not a JSON number'],
    ['1e999', 'does not fit a double'],
    ['-1.8e308', 'does not fit a double'],
    [String(big), 'does not fit a double'],
    [`-${big}`, 'does not fit a double'],
    ['1' + '0'.repeat(400), 'does not fit a double'],
    ['"\\ud800"', 'unpaired surrogate'],
    ['"\\udc00\\ud800"', 'unpaired surrogate'],
    ['"\\ud83d\\u0041"', 'unpaired surrogate'],
    ['{"\\udfff": 1}', 'unpaired surrogate'],
    ['"a\tb"', 'control character'],
    ['01', 'extra data'],
    ['[1,]', 'expecting a value'],
    ['{"a" 1}', "expecting ':'"],
    ['', 'ends where a value should be'],
    ['"\\x41"', 'bad escape'],
    ['[' .repeat(600) + ']'.repeat(600), 'nested'],
  ];
  for (const [input, message] of refusals) {
    assert.throws(() => parseStrictJson(input), (e) => e.code === 'malformed' && e.message.includes(message), `${input}`.slice(0, 40));
  }
});

// --- against the Python reader: strict JSON fuzzing, and objects sealed now -----------------

function python(script, input) {
  return execFileSync(PYTHON, ['-c', script], { cwd: REPO, input, maxBuffer: 64 << 20, timeout: 60_000 });
}

/** A value as comparable text: types kept (int, float by its bits), keys sorted. */
function tagged(value) {
  if (typeof value === 'bigint') return ['i', value.toString()];
  if (typeof value === 'number') {
    const bits = new DataView(new ArrayBuffer(8));
    bits.setFloat64(0, value);
    return ['f', toHex(new Uint8Array(bits.buffer))];
  }
  if (typeof value === 'string') return ['s', value];
  if (Array.isArray(value)) return ['a', value.map(tagged)];
  if (value !== null && typeof value === 'object') {
    return ['o', Object.keys(value).sort().map((k) => [k, tagged(value[k])])];
  }
  return ['c', value];
}

const TAGGED_PY = `
import json, struct, sys
from doorbell.sealing.format import loads_strict
class Refused(Exception): pass
def tagged(v):
    if isinstance(v, bool) or v is None: return ['c', v]
    if isinstance(v, int): return ['i', str(v)]
    if isinstance(v, float): return ['f', struct.pack('>d', v).hex()]
    if isinstance(v, str): return ['s', v]
    if isinstance(v, list): return ['a', [tagged(x) for x in v]]
    return ['o', [[k, tagged(v[k])] for k in sorted(v, key=lambda k: k.encode('utf-16-be'))]]
out = []
for raw in json.load(sys.stdin):
    try: out.append(tagged(loads_strict(bytes.fromhex(raw), Refused)))
    except Refused: out.append(None)
json.dump(out, sys.stdout)
`;

function* fuzzInputs() {
  let state = 0x9e3779b9;
  const random = (n) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  const big = (1n << 1024n) - (1n << 970n);
  const numbers = [
    '0', '-0', '-0.0', '1', '-1', '2.0', '1e2', '1E+2', '1e-2', '0.1e1', '1.5', '9007199254740993',
    '18446744073709551615', '18446744073709551616', '-9223372036854775808', '1e308', '1.7976931348623157e308',
    '1.7976931348623158e308', '1.797693134862315807e308', '1.7976931348623159e308', '1e309', '-1e309', '1e-400',
    '4.9e-324', String(big), String(big - 1n), `-${big - 1n}`, `-${big}`, '123456789012345678901234567890.5',
    '00', '1.', '.5', '-', '+1', '1e', '0x10', 'NaN', '-NaN', 'Infinity', '-Infinity', 'infinity',
  ];
  const strings = [
    '""', '"a"', '"\\u0041"', '"\\ud83d\\ude00"', '"\\ud800"', '"\\udc00"', '"\\ud800\\ud800"', '"\\uDBFF\\uDFFF"',
    '"\\ud83d x"', '"é"', '"\u{1f600}"', '"\\""', '"\\\\"', '"\\/"', '"\\b\\f\\n\\r\\t"', '"\\a"', '"\\u12"',
    '"\\u12G4"', '"tab\there"', '"\u007f"', '"\u2028"', '"unterminated',
  ];
  const atoms = [...numbers, ...strings, 'true', 'false', 'null', 'tru', 'nul', 'True'];
  const value = (depth) => {
    const pick = random(10);
    if (depth > 3 || pick < 5) return atoms[random(atoms.length)];
    if (pick < 7) return `[${Array.from({ length: random(4) }, () => value(depth + 1)).join(random(8) ? ',' : ', ')}]`;
    const keys = ['"a"', '"b"', '"\\u0061"', '"1"', '"__proto__"', '"é"', '"\\ud800"', '""'];
    const members = Array.from({ length: random(4) }, () => `${keys[random(keys.length)]}${random(6) ? ':' : ' : '}${value(depth + 1)}`);
    return `{${members.join(',')}}`;
  };
  const noise = ['{', '}', '[', ']', ',', ':', '"', '\\', '-', '0', '1', 'e', '.', ' ', '\n', '\t', '\u0000', 'n', 'u', '/'];
  for (let i = 0; i < 2500; i++) {
    let bytes = utf8((random(4) === 0 ? ' ' : '') + value(0) + (random(4) === 0 ? '\n' : ''));
    for (let m = random(4); m > 0 && bytes.length; m--) {
      const at = random(bytes.length + 1);
      const kind = random(4);
      if (kind === 0) bytes = concat(bytes.subarray(0, at), bytes.subarray(at + 1));
      else if (kind === 1) bytes = concat(bytes.subarray(0, at), utf8(noise[random(noise.length)]), bytes.subarray(at));
      else if (kind === 2) bytes = concat(bytes.subarray(0, at), Uint8Array.of([0xff, 0x80, 0xc3, 0xed, 0xef][random(5)]), bytes.subarray(at));
      else bytes = concat(bytes.subarray(0, at), bytes.subarray(random(bytes.length)));
    }
    if (random(50) === 0) bytes = concat(Uint8Array.of(0xef, 0xbb, 0xbf), bytes);
    yield bytes;
  }
}

test('strict JSON accepts exactly what the Python reader accepts, as the same values', () => {
  const inputs = [...fuzzInputs()];
  const expected = JSON.parse(python(TAGGED_PY, JSON.stringify(inputs.map(toHex))));
  let accepted = 0;
  inputs.forEach((input, index) => {
    let actual;
    try {
      actual = tagged(parseStrictJson(input));
    } catch (error) {
      if (error.code !== 'malformed') throw error;
      actual = null;
    }
    // Keys sort by UTF-16 code units on both sides.
    if (actual?.[0] === 'o' || expected[index]?.[0] === 'o') actual = JSON.parse(JSON.stringify(actual));
    assert.deepEqual(actual, expected[index], `input ${JSON.stringify(fromUtf8Lossy(input))}`);
    if (actual !== null) accepted++;
  });
  assert.ok(accepted > 300 && accepted < inputs.length - 300, `${accepted} of ${inputs.length} accepted: both kinds covered`);
});

function fromUtf8Lossy(bytes) {
  return new TextDecoder().decode(bytes);
}

const SEAL_PY = `
import json, os, sys
from datetime import UTC, datetime
from pathlib import Path
from doorbell.sealing import DeviceSigningKey, Keyring, Kind, RecipientPrivateKey, Suite
from doorbell.sealing.sealer import seal_bytes
out = Path(sys.argv[1])
device = DeviceSigningKey.generate()
hybrid = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
classic = RecipientPrivateKey.generate(Suite.X25519)
now = datetime.now(UTC)
keyring = Keyring(epoch=6).add("hybrid", hybrid.public_key(), now).add("classic", classic.public_key(), now)
body = os.urandom(700_000)
meta = {"stream": "ab" * 16, "index": 2**64 - 1, "start": 12.5, "duration": 2.0, "frames": 60}
sealed = seal_bytes(device, keyring, 2**63 + 5, b"\\x07" * 32, Kind.SEGMENT, meta, body, -1_000_000)
(out / "object").write_bytes(sealed)
(out / "body").write_bytes(body)
(out / "keys.json").write_text(json.dumps({"device": device.public_key.to_string(), "hybrid": hybrid.to_string(), "classic": classic.to_string()}))
`;

test('a segment Python seals now, to a hybrid and a classical phone, opens here byte for byte', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'doorbell-reader-'));
  try {
    python(`import sys; sys.argv = ["seal", ${JSON.stringify(dir)}]\n${SEAL_PY}`);
    const keys = JSON.parse(readFileSync(join(dir, 'keys.json'), 'utf8'));
    const object = new Uint8Array(readFileSync(join(dir, 'object')));
    const body = new Uint8Array(readFileSync(join(dir, 'body')));
    const device = decodeKeyString(keys.device, [PREFIX.device]).raw;
    const hybrid = await bytesKeyHolder(2, decodeKeyString(keys.hybrid, [PREFIX.secret[2]]).raw);
    const classic = await bytesKeyHolder(1, decodeKeyString(keys.classic, [PREFIX.secret[1]]).raw);
    for (const holder of [hybrid, classic]) {
      const opened = await new Reader({ devices: [device], keys: [holder] }).open(object);
      assert.equal(opened.seq, (1n << 63n) + 5n);
      assert.equal(opened.kindName, 'segment');
      assert.equal(opened.epoch, 8); // two phones added to epoch 6
      assert.equal(opened.timeUs, -1_000_000n);
      assert.deepEqual(opened.meta, { stream: 'ab'.repeat(16), index: (1n << 64n) - 1n, start: 12.5, duration: 2, frames: 60n });
      assert.ok(opened.body.length === body.length && Buffer.compare(opened.body, body) === 0);
      assert.deepEqual(opened.prev, new Uint8Array(32).fill(7));
    }
    const flipped = object.slice();
    flipped[object.length - 100] ^= 0x40;
    await refused(new Reader({ devices: [device], keys: [hybrid] }).open(flipped), 'forged');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('meta by kind: what a reader that uses the kind refuses (FORMAT §4.1)', () => {
  const id = 'ab'.repeat(16);
  const hash = 'cd'.repeat(32);
  const opened = (kind, meta) => ({ kind, seq: 9n, epoch: 1, meta, body: new Uint8Array(0) });
  const good = [
    [1, { stream: id, codec: 'h264', width: 1n, height: 2n, fps: 29.97 }],
    [2, { stream: id, index: 0n, start: 0n, duration: 0, frames: 0n, extra: 'ignored' }],
    [3, { type: 'ring', clip: id, stream: '', first_index: 5n, position: -1.5 }],
    [5, { notice: 'clip-end', clip: id, stream: id, last_index: -1n, reason: 'post-roll' }],
    [5, { notice: 'restart', previous: null, skipped: { first: 0n, last: -1n } }],
    [5, { notice: 'restart', previous: { seq: 3n, hash }, skipped: { first: 4n, last: 9n } }],
    [5, { notice: 'discarded', reason: 'quota', ranges: [{ first: 1n, last: 2n, last_hash: hash }] }],
  ];
  for (const [kind, meta] of good) assert.equal(checkContents(opened(kind, meta)), null);
  const bad = [
    [1, { stream: id, codec: 'h264', width: 2, height: 2n, fps: 30n }, "'width' is 2.0, must be an integer above 0"],
    [1, { stream: id, codec: 'h264', width: 2n, height: 2n, fps: 0n }, "'fps' is 0"],
    [1, { stream: id.toUpperCase(), codec: 'h264', width: 2n, height: 2n, fps: 1n }, "'stream'"],
    [2, { stream: id, index: 1n << 64n, start: 0, duration: 0, frames: 0n }, "'index' is 18446744073709551616"],
    [2, { stream: id, index: 0n, start: 0, duration: -0.5, frames: 0n }, "'duration' is -0.5"],
    [2, { stream: id, index: 0n, start: true, duration: 0, frames: 0n }, "'start' is true"],
    [3, { type: 'ring', clip: id, stream: '', first_index: 0n, camera: 5n }, "'camera' is 5"],
    [4, { epoch: 1n << 32n }, "'epoch'"],
    [5, { notice: 'clip-end', clip: id, stream: id, last_index: -2n, reason: 'x' }, "'last_index' is -2"],
    [5, { notice: 'restart', previous: { seq: 3n }, skipped: { first: 4n, last: 9n } }, "restart notice meta: previous: 'hash' is missing"],
    [5, { notice: 'discarded', reason: 'quota', ranges: [] }, "'ranges' is []"],
    [5, { notice: 'discarded', reason: 'quota', ranges: [5n] }, 'range 0 is not an object'],
  ];
  for (const [kind, meta, message] of bad) {
    assert.throws(() => checkContents(opened(kind, meta)), (e) => e.code === 'rejected' && e.message.includes(message), message);
  }
});

test('u64 values never pass through a double', () => {
  assert.deepEqual(u64((1n << 64n) - 1n), new Uint8Array(8).fill(0xff));
  const opened = parseStrictJson('{"seq": 18446744073709551615, "first": 9007199254740993}');
  assert.equal(opened.seq, 18446744073709551615n);
  assert.equal(opened.first, 9007199254740993n);
});
