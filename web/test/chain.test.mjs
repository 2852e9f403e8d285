// The phone's chain rules against the committed vectors (tests/vectors/v1.json `chains`,
// `chains_review`, `chains_damaged`), run as tests/vectors/chains.py runs them: every phone
// of the vectors holds its key, and `remembered` is this device's entry of a seen.json.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { fromHex, fromUtf8, toHex, utf8 } from '../src/bytes.js';
import { Reader, objectName, recipientTag } from '../src/format/object.js';
import { parseKeyring } from '../src/format/keyring.js';
import { bytesKeyHolder } from '../src/crypto/kem.js';
import { verifySource } from '../src/chain/verify.js';
import { PhoneMemory } from '../src/chain/memory.js';

const VECTORS = JSON.parse(readFileSync(new URL('../../tests/vectors/v1.json', import.meta.url), 'utf8'));
const SUITE = { x25519: 1, 'mlkem768-x25519': 2 };

// Key holders may be made asynchronously (WebCrypto imports): made once for every test.
const KEYS = await Promise.all(VECTORS.phones.map((phone) => bytesKeyHolder(SUITE[phone.suite], fromHex(phone.secret_raw))));

function vectorReader() {
  return new Reader({ devices: [fromHex(VECTORS.device.public_raw)], keys: KEYS });
}

function folder(objects) {
  const files = new Map(objects.map((item) => [item.name, fromHex(item.object)]));
  return {
    async names() {
      return [...files.keys()].sort();
    },
    async read(name) {
      return files.get(name);
    },
  };
}

function remembered(vector) {
  if (vector.remembered === null) return new Map();
  const document = {
    version: vector.remembered_version ?? 1,
    devices: { [VECTORS.device.device_id]: vector.remembered },
  };
  return PhoneMemory.fromJSON(JSON.stringify(document), { parseKeyring }).remembered();
}

const problemCodes = (result) => [...new Set(result.problems.map((f) => f.code))].sort();

for (const group of ['chains', 'chains_review', 'chains_damaged']) {
  for (const vector of VECTORS[group]) {
    test(`${group}: ${vector.description}`, async () => {
      const result = await verifySource(folder(vector.objects), vectorReader(), remembered(vector));
      assert.deepEqual(problemCodes(result), vector.codes, result.findings.map((f) => `${f.code} ${f.where}: ${f.message}`).join('\n'));
      assert.equal(result.ok, vector.codes.length === 0);
    });
  }
}

test('a 2^62 range costs what one number costs', async () => {
  const vector = VECTORS.chains.find((v) => v.description.startsWith('2^62'));
  const started = performance.now();
  const result = await verifySource(folder(vector.objects), vectorReader(), remembered(vector));
  assert.ok(performance.now() - started < 2000);
  assert.deepEqual(problemCodes(result), vector.codes);
});

test("the Python phone's words, for a person to read", async () => {
  const vector = VECTORS.chains.find((v) => v.description === 'seq N+1 names N-3, N absent');
  const result = await verifySource(folder(vector.objects), vectorReader(), new Map());
  const messages = result.findings.map((f) => f.message);
  assert.ok(messages.some((m) => /^missing seq \d+ \(deleted or never delivered\)$/.test(m)), messages.join('\n'));
  assert.ok(messages.some((m) => /^chain: seq \d+ names seq \d+ as its predecessor, not seq \d+ \(reordered or spliced\)$/.test(m)));
});

test('an honest chain is remembered as a sync remembers it', async () => {
  const vector = VECTORS.chains.find((v) => v.description.startsWith('honest'));
  const result = await verifySource(folder(vector.objects), vectorReader(), new Map());
  const memory = new PhoneMemory(new Map(), { parseKeyring });
  assert.equal(memory.remember(result), true);
  assert.equal(memory.remember(result), false);
  const again = PhoneMemory.fromJSON(memory.toJSON(), { parseKeyring });
  const item = again.remembered().get(VECTORS.device.device_id);
  assert.equal(item.head.seq, result.seen.get(VECTORS.device.device_id).head.seq);
  assert.deepEqual(item.seen, result.seen.get(VECTORS.device.device_id).seen);
  const checked = await verifySource(folder(vector.objects), vectorReader(), again.remembered());
  assert.deepEqual(problemCodes(checked), []);
});

