// The sealed-object reader (src/format/object.js) against tests/vectors/v1.json: every
// committed object opens to exactly its payload, every invalid one is refused with the
// code and reason Python's reader gives, and the keyring version 2 vectors (X-Wing seeds,
// roles, invalid documents) read as doorbell/sealing/keyring.py reads them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { fromHex, toHex, utf8 } from '../src/bytes.js';
import { decodeKeyString, PREFIX } from '../src/keystrings.js';
import { bytesKeyHolder, publicKeyFromSecret } from '../src/crypto/kem.js';
import { expandXwingSeed, xwingCombine } from '../src/crypto/xwing.js';
import { checkCanonicalDeviceKey, verifyStrict } from '../src/crypto/ed25519.js';
import { parseStrictJson, isJsonInteger } from '../src/format/strictjson.js';
import { parseKeyring, KeyringError } from '../src/format/keyring.js';
import {
  checkContents,
  MAGIC,
  MAX_CIPHERTEXT,
  NotARecipient,
  ObjectError,
  objectName,
  padme,
  parseObjectName,
  Reader,
  recipientTag,
} from '../src/format/object.js';

const ROOT = new URL('../../', import.meta.url);
const V = JSON.parse(readFileSync(new URL('tests/vectors/v1.json', ROOT)));
const devicePublicKey = fromHex(V.device.public_raw);

function secretOf(phone) {
  const { prefix, raw } = decodeKeyString(phone.secret, [PREFIX.secret[1], PREFIX.secret[2], PREFIX.expandedSecret]);
  return [prefix === PREFIX.secret[1] ? 1 : 2, raw];
}
const phones = Object.fromEntries(await Promise.all(V.phones.map(async (p) => [p.name, await bytesKeyHolder(...secretOf(p))])));
const reader = () => new Reader({ devices: [devicePublicKey], keys: Object.values(phones) });

// Python's error classes, as the codes of this reader.
function expectedCode(message) {
  if (/signature|canonical/.test(message)) return 'forged';
  return 'malformed';
}

test('phone key vectors: public keys from secrets, both suites and both secret forms', () => {
  for (const phone of V.phones) {
    const [suite, raw] = secretOf(phone);
    assert.equal(toHex(raw), phone.secret_raw);
    assert.equal(toHex(publicKeyFromSecret(suite, raw)), phone.public_raw);
    assert.equal(toHex(phones[phone.name].publicKey), phone.public_raw);
  }
});

test('padme table and MAX_CIPHERTEXT', () => {
  for (const [length, padded] of Object.entries(V.padme)) assert.equal(padme(Number(length)), padded, length);
  assert.equal(MAX_CIPHERTEXT, 69206032);
  assert.deepEqual([...MAGIC], [0x89, 0x44, 0x42, 0x45, 0x4c, 0x4c, 0x0d, 0x0a]);
});

test('every vector object opens, for each of its recipients, to exactly its payload', async () => {
  for (const vector of V.objects) {
    const bytes = fromHex(vector.object);
    for (const recipient of vector.recipients) {
      const r = new Reader({ devices: [devicePublicKey], keys: [phones[recipient.name]] });
      const envelope = await r.verify(bytes);
      assert.equal(envelope.seq, BigInt(vector.seq));
      assert.equal(toHex(envelope.prev), vector.prev);
      assert.equal(toHex(envelope.nonce), vector.nonce);
      assert.equal(envelope.headerLength, vector.header_len);
      assert.equal(toHex(envelope.chainHash), vector.chain_hash);
      assert.equal(envelope.deviceIdHex, V.device.device_id);
      const tag = recipientTag(envelope.deviceId, envelope.seq, phones[recipient.name].suite, phones[recipient.name].publicKey);
      assert.equal(toHex(tag), recipient.tag);
      const opened = await r.openEnvelope(envelope);
      assert.equal(opened.kind, vector.kind, vector.description);
      assert.equal(opened.epoch, vector.epoch);
      assert.equal(opened.timeUs, BigInt(vector.time_us));
      assert.deepEqual({ ...opened.meta }, vector.meta);
      assert.equal(toHex(opened.body), vector.body);
      assert.equal(toHex(opened.chainHash), vector.chain_hash);
      if (vector.kind === 4) {
        assert.equal(opened.kindName, 'keyring');
        assert.equal(opened.keyring.epoch, vector.epoch);
      } else {
        assert.equal(opened.keyring, null);
      }
    }
  }
});

