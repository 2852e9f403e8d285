// Live events and keyrings through Watcher.handle, fed the committed vector objects
// (tests/vectors/v1.json `objects`: an event at seq 0, a segment, a keyring object at seq 2).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { fromHex } from '../src/bytes.js';
import { Reader } from '../src/format/object.js';
import { bytesKeyHolder } from '../src/crypto/kem.js';
import { PhoneMemory, knownKeyring } from '../src/chain/memory.js';
import { parseKeyring } from '../src/format/keyring.js';
import { Watcher } from '../src/watch.js';

const VECTORS = JSON.parse(readFileSync(new URL('../../tests/vectors/v1.json', import.meta.url), 'utf8'));
const SUITE = { x25519: 1, 'mlkem768-x25519': 2 };
const DEVICE = VECTORS.device.device_id;
const EVENT = fromHex(VECTORS.objects.find((o) => o.kind === 3).object);
const KEYRING = fromHex(VECTORS.objects.find((o) => o.kind === 4).object);
const SEGMENT = fromHex(VECTORS.objects.find((o) => o.kind === 2).object);
const KEYS = await Promise.all(VECTORS.phones.map((p) => bytesKeyHolder(SUITE[p.suite], fromHex(p.secret_raw))));
const topic = (leaf, device = DEVICE) => `doorbell/${device.slice(0, 16)}/${leaf}`;

function watcher(memory = new PhoneMemory(), ownKey = null) {
  const seen = { events: [], keyrings: [], rejected: [], remembered: 0 };
  const reader = new Reader({
    devices: [fromHex(VECTORS.device.public_raw)],
    keys: KEYS,
  });
  const watch = new Watcher({
    reader,
    memory,
    doorbells: [{ deviceIdHex: DEVICE, devicePublicKey: fromHex(VECTORS.device.public_raw), name: 'front door' }],
    onEvent: (event) => seen.events.push(event),
    ownKey,
    onKeyring: (device, keyring, mine) => seen.keyrings.push([device, keyring, mine]),
    onRejected: (rejection) => seen.rejected.push(rejection),
    onRemembered: () => (seen.remembered += 1),
  });
  return { watch, seen, memory };
}

test('a fresh event is a ring, with its snapshot, and is remembered', async () => {
  const { watch, seen, memory } = watcher();
  await watch.handle('doorbell', topic('event'), EVENT);
  assert.deepEqual(seen.rejected, []);
  assert.equal(seen.events.length, 1);
  const [event] = seen.events;
  assert.equal(event.deviceIdHex, DEVICE);
  assert.equal(event.doorbellName, 'front door');
  assert.equal(event.seq, 0);
  assert.equal(event.type, 'ring');
  assert.equal(event.clip, '0'.repeat(32));
  assert.equal(event.timeUs, 1795000000000000n);
  assert.deepEqual([...event.snapshot.subarray(0, 2)], [0xff, 0xd8]);
  assert.ok(event.snapshotUrl === null || event.snapshotUrl.startsWith('blob:'));
  assert.ok(event.receivedAt instanceof Date);
  assert.equal(seen.remembered, 1);
  assert.equal(memory.remembered().get(DEVICE).head.seq, 0n);
});

test('the same message again (QoS 1, or retained) is dropped without a word', async () => {
  const { watch, seen } = watcher();
  await watch.handle('doorbell', topic('event'), EVENT);
  await watch.handle('doorbell', topic('event'), EVENT);
  assert.equal(seen.events.length, 1);
  assert.deepEqual(seen.rejected, []);
});

test('an event not newer than what this phone saw is a replay, never a ring', async () => {
  const { watch, seen } = watcher();
  await watch.handle('doorbell', topic('keyring'), KEYRING);
  assert.equal(seen.keyrings.length, 1);
  assert.equal(seen.keyrings[0][1].epoch, 2);
  assert.equal(seen.keyrings[0][2], null);
  await watch.handle('doorbell', topic('event'), EVENT);
  assert.deepEqual(seen.events, []);
  assert.equal(seen.rejected.length, 1);
  assert.equal(seen.rejected[0].why, 'REPLAY: not newer than an event this phone has seen');
  assert.match(seen.rejected[0].what, /^REPLAY: event 0 is not newer than seq 2, which this phone has already seen/);
  assert.equal(seen.rejected[0].topic, topic('event'));
});

