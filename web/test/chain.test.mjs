// The phone's chain rules against the committed vectors (tests/vectors/v1.json `chains`,
// `chains_review`, `chains_damaged`), run as tests/vectors/chains.py runs them: every phone
// of the vectors holds its key, and `remembered` is this device's entry of a seen.json.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { sha256 } from '@noble/hashes/sha2.js';

import { fromHex, fromUtf8, toHex, utf8 } from '../src/bytes.js';
import { encodeKeyString, PREFIX } from '../src/keystrings.js';
import { Reader, objectName, recipientTag } from '../src/format/object.js';
import { parseKeyring } from '../src/format/keyring.js';
import { bytesKeyHolder } from '../src/crypto/kem.js';
import { checkDeviceChain, verifySource } from '../src/chain/verify.js';
import {
  FORKED,
  MAX_RUNS,
  NOTHING,
  PhoneMemory,
  keyringDocument,
  knownKeyring,
  merged,
  runsOf,
  seenIn,
  seqsAsRuns,
} from '../src/chain/memory.js';
import { sameKeyring, suiteOf } from '../src/chain/rules.js';

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
  // As tests/test_chain_rules.py words it: the quota range is announced, the restart's
  // skip of 2^62 - 1 numbers breaks its rule and so announces nothing.
  const messages = result.findings.map((f) => f.message);
  const big = 2n ** 62n;
  assert.ok(messages.includes(`seq 2..${big - 1n} announced as quota`), messages.join('\n'));
  assert.ok(
    messages.some((m) => m.includes('skipped covers 4611686018427387903 numbers, more than one reservation block (1024)')),
    messages.join('\n'),
  );
  assert.ok(messages.includes(`missing seq ${big + 1n}..${2n ** 63n - 1n} (deleted or never delivered)`), messages.join('\n'));
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
      suite: suiteOf(r),
      tag: recipientTag(deviceId, seq, suiteOf(r), r.publicKey),
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

// --- every rule of tests/test_chain_rules.py, on entries built here --------------------------
//
// checkDeviceChain reads no bytes: a Forger makes the entries a verification would record,
// as a stolen device key could sign them, one rule broken at a time. This phone is
// `test-phone`; an object is opened when its keyring lists it, as the reader would.

const DEVICE_HEX = VECTORS.device.device_id;
const DEVICE = fromHex(DEVICE_HEX);
const SHORT = DEVICE_HEX.slice(0, 16);
const KIND = { INIT: 1, SEGMENT: 2, EVENT: 3, KEYRING: 4, NOTICE: 5 };
const PHONE = ['test-phone', VECTORS.phones[0].public];
const pq = (i) => encodeKeyString(PREFIX.public[2], fromHex(VECTORS.keyring_v2.phones[i].public_raw));
const STRANGER = ['stranger', pq(0)];
const PARTNER = ['partner', pq(1)];
const STREAM = '22'.repeat(16);
const CLIP = '33'.repeat(16);

function keyringOf(epoch, ...recipients) {
  const suite = (key) => (key.startsWith(PREFIX.public[1]) ? 'x25519' : 'mlkem768-x25519');
  const document = {
    format: 'doorbell-keyring',
    version: 1,
    epoch,
    recipients: recipients.map(([name, key]) => ({ name, suite: suite(key), key, added: '2026-11-29T12:00:00Z' })),
  };
  return parseKeyring(JSON.stringify(document));
}

const MINE = keyringOf(1, PHONE);
const THEIRS = keyringOf(1, STRANGER);
const ZERO = new Uint8Array(32);

const event = (type = 'ring') => ({ type, clip: CLIP, stream: '', first_index: 0n });
const segment = (index, stream = STREAM) => ({ stream, index: BigInt(index), start: 2 * index, duration: 2, frames: 30n });
const restart = (previous, first, last) => ({
  notice: 'restart',
  previous: previous === null ? null : { seq: BigInt(previous[0]), hash: toHex(previous[1]) },
  skipped: { first: BigInt(first), last: BigInt(last) },
});
const discarded = (ranges, reason = 'quota') => ({
  notice: 'discarded',
  reason,
  ranges: ranges.map(([first, last, hash]) => ({ first: BigInt(first), last: BigInt(last), last_hash: toHex(hash) })),
});
const clipEnd = (last, { clip = CLIP, stream = STREAM } = {}) => ({
  notice: 'clip-end',
  clip,
  stream,
  last_index: BigInt(last),
  reason: 'post-roll',
});

class Forger {
  constructor(keyring = MINE) {
    this.keyring = keyring;
    this.objects = new Map(); // seq -> entry
    this.made = 0;
  }

  hash(seq) {
    return this.objects.get(BigInt(seq)).chainHash;
  }