test('the hybrid stanza opens through X-Wing written out (the vector object mixes suites)', async () => {
  const vector = V.objects.find((o) => o.recipients.some((r) => r.name === 'test-phone-pq'));
  assert.ok(vector, 'the vectors hold a hybrid object');
  const pq = V.phones.find((p) => p.suite === 'mlkem768-x25519');
  const r = new Reader({ devices: [devicePublicKey], keys: [phones[pq.name]] });
  const opened = await r.open(fromHex(vector.object));
  assert.equal(toHex(opened.body), vector.body);
  // The combiner's label is last (draft-06 and later).
  const out = xwingCombine(new Uint8Array(32), new Uint8Array(32), new Uint8Array(32), new Uint8Array(32));
  assert.equal(out.length, 32);
});

test('objects form a chain', () => {
  assert.equal(V.objects[0].prev, '00'.repeat(32));
  for (let i = 1; i < V.objects.length; i++) assert.equal(V.objects[i].prev, V.objects[i - 1].chain_hash);
});

test('every invalid object is refused with the reason Python gives', async () => {
  for (const vector of [...V.invalid, ...V.invalid_signatures]) {
    await assert.rejects(reader().open(fromHex(vector.object)), (error) => {
      assert.ok(error instanceof ObjectError, vector.description);
      assert.equal(error.code, expectedCode(vector.error), `${vector.description}: ${error.message}`);
      assert.match(error.message, new RegExp(vector.error), vector.description);
      return true;
    });
  }
});

test('every invalid payload is refused, malformed when opened or rejected by its contents', async () => {
  for (const vector of V.invalid_payloads) {
    await assert.rejects(reader().open(fromHex(vector.object)), (error) => {
      assert.ok(error instanceof ObjectError, `${vector.description}: ${error}`);
      assert.ok(['malformed', 'rejected'].includes(error.code), vector.description);
      assert.ok(error.message.includes(vector.error), `${vector.description}: ${error.message} lacks ${vector.error}`);
      return true;
    });
  }
});

test('an untrusted device, a stranger phone, and a stanza that does not open', async () => {
  const bytes = fromHex(V.objects[0].object);
  const otherDevice = ed25519.getPublicKey(new Uint8Array(32).fill(3));
  await assert.rejects(new Reader({ devices: [otherDevice], keys: Object.values(phones) }).open(bytes), { code: 'untrusted' });
  const stranger = await bytesKeyHolder(1, new Uint8Array(32).fill(9));
  await assert.rejects(new Reader({ devices: [devicePublicKey], keys: [stranger] }).open(bytes), (error) => {
    assert.ok(error instanceof NotARecipient);
    assert.equal(error.code, 'not-for-us');
    return true;
  });
  // A holder claiming the recipient's public key without its secret matches but cannot open.
  const liar = { suite: 1, publicKey: phones['test-phone-x25519'].publicKey, decap: stranger.decap };
  await assert.rejects(new Reader({ devices: [devicePublicKey], keys: [liar] }).open(bytes), { code: 'unopenable' });
});

