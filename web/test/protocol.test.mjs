// The enrolment protocol (PROTOCOL §1-5) against tests/vectors/protocol-v1.json, the
// refusals of bad links, and the phone's conversation with a doorbell that answers over
// an in-memory broker.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { fromBase64, fromHex, toBase64, toHex, utf8 } from '../src/bytes.js';
import { decodeKeyString, PREFIX } from '../src/keystrings.js';
import { importSigningSeed } from '../src/keystore.js';
import {
  checkPhoneName,
  deviceKeyString,
  fingerprint,
  identityString,
  parseDeviceKey,
  parseIdentity,
  signingKeyString,
} from '../src/protocol/identity.js';
import { parseLink } from '../src/protocol/link.js';
import {
  confirmationCode,
  enrol,
  enrolmentWindow,
  EnrolmentError,
  helloSignedBytes,
  makeHello,
  openMessage,
  sealMessage,
} from '../src/protocol/enrol.js';

const vectors = JSON.parse(readFileSync(new URL('../../tests/vectors/protocol-v1.json', import.meta.url)));
const BEFORE = vectors.expires - 600; // a moment the vector's link is still open

function vectorPhone() {
  const seed = decodeKeyString(vectors.phone_signing_secret, [PREFIX.signingSecret]).raw;
  const identity = parseIdentity(vectors.identity);
  const key = importSigningSeed(seed);
  return {
    ...identity,
    sign: async (message) => new Uint8Array(await crypto.subtle.sign('Ed25519', await key, message)),
  };
}

test('the vector link parses to its device, broker, secret and expiry', () => {
  const link = parseLink(vectors.link, { now: BEFORE });
  assert.equal(toHex(link.device), vectors.device_public_raw);
  assert.equal(toHex(link.deviceId), vectors.device_id);
  assert.equal(link.host, 'broker.example');
  assert.equal(link.port, 8883);
  assert.equal(link.tls, true);
  assert.equal(link.prefix, 'doorbell');
  assert.equal(toHex(link.secret), vectors.secret);
  assert.equal(link.expires, vectors.expires);
});

test('a link read from a QR code or pasted with spaces around it is the same link', () => {
  for (const text of [`  ${vectors.link}\n`, `\t${vectors.link}\r\n`, `\u3000${vectors.link}`]) {
    assert.equal(toHex(parseLink(text, { now: BEFORE }).secret), vectors.secret);
  }
});

test('the window id, both keys, the code key and the topics derive from the secret', async () => {
  const window = await enrolmentWindow(parseLink(vectors.link, { now: BEFORE }));
  assert.equal(toHex(window.windowId), vectors.window_id);
  assert.equal(toHex(window.phoneToDoorbell), vectors.phone_to_doorbell);
  assert.equal(toHex(window.doorbellToPhone), vectors.doorbell_to_phone);
  assert.equal(toHex(window.codeKey), vectors.code_key);
  assert.equal(window.phoneTopic, vectors.topic_phone);
  assert.equal(window.doorbellTopic, vectors.topic_doorbell);
});

test('the hello signs the vector bytes, and seals and opens to the vector message', async () => {
  const link = parseLink(vectors.link, { now: BEFORE });
  const window = await enrolmentWindow(link);
  const phone = vectorPhone();
  const nonce = fromBase64(vectors.hello.nonce);
  const signed = helloSignedBytes(link, window, nonce, phone, 'alice-phone');
  assert.equal(toHex(signed), vectors.hello_signed_bytes);
  const hello = await makeHello({ link, window, identity: phone, name: 'alice-phone', nonce });
  assert.deepEqual(hello.message, vectors.hello);
  assert.ok(ed25519.verify(fromBase64(hello.message.signature), signed, phone.signingPublicKey));

  const sealedVector = fromHex(vectors.hello_sealed);
  const sealed = await sealMessage(window.phoneToDoorbell, window.phoneTopic, hello.message, sealedVector.subarray(0, 12));
  assert.equal(toHex(sealed), vectors.hello_sealed);
  assert.deepEqual(await openMessage(window.phoneToDoorbell, window.phoneTopic, sealedVector), vectors.hello);
});