  seal(seq, prev, kind, meta, { keyring = this.keyring } = {}) {
    seq = BigInt(seq);
    const chainHash = sha256(utf8(`object ${this.made++}`)); // each one its own signature
    const stanzas = keyring.recipients.map((r) => ({ suite: suiteOf(r), tag: recipientTag(DEVICE, seq, suiteOf(r), r.publicKey) }));
    const opened = keyring.recipients.some((r) => r.name === PHONE[0]);
    const contents = opened
      ? { kind, timeUs: 1795000000000000n + seq, epoch: keyring.epoch, meta, keyring: kind === KIND.KEYRING ? keyring : null }
      : null;
    const entry = { name: objectName(DEVICE, seq), deviceId: DEVICE, deviceIdHex: DEVICE_HEX, seq, prev, chainHash, stanzas, contents, rejected: false };
    this.objects.set(seq, entry);
    return seq;
  }

  append(kind, meta, options) {
    const seq = this.objects.size ? [...this.objects.keys()].reduce((a, b) => (a > b ? a : b)) + 1n : 0n;
    return this.seal(seq, seq ? this.hash(seq - 1n) : ZERO, kind, meta, options);
  }

  keyringObject(keyring = this.keyring) {
    return this.append(KIND.KEYRING, { epoch: BigInt(keyring.epoch) }, { keyring });
  }

  start(events) {
    this.keyringObject();
    for (let i = 0; i < events; i++) this.append(KIND.EVENT, event());
  }

  entries(skip = []) {
    const skipped = new Set(skip.map(BigInt));
    return [...this.objects.values()].filter((e) => !skipped.has(e.seq)).sort((a, b) => (a.seq < b.seq ? -1 : 1));
  }

  /** What a sync of everything so far would have remembered (seen.json v2). */
  remembered(skip = []) {
    return checkDeviceChain(this.entries(skip)).seen.get(DEVICE_HEX);
  }

  check({ skip = [], memory } = {}) {
    const result = checkDeviceChain(this.entries(skip), memory);
    const lines = result.findings.map((f) => `${f.problem ? 'FAIL' : 'note'}   ${f.where}: ${f.message}`);
    return { result, codes: problemCodes(result), out: lines.join('\n') + '\n', lines };
  }
}

const name = (seq) => objectName(DEVICE, BigInt(seq));

test('rules: an honest chain has nothing to say', () => {
  const forger = new Forger();
  forger.start(3);
  const { result } = forger.check();
  assert.deepEqual(result.findings, []);
  const seen = result.seen.get(DEVICE_HEX);
  assert.equal(seen.head.seq, 3n);
  assert.equal(seen.keyring.seq, 0n);
  assert.deepEqual(seen.seen, [[0n, 3n]]);
  assert.deepEqual(seen.kept, [[0n, 3n]]);
});

test('rules: seq 0 must start the chain, and no other object may', () => {
  const forger = new Forger();
  forger.seal(0, sha256(utf8('elsewhere')), KIND.KEYRING, { epoch: 1n });
  forger.append(KIND.EVENT, event());
  forger.seal(2, ZERO, KIND.EVENT, event());
  const { codes, out } = forger.check();
  assert.deepEqual(codes, ['bad-start']);
  assert.ok(out.includes('chain: seq 0 must start the chain (prev all zero)'), out);
  assert.ok(out.includes('chain: seq 2 claims to start the chain but is not seq 0'), out);
});

test('rules: renamed, duplicated and forked objects', () => {
  const forger = new Forger();
  forger.start(3);
  const entries = forger.entries();
  const renamed = { ...entries[2], name: name(7) };
  const copy = { ...entries[3], name: `${name(3)}.copy` };
  const other = { ...entries[3], name: `${name(3)}.other`, chainHash: sha256(utf8('other')) };
  const { result } = { result: checkDeviceChain([...entries.slice(0, 2), renamed, entries[3], copy, other]) };
  const out = result.findings.map((f) => `${f.where}: ${f.message}`).join('\n');
  assert.deepEqual(problemCodes(result), ['duplicate', 'fork', 'renamed']);
  assert.ok(out.includes(`${name(7)}: holds seq 2 of device ${SHORT}, whose name is ${name(2)} (renamed or reordered)`), out);
  assert.ok(out.includes(`${name(3)}.copy: duplicate of ${name(3)} (seq 3)`), out);
  assert.ok(out.includes(`${name(3)}.other: fork: a different object than ${name(3)} with the same seq 3`), out);
  assert.equal(result.seen.get(DEVICE_HEX).head.seq, 2n, 'a forked seq is never the head remembered');
});

test('rules: a fork against the object the phone verified before', () => {
  const forger = new Forger();
  forger.start(3);
  const memory = forger.remembered();
  forger.seal(3, forger.hash(2), KIND.EVENT, event('motion'));
  const { codes, out } = forger.check({ memory });
  assert.deepEqual(codes, ['fork']);
  assert.ok(out.includes(`${name(3)}: fork: seq 3 differs from the object with that seq this phone verified before`), out);
});

test('rules: reordered and replaced links', () => {
  const forger = new Forger();
  forger.start(4);
  forger.seal(5, forger.hash(1), KIND.EVENT, event());
  assert.ok(forger.check().out.includes(`${name(5)}: chain: seq 5 names seq 1 as its predecessor, not seq 4 (reordered or spliced)`));
  forger.seal(5, sha256(utf8('nothing')), KIND.EVENT, event());
  const { codes, out } = forger.check();
  assert.deepEqual(codes, ['replaced']);
  assert.ok(out.includes(`${name(5)}: chain: seq 5 does not follow seq 4 (one was replaced)`), out);
});