test('sync: the newest objects this phone saw are not in the bucket', async () => {
  const vector = VECTORS.chains.find((v) => v.description.startsWith('honest'));
  const first = await verifySource(folder(vector.objects), vectorReader(), new Map());
  const head = first.seen.get(VECTORS.device.device_id).head;
  const newest = vector.objects.filter((item) => !item.name.endsWith(`-${head.seq.toString().padStart(20, '0')}.sealed`));
  const memory = new PhoneMemory(new Map(), { parseKeyring });
  memory.remember(first);
  const plain = await verifySource(folder(newest), vectorReader(), memory.remembered());
  assert.ok(!plain.findings.some((f) => f.code === 'newest-missing'));
  const synced = await verifySource(folder(newest), vectorReader(), memory.remembered(), null, { sync: true });
  const found = synced.findings.find((f) => f.code === 'newest-missing');
  assert.ok(found);
  assert.match(found.message, /^newest objects not in the bucket yet, or deleted: this phone has seen seq \d+/);
});

test('seen.json version 1 is read; version 2 is written', async () => {
  const id = VECTORS.device.device_id;
  const text = JSON.stringify({ version: 1, devices: { [id]: { head: { seq: 2 ** 53 + 1, hash: 'ab'.repeat(32) } } } })
    .replace(String(2 ** 53 + 1), '9007199254740993');
  const memory = PhoneMemory.fromJSON(text, { parseKeyring });
  const item = memory.remembered().get(id);
  assert.equal(item.head.seq, 9007199254740993n);
  assert.deepEqual(item.kept, [[9007199254740993n, 9007199254740993n]]);
  const written = memory.toJSON();
  assert.match(written, /"version": 2/);
  assert.match(written, /9007199254740993/);
  assert.throws(() => PhoneMemory.fromJSON('{"version": 3, "devices": {}}', { parseKeyring }), /seen\.json is damaged/);
});

/**
 * A reader that hands out envelopes and opened objects built here, for chains no vector
 * holds: every object still passes the real content checks (checkContents) and carries a
 * stanza for every recipient of the vector keyring, so only the chain rules speak.
 */
function builtChain(objects) {
  const deviceId = fromHex(VECTORS.device.device_id);
  const keyring = parseKeyring(JSON.stringify(VECTORS.keyring));
  const built = new Map();
  for (const [seq, prev, kind, meta, body = new Uint8Array(0)] of objects) {
    const name = objectName(deviceId, seq);
    const stanzas = keyring.recipients.map((r) => ({
      suite: r.suite,
      tag: recipientTag(deviceId, seq, r.suite, r.publicKey),
      wrapped: new Uint8Array(0),
    }));
    const chainHash = new Uint8Array(32).fill(Number(seq % 251n) + 1);
    const envelope = { deviceId, deviceIdHex: VECTORS.device.device_id, seq, prev, stanzas, chainHash };
    const opened = { ...envelope, kind, epoch: keyring.epoch, timeUs: 1795000000000000n, meta, body, keyring: null };
    built.set(name, { envelope, opened });
  }
  const source = { names: async () => [...built.keys()], read: async (name) => utf8(name) };
  const reader = {
    verify: async (bytes) => built.get(fromUtf8(bytes)).envelope,
    openEnvelope: async (envelope) => built.get(objectName(envelope.deviceId, envelope.seq)).opened,
  };
  return { source, reader, hashOf: (seq) => new Uint8Array(32).fill(Number(seq % 251n) + 1) };
}

function quotaChain(last) {
  const top = 2n ** 63n + 1n;
  const bridge = new Uint8Array(32).fill(Number(last % 251n) + 1);
  const epoch = BigInt(VECTORS.keyring.epoch); // strict JSON's integers are BigInts
  return builtChain([
    [0n, new Uint8Array(32), 4, { epoch }, utf8(JSON.stringify(VECTORS.keyring))],
    [top, bridge, 5, { notice: 'discarded', reason: 'quota', ranges: [{ first: 1n, last, last_hash: toHex(bridge) }] }],
  ]);
}

test('a quota notice announcing 2^63 numbers costs what one number costs', async () => {
  const { source, reader } = quotaChain(2n ** 63n);
  const started = performance.now();
  const result = await verifySource(source, reader, new Map());
  assert.ok(performance.now() - started < 1000);
  assert.deepEqual(result.problems, []);
  assert.deepEqual(
    result.findings.map((f) => f.message),
    ['seq 1..9223372036854775808 announced as quota'],
  );
  const seen = result.seen.get(VECTORS.device.device_id);
  assert.deepEqual(seen.seen, [[0n, 0n], [2n ** 63n + 1n, 2n ** 63n + 1n]]);
});

test('one number short of 2^63 announced: the last one is missing', async () => {
  const { source, reader } = quotaChain(2n ** 63n - 1n);
  const result = await verifySource(source, reader, new Map());
  assert.deepEqual(problemCodes(result), ['missing']);
  assert.ok(result.findings.some((f) => f.message === 'missing seq 9223372036854775808 (deleted or never delivered)'));
});