test("the code is the vector's, and the doorbell's code message opens to the vector", async () => {
  const link = parseLink(vectors.link, { now: BEFORE });
  const window = await enrolmentWindow(link);
  const hello = { nonce: fromBase64(vectors.hello.nonce), identity: parseIdentity(vectors.identity), name: 'alice-phone' };
  assert.equal(await confirmationCode(link, window, hello, fromHex(vectors.doorbell_nonce)), vectors.code);

  const sealed = fromHex(vectors.code_sealed);
  const opened = await openMessage(window.doorbellToPhone, window.doorbellTopic, sealed, 1 << 20);
  assert.deepEqual(opened, vectors.code_message);
  const again = await sealMessage(window.doorbellToPhone, window.doorbellTopic, opened, sealed.subarray(0, 12));
  assert.equal(toHex(again), vectors.code_sealed);
});

test('a message under another key, for another topic, altered or garbled does not open', async () => {
  const link = parseLink(vectors.link, { now: BEFORE });
  const window = await enrolmentWindow(link);
  const sealed = fromHex(vectors.code_sealed);
  const altered = sealed.slice();
  altered[20] ^= 1;
  const cases = [
    [window.phoneToDoorbell, window.doorbellTopic, sealed, /not sealed under this window's secret/],
    [window.doorbellToPhone, window.phoneTopic, sealed, /not sealed under this window's secret/],
    [window.doorbellToPhone, window.doorbellTopic, altered, /not sealed under this window's secret/],
    [window.doorbellToPhone, window.doorbellTopic, sealed.subarray(0, 27), /27-byte message/],
    [window.doorbellToPhone, window.doorbellTopic, sealed, /119-byte message/, 100],
  ];
  for (const [key, topic, payload, pattern, limit] of cases) {
    await assert.rejects(openMessage(key, topic, payload, limit), pattern);
  }
  for (const [plaintext, pattern] of [
    ['{"type":"code","type":"welcome"}', /duplicate key ['"]type['"]/],
    ['["code"]', /without a type/],
    ['{"type":1}', /without a type/],
    ['{"type":"code",}', /garbled message/],
  ]) {
    const payload = await sealRaw(window.doorbellToPhone, window.doorbellTopic, utf8(plaintext));
    await assert.rejects(openMessage(window.doorbellToPhone, window.doorbellTopic, payload), pattern);
  }
});

test('each bad link is refused, naming what is wrong', () => {
  const link = vectors.link;
  const set = (field, value) => link.replace(new RegExp(`([?&]${field}=)[^&]*`), `$1${value}`);
  const drop = (field) => link.replace(new RegExp(`&${field}=[^&]*`), '');
  const k = link.match(/[?&]k=([^&]*)/)[1];
  const s = link.match(/[?&]s=([^&]*)/)[1];
  const base32 = (bytes) => {
    const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
    let bits = '';
    for (const byte of bytes) bits += byte.toString(2).padStart(8, '0');
    bits = bits.padEnd(Math.ceil(bits.length / 5) * 5, '0');
    return bits.match(/.{5}/g).map((b) => alphabet[parseInt(b, 2)]).join('');
  };
  const pPlusOne = new Uint8Array(32).fill(0xff);
  pPlusOne[0] = 0xee; // y = p + 1, which encodes the identity point
  pPlusOne[31] = 0x7f;
  const negativeZero = new Uint8Array(32);
  negativeZero[0] = 1; // y = 1 (x = 0) with the sign bit set
  negativeZero[31] = 0x80;
  const cases = [
    ['https://example.com/', 'scheme', /must start with doorbell:enroll\?/],
    ['doorbell:enroll', 'missing', /lacks v, k, h, p, tls, t, s, e: it is cut short/],
    [link.replace('doorbell:enroll', 'doorbell:enrol'), 'scheme', /not an enrolment link/],
    [set('v', '2'), 'version', /version "2"; this phone reads 1/],
    [`${link}&v=1`, 'repeated', /repeats a field/],
    [drop('e'), 'missing', /lacks e/],
    [drop('tls'), 'missing', /lacks tls/],
    [link.replace('&h=', '&&h='), 'garbled', /fields are garbled/],
    [link.replace('&p=', '&p'), 'garbled', /fields are garbled/],
    [set('k', k.slice(0, -1)), 'base32', /device key is not 32 bytes of base32/],
    [set('k', k.toUpperCase()), 'base32', /device key is not 32 bytes of base32/],
    [set('k', `${k.slice(0, -1)}b`), 'base32', /device key is not canonical base32/],
    [set('k', base32(pPlusOne)), 'device-key', /device key: .*not a canonical Ed25519 encoding/],
    [set('k', base32(negativeZero)), 'device-key', /not a canonical Ed25519 encoding/],
    [set('h', 'bad%20host'), 'host', /broker host is not a host name or address/],
    [set('h', ''), 'host', /broker host/],
    [set('p', '0'), 'number', /broker port 0 is outside 1..65535/],
    [set('p', '65536'), 'number', /broker port 65536 is outside 1..65535/],
    [set('p', '0883'), 'number', /broker port is not a number/],
    [set('p', '88a'), 'number', /broker port is not a number/],
    [set('tls', 'yes'), 'tls', /tls field must be 0 or 1/],
    [set('t', ''), 'prefix', /topic prefix is not a valid MQTT topic prefix/],
    [set('t', 'home/'), 'prefix', /topic prefix/],
    [set('t', '%2Fhome'), 'prefix', /topic prefix/],
    [set('t', 'home%23'), 'prefix', /topic prefix/],
    [set('t', 'home%2Bx'), 'prefix', /topic prefix/],
    [set('t', 'a'.repeat(129)), 'prefix', /topic prefix/],
    [set('s', s.slice(0, -2)), 'base32', /one-time secret is not 16 bytes of base32/],
    [set('s', `${s.slice(0, -1)}b`), 'base32', /one-time secret is not canonical base32/],
    [set('e', '-1'), 'number', /expiry is not a number/],
    [set('e', String(2 ** 40 + 1)), 'number', /expiry 1099511627777 is outside 0..1099511627776/],
    [`${link}&x=${'a'.repeat(600)}`, 'too-long', /characters, limit 600/],
  ];
  for (const [text, code, pattern] of cases) {
    assert.throws(() => parseLink(text, { now: BEFORE }), (error) => {
      assert.equal(error.code, code, text);
      assert.match(error.message, pattern, text);
      return true;
    });
  }
});

test('a link whose expiry has passed is refused before anything is sent', async () => {
  assert.throws(() => parseLink(vectors.link, { now: vectors.expires }), { code: 'expired', field: 'e' });
  assert.throws(() => parseLink(vectors.link), { code: 'expired' }); // the vector expired in 2026
  let published = false;
  const transport = {
    subscribe: async () => () => {},
    publish: async () => {
      published = true;
    },
  };
  const link = parseLink(vectors.link, { now: BEFORE });
  await assert.rejects(enrol({ link, identity: vectorPhone(), name: 'alice-phone', transport }), { code: 'expired' });
  assert.equal(published, false);
});

test('what the reference accepts in a link, this phone accepts too', () => {
  const link = vectors.link.replace('t=doorbell', 't=home%2Fdoor+bell%C3%A9').replace('h=broker.example', 'h=%5B%3A%3A1%5D');
  const parsed = parseLink(`${link}&later=field`, { now: BEFORE });
  assert.equal(parsed.prefix, 'home/door bellé');
  assert.equal(parsed.host, '[::1]');
  assert.equal(parseLink(vectors.link.replace('p=8883', 'p=1'), { now: BEFORE }).port, 1);
});

test('identity and key strings round trip; a degenerate or non-canonical key is refused', () => {
  const identity = parseIdentity(vectors.identity);
  assert.equal(identity.suite, 2);
  assert.equal(identityString(identity), vectors.identity);
  assert.match(signingKeyString(identity.signingPublicKey), /^dbsig-ed25519-/);
  const device = fromHex(vectors.device_public_raw);
  assert.deepEqual(parseDeviceKey(deviceKeyString(device)), device);
  assert.match(fingerprint(device), /^([0-9a-f]{4}:){7}[0-9a-f]{4}$/);
  const zero = identityString({ suite: 1, publicKey: new Uint8Array(32), signingPublicKey: identity.signingPublicKey });
  assert.throws(() => parseIdentity(zero), /degenerate point/);
  const identityPoint = new Uint8Array(32).fill(0xff);
  identityPoint[0] = 0xee;
  identityPoint[31] = 0x7f;
  assert.throws(() => deviceKeyString(identityPoint), { code: 'device-key', message: /not a canonical Ed25519 encoding/ });
});

test('names the doorbell would refuse are refused before the hello', () => {
  for (const name of ['alice-phone', 'Ålice’s phone', 'x'.repeat(64)]) checkPhoneName(name);
  const cases = [
    ['', /^the phone's name must be 1 to 64 characters, got 0$/],
    ['x'.repeat(65), /got 65/],
    [' alice', /surrounding spaces/],
    ['alice\n', /control characters/],
    ['al\u202eice', /U\+202E at position 2 reorders or hides text/],
    ['al\u200bice', /reorders or hides text/],
  ];
  for (const [name, pattern] of cases) assert.throws(() => checkPhoneName(name), { code: 'name', message: pattern });
});

// -- the conversation ----------------------------------------------------------------------

/** A broker in memory: delivers each publish to the subscribers of its exact topic. */
class MemoryBroker {
  constructor() {
    this.subscribers = new Map();
    this.published = [];
  }

  async subscribe(topic, handler) {
    if (!this.subscribers.has(topic)) this.subscribers.set(topic, new Set());
    this.subscribers.get(topic).add(handler);
    return async () => this.subscribers.get(topic).delete(handler);
  }

  async publish(topic, bytes) {
    this.published.push(topic);
    for (const handler of this.subscribers.get(topic) ?? []) queueMicrotask(() => handler(topic, bytes));
  }
}

/**
 * A doorbell's side of one window, as far as a test needs it: it opens the hello,
 * checks its signature, and answers with `answer(hello, send)`.
 */
async function fakeDoorbell(broker, link, answer) {
  const window = await enrolmentWindow(link);
  const seen = [];
  const send = async (message) =>
    broker.publish(window.doorbellTopic, await sealMessage(window.doorbellToPhone, window.doorbellTopic, message));
  await broker.subscribe(window.phoneTopic, async (_topic, bytes) => {
    const hello = await openMessage(window.phoneToDoorbell, window.phoneTopic, bytes);
    const identity = parseIdentity(hello.identity);
    const recovery = parseIdentity(hello.recovery);
    const nonce = fromBase64(hello.nonce);
    const signed = helloSignedBytes(link, window, nonce, identity, hello.name, recovery);
    assert.ok(ed25519.verify(fromBase64(hello.signature), signed, identity.signingPublicKey));
    seen.push(hello);
    await answer({ ...hello, nonce, identity, window }, send);
  });
  return { window, seen, send };
}

function openLink() {
  // A window that is open now: the vector's secret and device, a later expiry.
  const expires = Math.floor(Date.now() / 1000) + 600;
  return parseLink(vectors.link.replace(/e=\d+/, `e=${expires}`));
}

test('the phone shows the code both sides compute, and reports the refusal that follows', async () => {
  const broker = new MemoryBroker();
  const link = openLink();
  const doorbellNonce = crypto.getRandomValues(new Uint8Array(16));
  let doorbellCode;
  const doorbell = await fakeDoorbell(broker, link, async (hello, send) => {
    doorbellCode = await confirmationCode(link, hello.window, hello, doorbellNonce);
    const phoneNonce = toBase64(hello.nonce);
    await send({ type: 'code', nonce: toBase64(doorbellNonce), phone_nonce: toBase64(new Uint8Array(16)) });
    await broker.publish(hello.window.doorbellTopic, utf8('anyone can publish on a broker'));
    await send({ type: 'welcome', keyring: '', phone_nonce: phoneNonce }); // before the code: ignored
    await send({ type: 'code', nonce: toBase64(doorbellNonce), phone_nonce: phoneNonce });
    await send({ type: 'refused', reason: 'cancelled at the doorbell', phone_nonce: phoneNonce });
  });
  const codes = [];
  await assert.rejects(
    enrol({ link, identity: vectorPhone(), name: 'kitchen tablet', transport: broker, onCode: (code) => codes.push(code) }),
    (error) => {
      assert.ok(error instanceof EnrolmentError);
      assert.equal(error.code, 'refused');
      assert.equal(error.reason, 'cancelled at the doorbell');
      return true;
    },
  );
  assert.deepEqual(codes, [doorbellCode]);
  assert.match(doorbellCode, /^\d{3} \d{3}$/);
  assert.equal(doorbell.seen.length, 1);
  assert.equal(doorbell.seen[0].name, 'kitchen tablet');
  assert.notEqual(doorbell.seen[0].recovery, vectors.identity, 'the offered recovery key is its own');
  assert.deepEqual(broker.published.slice(0, 1), [doorbell.window.phoneTopic]);
  assert.equal(broker.subscribers.get(doorbell.window.doorbellTopic).size, 0, 'unsubscribed at the end');
});

test('a welcome whose keyring object does not check out enrols nothing', async () => {
  const broker = new MemoryBroker();
  const link = openLink();
  await fakeDoorbell(broker, link, async (hello, send) => {
    const phoneNonce = toBase64(hello.nonce);
    await send({ type: 'code', nonce: toBase64(new Uint8Array(16)), phone_nonce: phoneNonce });
    await send({ type: 'welcome', name: 'alice-phone', role: 'member', keyring: toBase64(utf8('not an object')), phone_nonce: phoneNonce });
  });
  await assert.rejects(
    enrol({ link, identity: { ...vectorPhone(), holder: null }, name: 'alice-phone', transport: broker }),
    { code: 'bad-keyring', message: /the doorbell's keyring does not check out/ },
  );
});

test('with no answer the phone gives up, and an abort stops it at once', async () => {
  const link = openLink();
  const started = performance.now();
  await assert.rejects(
    enrol({ link, identity: vectorPhone(), name: 'alice-phone', transport: new MemoryBroker(), timeoutMs: 50 }),
    { code: 'timeout', message: /did not answer before the link expired/ },
  );
  assert.ok(performance.now() - started < 5000);
  const controller = new AbortController();
  const running = enrol({ link, identity: vectorPhone(), name: 'alice-phone', transport: new MemoryBroker(), signal: controller.signal });
  setTimeout(() => controller.abort(), 10);
  await assert.rejects(running, { name: 'AbortError' });
});

async function sealRaw(key, topic, plaintext) {
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const aes = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  const sealed = await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: utf8(topic) }, aes, plaintext);
  return new Uint8Array([...nonce, ...new Uint8Array(sealed)]);
}

// -- against the real doorbell ---------------------------------------------------------------

// A real Mosquitto and a real daemon with no phone yet (tests/enrol_harness.py), driven by
// one JSON line per command: `enroll` starts `doorbell enroll --json` and answers its
// link, `code` the code the doorbell shows, `confirm` types yes and answers how it ended.
const DOORBELL = `
import json, sys, tempfile
from pathlib import Path
sys.path[:0] = ["tests", "."]
from enrol_harness import broker_rig, enroll, started
from mqtt_fixture import Mosquitto

def say(message):
    print(json.dumps(message), flush=True)

with tempfile.TemporaryDirectory(prefix="doorbell-web-enrol-") as tmp:
    (Path(tmp) / "mosquitto").mkdir()
    broker = Mosquitto(Path(tmp) / "mosquitto")
    broker.start()
    try:
        for rig in started(broker_rig(Path(tmp) / "doorbell", broker, enrol=False)):
            say({"host": broker.host, "port": broker.port})
            for line in sys.stdin:
                op = json.loads(line)["op"]
                if op == "enroll":
                    process, said = enroll(rig)
                    say({"link": said.wait_for("link")["link"]})
                elif op == "code":
                    say(said.wait_for("code"))
                elif op == "confirm":
                    process.stdin.write("yes\\n")
                    process.stdin.flush()
                    say({"exit": process.wait(timeout=60), "lines": said.lines})
    finally:
        broker.stop()
`;

const REPO = new URL('../../', import.meta.url);
const PYTHON = new URL('.venv/bin/python', REPO);

test('a phone enrols with the real doorbell over the real broker, and gets its recovery words', { timeout: 120000 }, async (t) => {
  const { existsSync } = await import('node:fs');
  if (!existsSync(PYTHON)) {
    t.skip('no Python environment at .venv (scripts/test makes it)');
    return;
  }
  const { spawn } = await import('node:child_process');
  const { createInterface } = await import('node:readline');
  const mqtt = (await import('mqtt')).default;
  const { entropyFromWords, recoveryIdentity } = await import('../src/protocol/recovery.js');

  const child = spawn(PYTHON.pathname, ['-c', DOORBELL], { cwd: REPO.pathname, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error('the doorbell rig stopped');
    return JSON.parse(value);
  };
  const ask = async (op) => {
    child.stdin.write(`${JSON.stringify({ op })}\n`);
    return next();
  };
  t.after(() => {
    child.stdin.end();
    return new Promise((resolve) => child.once('exit', resolve));
  });
  const { host, port } = await next();
  const client = await mqtt.connectAsync(`mqtt://${host}:${port}`, { protocolVersion: 5, reconnectPeriod: 0 });
  t.after(() => client.endAsync());
  const handlers = new Map();
  client.on('message', (topic, payload) => handlers.get(topic)?.(topic, new Uint8Array(payload)));
  const transport = {
    async subscribe(topic, handler, { qos }) {
      handlers.set(topic, handler);
      await client.subscribeAsync(topic, { qos });
      return async () => {
        handlers.delete(topic);
        await client.unsubscribeAsync(topic);
      };
    },
    publish: (topic, bytes, { qos }) => client.publishAsync(topic, Buffer.from(bytes), { qos }),
  };

  const { link } = await ask('enroll');
  const phone = await bytesPhone();
  let confirmed;
  const result = await enrol({
    link,
    identity: phone,
    name: 'web phone',
    transport,
    onCode: (code) => {
      confirmed = (async () => {
        const { code: doorbellCode } = await ask('code');
        assert.equal(doorbellCode, code, 'both screens show the same code');
        assert.equal((await ask('confirm')).exit, 0);
      })();
    },
  });
  await confirmed;
  assert.equal(result.name, 'web phone');
  assert.equal(result.role, 'owner'); // the first phone
  assert.deepEqual(result.devicePublicKey, parseLink(link).device);
  assert.equal(result.broker.port, port);
  assert.equal(result.words.length, 24);
  const paper = await recoveryIdentity(entropyFromWords(result.words));
  const recovery = result.keyring.recipients.find((r) => r.role === 'recovery');
  assert.deepEqual(recovery.publicKey, paper.publicKey);
  assert.deepEqual(recovery.signingKey, paper.signingPublicKey);
});

/** A phone whose keys are bytes in memory: enough for the protocol, never for a browser. */
async function bytesPhone() {
  const { bytesKeyHolder } = await import('../src/crypto/kem.js');
  const seed = crypto.getRandomValues(new Uint8Array(32));
  const signingSeed = crypto.getRandomValues(new Uint8Array(32));
  const holder = await bytesKeyHolder(2, seed);
  const key = await importSigningSeed(signingSeed);
  return {
    suite: 2,
    publicKey: holder.publicKey,
    signingPublicKey: ed25519.getPublicKey(signingSeed),
    holder,
    sign: async (message) => new Uint8Array(await crypto.subtle.sign('Ed25519', key, message)),
  };
}