function restartRun(forger, notice, meta, prev) {
  forger.seal(notice, prev, KIND.NOTICE, meta);
  forger.keyringObject();
  forger.append(KIND.EVENT, event());
}

test('rules: an honest restart is announced', () => {
  const forger = new Forger();
  forger.start(3);
  restartRun(forger, 10, restart([3, forger.hash(3)], 4, 9), forger.hash(3));
  const { result, out } = forger.check();
  assert.ok(result.ok, out);
  assert.equal(out, `note   device ${SHORT}: seq 4..9 announced as restart\n`);
});

for (const [kase, message] of [
  ['prev-not-previous-hash', 'restart notice seq 10: its prev is not previous.hash'],
  ['first-not-after-previous', 'skipped is 6..9, must be 4..9'],
  ['last-not-before-notice', 'skipped is 4..8, must be 4..9'],
  ['more-than-a-block', 'more than one reservation block (1024)'],
  ['null-with-older-objects', 'says no chain head was recorded (previous: null)'],
  ['previous-hash-wrong', 'previous.hash is not the chain hash of seq 3'],
  ['hides-delivered', 'but seq 4 was delivered (in this set): notice hides a delivered'],
]) {
  test(`rules: a restart notice that breaks a rule fails: ${kase}`, () => {
    const forger = new Forger();
    forger.start(3);
    const head = [3, forger.hash(3)];
    let [notice, prev, meta] = [10, forger.hash(3), restart(head, 4, 9)];
    if (kase === 'prev-not-previous-hash') prev = forger.hash(2);
    else if (kase === 'first-not-after-previous') meta = restart(head, 6, 9);
    else if (kase === 'last-not-before-notice') meta = restart(head, 4, 8);
    else if (kase === 'more-than-a-block') [notice, meta] = [2004, restart(head, 4, 2003)];
    else if (kase === 'null-with-older-objects') [prev, meta] = [ZERO, restart(null, 0, 9)];
    else if (kase === 'previous-hash-wrong') {
      const fake = sha256(utf8('fake'));
      [prev, meta] = [fake, restart([3, fake], 4, 9)];
    } else {
      forger.append(KIND.EVENT, event());
      forger.append(KIND.EVENT, event()); // 4 and 5 delivered; the notice names the stale head 3
    }
    restartRun(forger, notice, meta, prev);
    const { result, out } = forger.check();
    assert.ok(!result.ok, out);
    assert.ok(out.includes(message), out);
  });
}

test('rules: a power-cut deletion of what the phone saw is reported', () => {
  const forger = new Forger();
  forger.start(5);
  const memory = forger.remembered(); // the phone synced 0..5
  restartRun(forger, 10, restart([3, forger.hash(3)], 4, 9), forger.hash(3));
  const { out } = forger.check({ skip: [4, 5], memory });
  assert.ok(
    out.includes('restart notice seq 10 skips 4..9, but seq 4 was delivered (earlier (remembered)): notice hides a delivered object'),
    out,
  );
});

test('rules: previous null is refused when the phone remembers older objects', () => {
  const forger = new Forger();
  forger.start(3);
  const memory = forger.remembered();
  restartRun(forger, 10, restart(null, 0, 9), ZERO);
  const { out } = forger.check({ skip: [0, 1, 2, 3], memory });
  assert.ok(out.includes('says no chain head was recorded (previous: null), but this phone knows seq 0'), out);
});

/** 0 keyring, 1 event, 2..5 continuous segments, 6 a quota notice for 2..3. */
function quotaRun(forger, meta) {
  forger.start(1);
  for (let index = 0; index < 4; index++) forger.append(KIND.SEGMENT, segment(index));
  return forger.append(KIND.NOTICE, meta ?? discarded([[2, 3, forger.hash(3)]]));
}

test('rules: an honest quota eviction is announced; an object a faster sink took is a note', () => {
  const forger = new Forger();
  quotaRun(forger);
  let { result, out } = forger.check({ skip: [2, 3] });
  assert.ok(result.ok, out);
  assert.equal(out, `note   device ${SHORT}: seq 2..3 announced as quota\n`);
  ({ result, out } = forger.check({ skip: [2] }));
  assert.ok(result.ok, out);
  assert.ok(out.includes('1 object(s) in 2..3 (first seq 3) are here although notice seq 6 announces them evicted by quota'), out);
});

for (const [kase, ranges, reason, message] of [
  ['pre-roll', [[2, 3]], 'pre-roll', "reason 'pre-roll'; only 'quota' and 'damaged' discards exist"],
  ['past-the-notice', [[2, 6]], 'quota', "range 2..6 is not first <= last < the notice's seq"],
  ['reversed', [[3, 2]], 'quota', "range 3..2 is not first <= last < the notice's seq"],
  ['overlap', [[2, 3], [3, 3]], 'quota', 'discarded notice seq 6: its ranges 2..3 and 3..3 overlap'],
]) {
  test(`rules: a discarded notice that breaks a rule fails: ${kase}`, () => {
    const forger = new Forger();
    quotaRun(forger);
    forger.seal(6, forger.hash(5), KIND.NOTICE, discarded(ranges.map(([a, b]) => [a, b, forger.hash(3)]), reason));
    const { result, out } = forger.check({ skip: [2, 3] });
    assert.ok(!result.ok, out);
    assert.ok(out.includes(message), out);
  });
}