test('object names (FORMAT §8)', () => {
  const id = fromHex(V.device.device_id);
  const name = objectName(id, 42n);
  assert.equal(name, `${V.device.device_id.slice(0, 16)}-00000000000000000042.sealed`);
  assert.deepEqual(parseObjectName(name), { deviceHex16: V.device.device_id.slice(0, 16), seq: 42n });
  assert.deepEqual(parseObjectName(objectName(id, 2n ** 64n - 1n)).seq, 2n ** 64n - 1n);
  for (const bad of [name.toUpperCase(), name + 'x', name.replace('.sealed', ''), `${'0'.repeat(16)}-99999999999999999999.sealed`, `${'0'.repeat(15)}-00000000000000000042.sealed`]) {
    assert.equal(parseObjectName(bad), null, bad);
  }
});

test('strict signatures: S below L, canonical A', async () => {
  const good = fromHex(V.objects[0].signature);
  const message = fromHex(V.objects[0].signed_message);
  await verifyStrict(devicePublicKey, message, good);
  const bad = good.slice();
  bad[0] ^= 1;
  await assert.rejects(verifyStrict(devicePublicKey, message, bad), { code: 'forged' });
  // y = p + 1 read as 1 (the identity): not canonical.
  const identity = new Uint8Array(32);
  identity[0] = 0xee;
  identity.fill(0xff, 1, 31);
  identity[31] = 0x7f;
  assert.throws(() => checkCanonicalDeviceKey(identity), { code: 'forged' });
  const negativeZero = new Uint8Array(32);
  negativeZero[0] = 1;
  negativeZero[31] = 0x80;
  assert.throws(() => checkCanonicalDeviceKey(negativeZero), { code: 'forged' });
  checkCanonicalDeviceKey(devicePublicKey);
});

test('strict JSON (FORMAT §4)', () => {
  const fail = [
    ['{"a":1,"a":2}', /duplicate key 'a'/],
    ['{"a":NaN}', /NaN/],
    ['{"a":-Infinity}', /Infinity/],
    ['{"a":1e999}', /does not fit a double/],
    [`{"a":${2n ** 1024n}}`, /does not fit a double/],
    ['{"a":"\\ud800"}', /unpaired surrogate/],
    ['{"a":1} x', /extra data/],
  ];
  for (const [text, pattern] of fail) assert.throws(() => parseStrictJson(utf8(text)), pattern, text);
  assert.throws(() => parseStrictJson(Uint8Array.of(0xef, 0xbb, 0xbf, 0x7b, 0x7d)), /byte-order mark/);
  assert.throws(() => parseStrictJson(Uint8Array.of(0x22, 0xc3, 0x28, 0x22)), /not UTF-8/);
  const doc = parseStrictJson(utf8('{"big":18446744073709551615,"small":7,"two":2.0,"e":1e2,"pair":"\\ud83d\\ude00"}'));
  assert.equal(doc.big, 18446744073709551615n);
  assert.equal(doc.small, 7);
  assert.ok(isJsonInteger(doc, 'small') && isJsonInteger(doc, 'big'));
  assert.ok(!isJsonInteger(doc, 'two') && !isJsonInteger(doc, 'e'));
  assert.equal(doc.pair, '😀');
  assert.equal(parseStrictJson(`${2n ** 1024n - 2n ** 971n}`), 2n ** 1024n - 2n ** 971n);
});