test('an event that differs from the one remembered at its seq is a fork', async () => {
  const memory = new PhoneMemory();
  memory.update(DEVICE, { head: { seq: 0n, hash: new Uint8Array(32).fill(7) }, keyring: null, seen: [[0n, 0n]], kept: [[0n, 0n]] });
  const { watch, seen } = watcher(memory);
  await watch.handle('doorbell', topic('event'), EVENT);
  assert.deepEqual(seen.events, []);
  assert.equal(seen.rejected.length, 1);
  assert.match(seen.rejected[0].why, /^FORK: a forked chain/);
  assert.equal(seen.rejected[0].what, 'FORK: object 0 differs from the one this phone saw before');
});

test('a keyring retained on the broker is not news the second time', async () => {
  const { watch, seen, memory } = watcher();
  await watch.handle('doorbell', topic('keyring'), KEYRING);
  await watch.handle('doorbell', topic('keyring'), KEYRING);
  assert.equal(seen.keyrings.length, 1);
  assert.deepEqual(seen.rejected, []);
  // A watcher started later, with the same memory: the retained keyring is known.
  const later = watcher(memory);
  await later.watch.handle('doorbell', topic('keyring'), KEYRING);
  assert.deepEqual(later.seen.keyrings, []);
  assert.deepEqual(later.seen.rejected, []);
});

test('what is not an event or keyring of the doorbell its topic names is rejected', async () => {
  const { watch, seen } = watcher();
  await watch.handle('doorbell', topic('keyring'), EVENT);
  await watch.handle('doorbell', topic('event', 'f'.repeat(64)), EVENT);
  await watch.handle('doorbell', topic('event'), SEGMENT);
  await watch.handle('doorbell', 'doorbell/nothing/event', EVENT);
  await watch.handle('doorbell', topic('event'), EVENT.subarray(0, 40));
  await watch.handle('doorbell', topic('event'), new Uint8Array(8 * 1024 * 1024 + 1));
  assert.deepEqual(
    seen.rejected.map((r) => r.why),
    [
      'on the wrong topic',
      'signed by another doorbell than its topic names',
      'on the wrong topic',
      'not a doorbell/<device>/event or /keyring topic',
      'not a well-formed sealed object',
      'larger than a doorbell sends',
    ],
  );
  assert.equal(seen.rejected[0].what, 'object 0 is of kind EVENT; this topic carries keyring objects');
  assert.deepEqual(seen.events, []);
});

test('messages are handled one at a time, in the order they arrived', async () => {
  const { watch, seen } = watcher();
  const order = [];
  watch.onRejected = (r) => order.push(r.why);
  watch.onEvent = () => order.push('event');
  await Promise.all([
    watch.handle('doorbell', topic('keyring'), EVENT),
    watch.handle('doorbell', topic('event'), EVENT),
    watch.handle('doorbell', 'elsewhere', EVENT),
  ]);
  assert.deepEqual(order, ['on the wrong topic', 'event', 'not a doorbell/<device>/event or /keyring topic']);
  assert.equal(seen.events.length, 0);
});

test("a keyring names this phone's own entry", async () => {
  const own = fromHex(VECTORS.phones.find((p) => p.name === 'test-phone-x25519').public_raw);
  const { watch, seen } = watcher(new PhoneMemory(), own);
  await watch.handle('doorbell', topic('keyring'), KEYRING);
  assert.equal(seen.keyrings[0][2], 'test-phone-x25519');
});

/** A memory that knows the vector keyring under `epoch` (as if carried by seq 0), no head. */
function knowing(epoch) {
  const memory = new PhoneMemory();
  const keyring = parseKeyring(JSON.stringify({ ...VECTORS.keyring, epoch }));
  memory.update(DEVICE, { head: null, keyring: knownKeyring(0n, keyring), seen: [], kept: [] });
  return memory;
}

test('an event sealed under an epoch newer than every keyring published is rejected', async () => {
  const { watch, seen } = watcher(knowing(0));
  await watch.handle('doorbell', topic('event'), EVENT);
  assert.deepEqual(seen.events, []);
  assert.deepEqual(seen.rejected.map((r) => r.why), ['sealed under a keyring never published']);
  assert.equal(
    seen.rejected[0].what,
    'event 0 is sealed under keyring epoch 1, but the newest keyring published is epoch 0: a keyring never published',
  );
});

test('an event whose stanzas are not exactly its keyring is rejected', async () => {
  // The event (epoch 1) has one stanza; the keyring of epoch 1 lists two phones.
  const { watch, seen } = watcher(knowing(1));
  await watch.handle('doorbell', topic('event'), EVENT);
  assert.deepEqual(seen.events, []);
  assert.deepEqual(seen.rejected.map((r) => r.why), ['stanzas that are not exactly the keyring']);
  assert.equal(
    seen.rejected[0].what,
    "seq 0: stanzas are not exactly the keyring: no stanza for 'test-phone-pq', listed in the keyring",
  );
});