test('rules: a wrong last_hash breaks the bridge', () => {
  const forger = new Forger();
  quotaRun(forger);
  forger.seal(6, forger.hash(5), KIND.NOTICE, discarded([[2, 3, sha256(utf8('nothing'))]]));
  const { codes, out } = forger.check({ skip: [2, 3] });
  assert.deepEqual(codes, ['replaced']);
  assert.ok(out.includes(`${name(4)}: chain: seq 4 does not follow the gap notice seq 6 announced`), out);
});

test('rules: an eviction hiding a ring the phone saw fails; a segment another sink took may go', () => {
  let forger = new Forger();
  forger.start(3);
  let memory = forger.remembered();
  forger.append(KIND.NOTICE, discarded([[2, 2, forger.hash(2)]]));
  let { codes, out } = forger.check({ skip: [2], memory });
  assert.deepEqual(codes, ['notice-hides-delivered']);
  assert.ok(out.includes('saw seq 2 earlier, of a kind the device never evicts, and it is absent: notice hides a delivered object'), out);

  forger = new Forger();
  forger.start(1);
  forger.append(KIND.SEGMENT, segment(0));
  forger.append(KIND.SEGMENT, segment(1));
  memory = forger.remembered(); // the local folder's copy: 0..3
  forger.append(KIND.NOTICE, discarded([[2, 3, forger.hash(3)]]));
  ({ codes, out } = forger.check({ skip: [2, 3], memory }));
  assert.deepEqual(codes, [], out);
  assert.ok(out.includes('seq 2..3 announced as quota'), out);
});

/** 0 keyring, 1 init, 2 ring, 3..5 the clip's segments 0..2, 6 clip-end, then continuous segments. */
function clipWithContinuous(forger, continuous) {
  forger.keyringObject();
  forger.append(KIND.INIT, { stream: STREAM, codec: 'h264', width: 320n, height: 240n, fps: 15n });
  forger.append(KIND.EVENT, { type: 'ring', clip: CLIP, stream: STREAM, first_index: 0n, position: 1.5 });
  for (let index = 0; index < 3; index++) forger.append(KIND.SEGMENT, segment(index));
  forger.append(KIND.NOTICE, clipEnd(2));
  for (let index = 3; index < 3 + continuous; index++) forger.append(KIND.SEGMENT, segment(index));
}

test('rules: eviction order, continuous recording first', () => {
  let forger = new Forger();
  clipWithContinuous(forger, 2); // continuous: seq 7, 8
  forger.append(KIND.NOTICE, discarded([[4, 4, forger.hash(4)]])); // the clip's index 1
  let { codes, out } = forger.check({ skip: [4] });
  assert.deepEqual(codes, ['eviction-order']);
  assert.ok(
    out.includes(
      `${name(9)}: quota notice seq 9 evicted segment(s) 1 of clip ${CLIP.slice(0, 8)} while continuous recording seq 7, ` +
        'sealed after them and before the eviction, survived: eviction order violated',
    ),
    out,
  );

  forger = new Forger();
  clipWithContinuous(forger, 2);
  forger.append(KIND.NOTICE, discarded([[7, 7, forger.hash(7)]]));
  ({ codes, out } = forger.check({ skip: [7] }));
  assert.deepEqual(codes, [], out);

  forger = new Forger(); // seq 7 is the continuous segment whose spooling forced the eviction
  clipWithContinuous(forger, 1);
  forger.append(KIND.NOTICE, discarded([[4, 4, forger.hash(4)]]));
  ({ codes, out } = forger.check({ skip: [4] }));
  assert.deepEqual(codes, [], out);
});

test('rules: stanzas are exactly the keyring of their epoch', () => {
  let forger = new Forger();
  forger.start(1);
  forger.append(KIND.EVENT, event(), { keyring: keyringOf(1, PHONE, ['mallory', PARTNER[1]]) });
  let { codes, out } = forger.check();
  assert.deepEqual(codes, ['stanzas']);
  assert.ok(
    out.includes(`${name(2)}: keyring epoch 1: seq 2: stanzas are not exactly the keyring: 1 stanza(s) for keys not in the keyring`),
    out,
  );

  forger = new Forger();
  forger.keyringObject(keyringOf(2, PHONE, ['bob', PARTNER[1]]));
  forger.append(KIND.EVENT, event(), { keyring: keyringOf(2, PHONE) });
  ({ codes, out } = forger.check());
  assert.deepEqual(codes, ['stanzas']);
  assert.ok(out.includes("seq 1: stanzas are not exactly the keyring: no stanza for 'bob'"), out);

  forger = new Forger(); // seq 2, not for this phone, lies between two objects of epoch 1
  forger.start(1);
  forger.append(KIND.EVENT, event(), { keyring: keyringOf(1, ['other', STRANGER[1]]) });
  forger.append(KIND.EVENT, event());
  ({ codes, out } = forger.check());
  assert.deepEqual(codes, ['stanzas']);
  assert.ok(
    out.includes(
      'keyring epoch 1 (the objects around it were sealed under it): seq 2: stanzas are not exactly the keyring: ' +
        "1 stanza(s) for keys not in the keyring; no stanza for 'test-phone'",
    ),
    out,
  );
});