test('meta rules by kind: an integer written 2.0 is not an integer', () => {
  const opened = (kind, metaText) => ({ kind, seq: 1n, epoch: 0, meta: parseStrictJson(metaText), body: new Uint8Array(0) });
  const init = '{"stream":"11111111111111111111111111111111","codec":"h264","width":640,"height":480,"fps":30}';
  assert.equal(checkContents(opened(1, init)), null);
  assert.throws(() => checkContents(opened(1, init.replace('640', '640.0'))), { code: 'rejected', message: /'width' is 640, must be an integer above 0/ });
  assert.throws(() => checkContents(opened(1, init.replace('"h264"', 'true'))), { code: 'rejected' });
  const segment = '{"stream":"11111111111111111111111111111111","index":18446744073709551615,"start":0.5,"duration":2,"frames":60}';
  assert.equal(checkContents(opened(2, segment)), null);
  assert.throws(() => checkContents(opened(2, segment.replace('18446744073709551615', '18446744073709551616'))), { code: 'rejected' });
  const restart = '{"notice":"restart","previous":null,"skipped":{"first":5,"last":4}}';
  assert.equal(checkContents(opened(5, restart)), null);
  assert.throws(() => checkContents(opened(5, restart.replace('"last":4', '"last":-2'))), /'last'/);
  const discarded = '{"notice":"discarded","reason":"quota","ranges":[{"first":1,"last":2,"last_hash":"' + 'ab'.repeat(32) + '"}]}';
  assert.equal(checkContents(opened(5, discarded)), null);
  assert.throws(() => checkContents(opened(5, discarded.replace('"ranges":[', '"ranges":[3,'))), /range 0 is not an object/);
  assert.throws(() => checkContents(opened(5, '{"notice":"clip-end"}')), /clip-end notice meta: 'clip' is missing/);
});

test('keyring version 2: seeds, expansions, public keys, roles and signing keys', async () => {
  const V2 = V.keyring_v2;
  for (const phone of V2.phones) {
    const seed = fromHex(phone.secret_seed);
    assert.equal(toHex(decodeKeyString(phone.secret, [PREFIX.secret[2]]).raw), phone.secret_seed);
    const { mlkemSeed, x25519Secret } = expandXwingSeed(seed);
    assert.equal(toHex(mlkemSeed) + toHex(x25519Secret), phone.secret_expanded);
    assert.equal(toHex(publicKeyFromSecret(2, seed)), phone.public_raw);
    assert.equal(toHex(publicKeyFromSecret(2, fromHex(phone.secret_expanded))), phone.public_raw);
  }
  const object = fromHex(V2.object);
  const document = utf8(JSON.stringify(V2.document, null, 2) + '\n');
  let keyring;
  for (const phone of V2.phones) {
    const r = new Reader({ devices: [devicePublicKey], keys: [await bytesKeyHolder(2, fromHex(phone.secret_seed))] });
    const opened = await r.open(object);
    assert.equal(opened.kind, 4);
    keyring = opened.keyring;
    assert.equal(opened.body.length, document.length);
    assert.equal(toHex(opened.body), toHex(document));
  }
  assert.deepEqual(keyring.recipients.map((r) => [r.name, r.role]), V2.phones.map((p) => [p.name, p.role]));
  for (const recipient of keyring.recipients) {
    const phone = V2.phones.find((p) => p.name === recipient.name);
    assert.equal(toHex(recipient.publicKey), phone.public_raw);
    assert.equal(recipient.suite, 'mlkem768-x25519');
    if (recipient.role === 'guest') {
      assert.equal(recipient.signingKey, null);
      assert.ok(recipient.expires instanceof Date && recipient.expires > recipient.added);
    } else {
      assert.equal(toHex(recipient.signingKey), phone.signing_public_raw);
      assert.equal(recipient.expires, null);
    }
  }
});

test('keyring version 2: every invalid document is refused with the reason Python gives', () => {
  for (const c of V.keyring_v2.invalid_documents) {
    assert.throws(() => parseKeyring(utf8(JSON.stringify(c.document)), 'vector'), (error) => {
      assert.ok(error instanceof KeyringError, `${c.description}: ${error}`);
      assert.ok(error.message.includes(c.error), `${c.description}: ${error.message}`);
      return true;
    });
  }
  const v1 = parseKeyring(utf8(JSON.stringify(V.keyring)));
  assert.deepEqual(v1.recipients.map((r) => r.name), V.phones.map((p) => p.name));
  assert.ok(v1.recipients.every((r) => r.role === 'owner' && r.signingKey === null));
});