test('rules: keyring epochs never go back, within the set or behind what the phone saw', () => {
  const newer = keyringOf(2, PHONE, PARTNER);
  let forger = new Forger();
  forger.keyringObject(newer);
  forger.keyringObject(); // epoch 1 again: a restored keyring file
  let { codes, out } = forger.check();
  assert.deepEqual(codes, ['keyring-rollback']);
  assert.ok(out.includes('keyring rollback: seq 1 is sealed under epoch 1, but seq 0 was already'), out);

  forger = new Forger();
  forger.keyringObject(newer);
  forger.append(KIND.EVENT, event(), { keyring: newer });
  const memory = forger.remembered();
  assert.equal(memory.keyring.epoch, 2);
  forger.keyringObject(); // seq 2, epoch 1
  ({ codes, out } = forger.check({ skip: [0, 1], memory }));
  assert.ok(codes.includes('keyring-rollback'), out);
  assert.ok(
    out.includes('keyring rollback: seq 2 is sealed under epoch 1, but this phone has already seen keyring epoch 2 (seq 0)'),
    out,
  );
});

test('rules: one epoch, two keyrings', () => {
  const forger = new Forger();
  forger.keyringObject();
  forger.keyringObject(keyringOf(1, PHONE, PARTNER));
  const { out, result } = forger.check();
  assert.ok(problemCodes(result).includes('keyring'), out);
  assert.ok(out.includes(`${name(1)}: keyring epoch 1 differs from the keyring of the same epoch in seq 0: one epoch, two keyrings`), out);
});

test('rules: an object withheld from this phone does not excuse a gap', () => {
  let forger = new Forger();
  forger.start(4);
  forger.append(KIND.EVENT, event(), { keyring: THEIRS }); // 5
  forger.keyring = keyringOf(2, PHONE);
  forger.keyringObject(); // 6
  forger.append(KIND.EVENT, event());
  let { codes, out } = forger.check({ skip: [2, 3] });
  assert.deepEqual(codes, ['missing', 'stanzas']);
  assert.ok(
    out.includes(
      `FAIL   ${name(5)}: seq 5 lacks this phone's stanza, but lies between objects sealed under keyring epochs 1 and 2, ` +
        'and every keyring from one to the other lists this phone (withheld from it, or forged)',
    ),
    out,
  );
  assert.ok(out.includes(`FAIL   device ${SHORT}: missing seq 2..3 (deleted or never delivered)\n`), out);

  forger = new Forger();
  forger.start(4);
  const memory = forger.remembered(); // remembers 0..4
  forger.append(KIND.EVENT, event(), { keyring: THEIRS }); // 5
  ({ codes, out } = forger.check({ skip: [2, 3], memory }));
  assert.deepEqual(codes, ['missing']);
  assert.ok(out.includes(`FAIL   device ${SHORT}: missing seq 2..3 (deleted or never delivered; this phone saw seq 2 earlier)`), out);
});

test('rules: a late enrolled or revoked phone cannot confirm gaps and says so', () => {
  let forger = new Forger(THEIRS);
  forger.keyringObject();
  forger.append(KIND.EVENT, event());
  forger.append(KIND.SEGMENT, segment(0));
  forger.append(KIND.SEGMENT, segment(1));
  forger.append(KIND.NOTICE, discarded([[2, 3, forger.hash(3)]]));
  forger.append(KIND.EVENT, event());
  forger.keyring = keyringOf(2, STRANGER, PHONE);
  forger.keyringObject(); // 6 enrols this phone
  forger.append(KIND.EVENT, event());
  let { result, out } = forger.check({ skip: [2, 3] });
  assert.ok(result.ok, out);
  assert.ok(
    out.includes(
      `note   device ${SHORT}: seq 2..3 absent, followed by objects not sealed to this phone (seq 5 the newest): ` +
        'cannot confirm whether a notice among them announced it',
    ),
    out,
  );

  forger = new Forger();
  forger.start(1);
  for (let index = 0; index < 3; index++) forger.append(KIND.SEGMENT, segment(index)); // 2..4
  forger.keyring = keyringOf(2, STRANGER);
  forger.keyringObject(); // 5, not sealed to this phone
  forger.append(KIND.NOTICE, discarded([[2, 3, forger.hash(3)]])); // 6
  ({ result, out } = forger.check({ skip: [2, 3] }));
  assert.ok(result.ok, out);
  assert.ok(out.includes(`note   device ${SHORT}: seq 2..3 absent, followed by objects`), out);
});

test('rules: every epoch is published, but for a restart notice right before its keyring', () => {
  let forger = new Forger();
  forger.start(2);
  forger.append(KIND.EVENT, event(), { keyring: keyringOf(2, PHONE, PARTNER) });
  let { codes, out } = forger.check();
  assert.deepEqual(codes, ['unpublished-keyring']);
  assert.ok(
    out.includes(
      `FAIL   ${name(3)}: seq 3 is sealed under keyring epoch 2, but no keyring object of epoch 2 comes before it ` +
        '(present or remembered): a keyring never published',
    ),
    out,
  );

  forger = new Forger();
  forger.start(3);
  forger.keyring = keyringOf(2, PHONE, PARTNER);
  forger.seal(10, forger.hash(3), KIND.NOTICE, restart([3, forger.hash(3)], 4, 9));
  forger.keyringObject(); // 11
  forger.append(KIND.EVENT, event());
  ({ codes, out } = forger.check());
  assert.deepEqual(codes, [], out);

  forger = new Forger();
  forger.start(3);
  const changed = keyringOf(2, PHONE, PARTNER);
  forger.seal(10, forger.hash(3), KIND.NOTICE, restart([3, forger.hash(3)], 4, 9), { keyring: changed });
  forger.append(KIND.EVENT, event(), { keyring: changed });
  ({ codes, out } = forger.check());
  assert.deepEqual(codes, ['unpublished-keyring']);
  assert.ok(out.includes(`${name(10)}: seq 10 is sealed under keyring epoch 2, but no keyring`), out);
  assert.ok(out.includes(`${name(11)}: seq 11 is sealed under keyring epoch 2, but no keyring`), out);
});

test('rules: announced ranges overlap only when evicted again after a restart', () => {
  let forger = new Forger();
  quotaRun(forger); // 6 announces 2..3
  forger.seal(7, forger.hash(6), KIND.NOTICE, restart([6, forger.hash(6)], 7, 6));
  forger.keyringObject(); // 8
  forger.append(KIND.NOTICE, discarded([[2, 3, forger.hash(3)]])); // 9
  let { codes, out } = forger.check({ skip: [2, 3] });
  assert.deepEqual(codes, [], out);
  assert.ok(
    out.includes(`note   device ${SHORT}: range 2..3 announced by seq 9 overlaps range 2..3 announced by seq 6 (evicted again after a restart)`),
    out,
  );

  forger = new Forger();
  quotaRun(forger);
  forger.seal(12, forger.hash(6), KIND.NOTICE, restart([6, forger.hash(6)], 7, 11));
  forger.keyringObject();
  forger.append(KIND.NOTICE, discarded([[7, 8, ZERO]]));
  ({ codes, out } = forger.check({ skip: [2, 3] }));
  assert.ok(codes.includes('overlapping-notices'), out);
  assert.ok(out.includes(`FAIL   device ${SHORT}: range 7..11 announced by seq 12 overlaps range 7..8 announced by seq 14\n`), out);
});

test('rules: a restart right after a quota range must name its last object', () => {
  const forger = new Forger();
  forger.start(1);
  for (let index = 0; index < 3; index++) forger.append(KIND.SEGMENT, segment(index)); // 2..4
  const fake = sha256(utf8('fake'));
  forger.seal(5, fake, KIND.NOTICE, restart([4, fake], 5, 4));
  forger.keyringObject(); // 6
  forger.append(KIND.NOTICE, discarded([[3, 4, forger.hash(4)]])); // 7
  const { codes, out } = forger.check({ skip: [3, 4] });
  assert.deepEqual(codes, ['replaced']);
  assert.ok(
    out.includes(
      `FAIL   ${name(5)}: chain: restart notice seq 5 does not follow the gap notice seq 7 announced ` +
        "(its previous is not seq 4 with the range's last_hash)",
    ),
    out,
  );
});

test('rules: a clip ends once, on the stream of its events, and its events agree', () => {
  const forger = new Forger();
  forger.keyringObject();
  forger.append(KIND.EVENT, { type: 'ring', clip: CLIP, stream: STREAM, first_index: 0n });
  forger.append(KIND.SEGMENT, segment(0));
  forger.append(KIND.NOTICE, clipEnd(0)); // 3
  forger.append(KIND.NOTICE, clipEnd(0, { stream: '44'.repeat(16) })); // 4
  forger.append(KIND.EVENT, { type: 'motion', clip: CLIP, stream: STREAM, first_index: 1n }); // 5
  const { codes, out } = forger.check();
  assert.deepEqual(codes, ['clip']);
  const clip = CLIP.slice(0, 8);
  assert.ok(out.includes(`FAIL   ${name(4)}: clip-end notice seq 4 ends clip ${clip}, which the clip-end notice seq 3 already ended`), out);
  assert.ok(out.includes(`FAIL   ${name(4)}: clip-end notice seq 4 names stream 44444444 for clip ${clip}, whose event seq 1 names stream 22222222`), out);
  assert.ok(
    out.includes(`FAIL   ${name(5)}: event seq 5 of clip ${clip} names stream 22222222 from index 1, but event seq 1 of the same clip names stream 22222222 from index 0`),
    out,
  );
});