test('keyring documents: names, times, keys', () => {
  const base = structuredClone(V.keyring);
  const parse = (mutate) => {
    const doc = structuredClone(base);
    mutate(doc);
    return parseKeyring(JSON.stringify(doc));
  };
  parse(() => {});
  assert.throws(() => parse((d) => (d.recipients[0].name = ' lead')), /surrounding spaces/);
  assert.throws(() => parse((d) => (d.recipients[0].name = 'a\u202Eb')), /U\+202E/);
  assert.throws(() => parse((d) => (d.recipients[0].name = '')), /1 to 64/);
  assert.throws(() => parse((d) => (d.recipients[1].name = d.recipients[0].name)), /duplicate recipient names/);
  assert.throws(() => parse((d) => (d.recipients[0].added = '2026-02-30T00:00:00Z')), /not YYYY-MM-DDTHH:MM:SSZ/);
  assert.throws(() => parse((d) => (d.recipients[0].added = '2026-11-29 21:50:00')), /not YYYY/);
  parse((d) => (d.recipients[0].added = '2026-1-5t1:2:3z')); // as lenient as Python's strptime
  assert.throws(() => parse((d) => (d.recipients[0].suite = 'mlkem768-x25519')), /does not match the key/);
  assert.throws(() => parse((d) => (d.epoch = 2 ** 32)), /epoch/);
  assert.throws(() => parseKeyring(JSON.stringify(base).replace('"epoch": 2', '"epoch": 2.0').replace('"epoch":2', '"epoch":2.0')), /epoch/);
  assert.throws(() => parse((d) => d.recipients.push(d.recipients[0])), /duplicate/);
});

const PYTHON = new URL('.venv/bin/python', ROOT);

test('a large hybrid segment sealed by the Python package opens, seed and expanded key alike', { skip: !existsSync(PYTHON) }, async () => {
  const script = `
import json, os, sys
from doorbell.sealing import DeviceSigningKey, Keyring, Kind, RecipientPrivateKey, Suite, seal_bytes
from datetime import datetime, UTC
device = DeviceSigningKey.generate()
pq = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
classic = RecipientPrivateKey.generate(Suite.X25519)
now = datetime.now(UTC)
keyring = Keyring().add("pq", pq.public_key(), now).add("classic", classic.public_key(), now)
body = os.urandom(300 * 1024)
meta = {"stream": "22" * 16, "index": 7, "start": 14.0, "duration": 2.0, "frames": 60}
data = seal_bytes(device, keyring, 9, bytes(32), Kind.SEGMENT, meta, body, 1_700_000_000_000_000)
json.dump({"device": device.public_key.raw.hex(), "pq": pq.raw.hex(), "pq_expanded": pq.expanded.hex(),
           "classic": classic.raw.hex(), "body": body.hex(), "object": bytes(data).hex(), "epoch": keyring.epoch}, sys.stdout)
`;
  const out = JSON.parse(execFileSync(PYTHON.pathname, ['-c', script], { cwd: ROOT.pathname, maxBuffer: 64 << 20 }));
  const bytes = fromHex(out.object);
  for (const holder of await Promise.all([bytesKeyHolder(2, fromHex(out.pq)), bytesKeyHolder(2, fromHex(out.pq_expanded)), bytesKeyHolder(1, fromHex(out.classic))])) {
    const opened = await new Reader({ devices: [fromHex(out.device)], keys: [holder] }).open(bytes);
    assert.equal(opened.kindName, 'segment');
    assert.equal(opened.seq, 9n);
    assert.equal(opened.epoch, out.epoch);
    assert.equal(opened.timeUs, 1_700_000_000_000_000n);
    assert.equal(opened.meta.index, 7);
    assert.equal(toHex(opened.body), out.body);
  }
  // One altered ciphertext byte: the signature no longer holds.
  bytes[bytes.length - 100] ^= 1;
  await assert.rejects(new Reader({ devices: [fromHex(out.device)], keys: [await bytesKeyHolder(1, fromHex(out.classic))] }).open(bytes), {
    code: 'forged',
    message: /altered after the doorbell signed it/,
  });
});