test('rules: an object that broke a payload rule holds its place but excuses no gap', () => {
  const forger = new Forger();
  forger.start(3);
  const entries = forger.entries([1]);
  // Seq 2 as an object this phone cannot open (its stanzas are still the keyring's): the
  // gap before it may have been announced by a notice among such objects.
  entries[1] = { ...entries[1], contents: null };
  let result = checkDeviceChain(entries);
  assert.deepEqual(problemCodes(result), []);
  assert.deepEqual(
    result.findings.map((f) => f.message),
    ['seq 1 absent, followed by objects not sealed to this phone (seq 2 the newest): cannot confirm whether a notice among them announced it'],
  );
  // Seq 2 opened and broke a payload rule: it is no notice for others, and excuses nothing.
  entries[1] = { ...entries[1], rejected: true };
  result = checkDeviceChain(entries);
  assert.deepEqual(problemCodes(result), ['missing']);
});

// --- the phone's memory (FORMAT §6.3, doorbell/phone/memory.py) --------------------------------

test('memory: runs are merged, bounded to the newest, and only move forward', () => {
  assert.deepEqual(seqsAsRuns([5n, 1n, 2n, 3n, 7n, 6n]), [[1n, 3n], [5n, 7n]]);
  const many = runsOf(Array.from({ length: MAX_RUNS + 10 }, (_, i) => [2n * BigInt(i), 2n * BigInt(i)]));
  assert.equal(many.length, MAX_RUNS);
  assert.deepEqual(many[0], [20n, 20n]); // the oldest are forgotten
  const before = { head: null, keyring: null, seen: [[0n, 3n]], kept: [] };
  const after = merged(before, { head: null, keyring: null, seen: [[4n, 4n], [9n, 9n]], kept: [] });
  assert.deepEqual(after.seen, [[0n, 4n], [9n, 9n]]);
  assert.equal(seenIn(after, 5n, 8n), null);
  assert.equal(seenIn(after, 5n, 9n), 9n);
  const head = { head: { seq: 9n, hash: ZERO }, keyring: null, seen: [], kept: [] };
  assert.equal(merged(after, head).head.seq, 9n);
  assert.equal(merged(merged(after, head), { ...head, head: { seq: 2n, hash: ZERO } }).head.seq, 9n, 'never back');
  assert.equal(merged(after, { head: null, keyring: null, seen: [[9n, 9n]], kept: [] }), after, 'nothing new: the same');
});

test('memory: seen.json reads and writes as the Python phone does', () => {
  const id = DEVICE_HEX;
  // Written by doorbell/phone/memory.py (json.dumps, indent=1), u64 numbers exact.
  const text = [
    '{',
    ' "version": 2,',
    ' "devices": {',
    `  "${id}": {`,
    '   "head": {',
    '    "seq": 9223372036854775813,',
    `    "hash": "${'ab'.repeat(32)}"`,
    '   },',
    '   "seen": [',
    '    [',
    '     0,',
    '     3',
    '    ],',
    '    [',
    '     5,',
    '     9223372036854775813',
    '    ]',
    '   ],',
    '   "kept": [',
    '    [',
    '     0,',
    '     1',
    '    ]',
    '   ]',
    '  }',
    ' }',
    '}',
    '',
  ].join('\n');
  const memory = PhoneMemory.fromJSON(text);
  assert.equal(memory.get(id).head.seq, 2n ** 63n + 5n);
  assert.equal(memory.toJSON(), text);
  assert.equal(memory.get('00'.repeat(32)), NOTHING);
});

test("memory: a remembered keyring is written as the device's own document", () => {
  const v2 = VECTORS.keyring_v2.document; // the body of a keyring object Keyring.to_json wrote
  const keyring = parseKeyring(JSON.stringify(v2));
  assert.equal(keyringDocument(keyring), JSON.stringify(v2, null, 2) + '\n');
  const memory = new PhoneMemory();
  memory.update(DEVICE_HEX, { head: null, keyring: knownKeyring(4n, keyring), seen: [], kept: [] });
  const again = PhoneMemory.fromJSON(memory.toJSON()).get(DEVICE_HEX).keyring;
  assert.equal(again.seq, 4n);
  assert.equal(again.epoch, 4);
  assert.ok(sameKeyring(again.keyring, keyring));
  // A version 1 document is the same keyring as the version 2 document it is written as.
  const v1 = parseKeyring(JSON.stringify(VECTORS.keyring));
  assert.ok(sameKeyring(parseKeyring(keyringDocument(v1)), v1));
  assert.ok(!sameKeyring(v1, keyringOf(v1.epoch, PHONE)));
});

for (const [document, reason] of [
  ['', 'not JSON'],
  ['{"version": 3, "devices": {}}', 'expected an object with version 1 or 2'],
  ['{"version": 2, "devices": {}, "more": 1}', "expected exactly the keys 'version' and 'devices' (an object)"],
  ['{"version": 2, "devices": {"ABC": {}}}', "device 'ABC': not a device id of 64 lower-case hex digits"],
  [`{"version": 1, "devices": {"${'0'.repeat(64)}": {"seen": []}}}`, "expected an object with keys among ['head', 'keyring']"],
  [`{"version": 2, "devices": {"${'0'.repeat(64)}": {"head": {"seq": -1, "hash": "${'0'.repeat(64)}"}}}}`, 'head must be'],
  [`{"version": 2, "devices": {"${'0'.repeat(64)}": {"seen": [[3, 2]]}}}`, 'seen must be at most 4096 [first, last] u64 pairs'],
  [`{"version": 2, "devices": {"${'0'.repeat(64)}": {"kept": [[0, 18446744073709551616]]}}}`, 'kept must be at most 4096'],
  [`{"version": 2, "devices": {"${'0'.repeat(64)}": {"keyring": {"seq": 0, "document": "{}"}}}}`, 'not a Doorbell keyring'],
  ['{"version": 2, "version": 2, "devices": {}}', 'duplicate key'],
]) {
  test(`memory: a damaged seen.json is an error, never empty: ${reason}`, () => {
    assert.throws(
      () => PhoneMemory.fromJSON(document),
      (error) =>
        error.code === 'damaged' &&
        error.message.startsWith('seen.json is damaged (') &&
        error.message.includes(reason) &&
        error.message.endsWith('(removed, this phone forgets which objects and keyrings it has seen)'),
    );
  });
}

// --- live objects against the memory (doorbell/phone/watch.py, Watcher._against_memory) ---------

test('live: an event not above the head is a replay, or a fork at the head itself', () => {
  const forger = new Forger();
  forger.start(3);
  const memory = new PhoneMemory();
  memory.remember(checkDeviceChain(forger.entries()));
  const [, one, , three] = forger.entries();
  const opened = { epoch: 1 };
  assert.deepEqual(memory.liveProblem(one, opened), {
    what:
      'REPLAY: event 1 is not newer than seq 3, which this phone has already seen (replayed or held back by the broker): not a new ring',
    why: 'REPLAY: not newer than an event this phone has seen',
  });
  assert.equal(memory.liveProblem(three, opened).why, 'REPLAY: not newer than an event this phone has seen');
  const forked = { ...three, chainHash: sha256(utf8('other')) };
  assert.deepEqual(memory.liveProblem(forked, opened), { what: 'FORK: object 3 differs from the one this phone saw before', why: FORKED });
  forger.append(KIND.EVENT, event());
  const four = forger.entries().at(-1);
  assert.equal(memory.liveProblem(four, opened), null);
  assert.equal(memory.rememberLive(four), true);
  assert.equal(memory.rememberLive(four), false);
  assert.equal(memory.get(DEVICE_HEX).head.seq, 4n);
  assert.deepEqual(memory.get(DEVICE_HEX).kept, [[0n, 4n]]);
});

test('live: keyrings move forward, and events are sealed under the newest one seen', () => {
  const newer = keyringOf(2, PHONE, PARTNER);
  const forger = new Forger();
  forger.keyringObject(newer); // 0, epoch 2
  const memory = new PhoneMemory();
  const [zero] = forger.entries();
  assert.equal(memory.isKnownKeyring(DEVICE_HEX, 0n, newer), false);
  assert.equal(memory.rememberLive(zero, newer), true);
  assert.equal(memory.isKnownKeyring(DEVICE_HEX, 0n, newer), true, 'retained on the broker: not news');
  assert.deepEqual(memory.liveProblem(zero, { epoch: 2 }, keyringOf(2, PHONE)), {
    what: 'FORK: keyring object 0 differs from the one seen before',
    why: FORKED,
  });
  forger.keyringObject(MINE); // 1, epoch 1: a restored keyring file
  const rolledBack = forger.entries().at(-1);
  assert.deepEqual(memory.liveProblem(rolledBack, { epoch: 1 }, MINE), {
    what: 'keyring rollback: seq 1 is sealed under epoch 1, but this phone has already seen keyring epoch 2 (seq 0)',
    why: 'keyring rollback',
  });
  forger.seal(1, forger.hash(0), KIND.EVENT, event(), { keyring: keyringOf(3, PHONE, PARTNER) });
  assert.deepEqual(memory.liveProblem(forger.entries().at(-1), { epoch: 3 }), {
    what: 'event 1 is sealed under keyring epoch 3, but the newest keyring published is epoch 2: a keyring never published',
    why: 'sealed under a keyring never published',
  });
  forger.seal(1, forger.hash(0), KIND.EVENT, event(), { keyring: keyringOf(2, PHONE) });
  assert.deepEqual(memory.liveProblem(forger.entries().at(-1), { epoch: 2 }), {
    what: "seq 1: stanzas are not exactly the keyring: no stanza for 'partner', listed in the keyring",
    why: 'stanzas that are not exactly the keyring',
  });
  forger.seal(1, forger.hash(0), KIND.EVENT, event(), { keyring: newer });
  assert.equal(memory.liveProblem(forger.entries().at(-1), { epoch: 2 }), null);
});
