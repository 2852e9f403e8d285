// Joining a doorbell, the phone's side (PROTOCOL §2-5): the window's keys from the
// link's one-time secret, the sealed messages, the signed hello, the six-digit code, and
// the welcome's keyring, which must be signed by the link's device key and list this
// phone. The conversation runs over any transport that can subscribe and publish; the
// page hands it the broker link, the tests a plain MQTT client.

import {
  concat,
  equal,
  fromBase64,
  randomBytes,
  sha256,
  toBase64,
  toHex,
  u64,
  utf8,
} from '../bytes.js';
import { Reader } from '../format/object.js';
import { parseStrictJson } from '../format/strictjson.js';
import { hkdf } from './kdf.js';
import { checkPhoneName, deviceKeyString, identityString } from './identity.js';
import { LinkError, parseLink } from './link.js';
import { newRecoveryEntropy, recoveryIdentity, recoveryWords } from './recovery.js';

export const NONCE_LEN = 16;
export const WINDOW_ID_LEN = 8;
export const AEAD_NONCE_LEN = 12;
export const MAX_MESSAGE = 16 * 1024; // the largest message a doorbell reads from a phone
export const MAX_ANSWER = 1024 * 1024; // the largest a phone reads: a welcome carries a keyring
// After the code is shown the owner has a while to compare and confirm at the doorbell.
export const ANSWER_SECONDS = 330;
const MAX_STRAY = 1000; // messages that are not ours before the phone gives up on the window
const SALT = 'doorbell enroll v1';

export class EnrolmentError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'EnrolmentError';
    this.code = code;
  }
}

/**
 * The keys and topics of the link's window (PROTOCOL §2, §3):
 * {windowId, phoneToDoorbell, doorbellToPhone, codeKey, phoneTopic, doorbellTopic}.
 */
export async function enrolmentWindow(link) {
  const context = concat(link.deviceId, u64(link.expires));
  const key = (label, length = 32) =>
    hkdf(link.secret, SALT, concat(utf8(label), Uint8Array.of(0), context), length);
  const windowId = await key('window', WINDOW_ID_LEN);
  const base = `${link.prefix}/${toHex(link.deviceId).slice(0, 16)}/enroll/${toHex(windowId)}`;
  return {
    windowId,
    phoneToDoorbell: await key('phone to doorbell'),
    doorbellToPhone: await key('doorbell to phone'),
    codeKey: await key('code'),
    phoneTopic: `${base}/phone`,
    doorbellTopic: `${base}/doorbell`,
  };
}

/** nonce || AES-256-GCM(key, nonce, JSON of `message`, aad = topic) (PROTOCOL §3). */
export async function sealMessage(key, topic, message, nonce = randomBytes(AEAD_NONCE_LEN)) {
  const aes = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  const sealed = await crypto.subtle.encrypt(
    { name: 'AES-GCM', iv: nonce, additionalData: utf8(topic) },
    aes,
    utf8(JSON.stringify(message)),
  );
  return concat(nonce, new Uint8Array(sealed));
}

/** The message sealed under `key` for `topic`, or EnrolmentError when it is not one. */
export async function openMessage(key, topic, payload, limit = MAX_MESSAGE) {
  if (payload.length < AEAD_NONCE_LEN + 16 || payload.length > limit) {
    throw new EnrolmentError(`a ${payload.length}-byte message: not an enrolment message`, 'stray');
  }
  const aes = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['decrypt']);
  let plaintext;
  try {
    plaintext = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: payload.subarray(0, AEAD_NONCE_LEN), additionalData: utf8(topic) },
      aes,
      payload.subarray(AEAD_NONCE_LEN),
    );
  } catch {
    throw new EnrolmentError("a message not sealed under this window's secret", 'stray');
  }
  const message = parseStrictJson(new Uint8Array(plaintext), (why) => new EnrolmentError(`a garbled message: ${why}`, 'garbled'));
  if (!isObject(message) || typeof message.type !== 'string') {
    throw new EnrolmentError('a message without a type', 'garbled');
  }
  return message;
}

/** What the hello's signature covers (PROTOCOL §3); `recovery` an identity or null. */
export function helloSignedBytes(link, window, nonce, identity, name, recovery = null) {
  const parts = [
    utf8('doorbell enroll v1 hello\0'),
    link.deviceId,
    window.windowId,
    nonce,
    identity.publicKey,
    identity.signingPublicKey,
    utf8(name),
  ];
  if (recovery) parts.push(utf8('\0recovery\0'), recovery.publicKey, recovery.signingPublicKey);
  return concat(...parts);
}

/**
 * The phone's hello, signed by `identity.sign` (PROTOCOL §3): {nonce, name, identity,
 * message}. `recovery` is the identity of a recovery key the phone offers, or null.
 */
export async function makeHello({ link, window, identity, name, recovery = null, nonce = randomBytes(NONCE_LEN) }) {
  checkPhoneName(name);
  const signature = await identity.sign(helloSignedBytes(link, window, nonce, identity, name, recovery));
  if (!(signature instanceof Uint8Array) || signature.length !== 64) {
    throw new TypeError('the signer must return a 64-byte Ed25519 signature');
  }
  const message = {
    type: 'hello',
    nonce: toBase64(nonce),
    identity: identityString(identity),
    name,
    signature: toBase64(signature),
  };
  if (recovery) message.recovery = identityString(recovery);
  return { nonce, name, identity, message };
}

/** The six digits both screens show (PROTOCOL §4), as "123 456". */
export async function confirmationCode(link, window, hello, doorbellNonce) {
  const transcript = await sha256(
    concat(
      utf8('doorbell enroll v1 transcript\0'),
      link.deviceId,
      window.windowId,
      hello.nonce,
      doorbellNonce,
      hello.identity.publicKey,
      hello.identity.signingPublicKey,
      utf8(hello.name),
    ),
  );
  const key = await crypto.subtle.importKey('raw', window.codeKey, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, transcript));
  const number = new DataView(mac.buffer).getBigUint64(0) % 1000000n;
  const digits = number.toString().padStart(6, '0');
  return `${digits.slice(0, 3)} ${digits.slice(3)}`;
}

/**
 * Enrol this phone with the doorbell of `link` (PROTOCOL §5, the phone's part).
 *
 * @param {object} options
 * @param {string|object} options.link  the link's text, or what parseLink returned
 * @param {object} options.identity  this phone: {suite, publicKey, signingPublicKey,
 *   sign(bytes) -> Promise<64 bytes>, holder} (keystore.js's phone is one)
 * @param {string} options.name  the name this phone proposes
 * @param {object} options.transport  `subscribe(topic, handler(topic, bytes), {qos})`
 *   resolving to an unsubscribe function, and `publish(topic, bytes, {qos})`
 *   (broker.js's BrokerLink is one)
 * @param {(code: string) => void} [options.onCode]  shows the code to compare
 * @param {AbortSignal} [options.signal]
 * @param {number} [options.timeoutMs]  the longest wait for the doorbell's next answer;
 *   by default until the link expires before the code, and 330 s after it
 * @returns {Promise<object>} {name, role, devicePublicKey, deviceKey, deviceId,
 *   deviceIdHex, keyring, keyringObject, broker: {host, port, tls, prefix}, words}:
 *   `words` are the 24 recovery words when the doorbell enrolled the recovery key this
 *   phone offered (it does for its first owner), to be shown once; null otherwise.
 * Throws EnrolmentError (code `refused`, `timeout`, `bad-keyring`, `not-listed`, …) or
 * LinkError, with a message a person can act on.
 */
export async function enrol({ link, identity, name, transport, onCode = () => {}, signal, timeoutMs }) {
  if (typeof link === 'string') link = parseLink(link);
  else if (link.expires <= Date.now() / 1000) {
    throw new LinkError('the link expired; ask for a new one', 'expired', 'e');
  }
  checkPhoneName(name);
  signal?.throwIfAborted();
  const window = await enrolmentWindow(link);
  // Offered to the doorbell, which enrols it only when this phone is its first owner;
  // its words are shown then, once, and kept nowhere.
  const paper = newRecoveryEntropy();
  try {
    const recovery = await recoveryIdentity(paper);
    const hello = await makeHello({ link, window, identity, name, recovery });
    const sealed = await sealMessage(window.phoneToDoorbell, window.phoneTopic, hello.message);
    const inbox = new Inbox();
    // The subscription stands before the hello goes out: answers are not retained.
    const unsubscribe = await transport.subscribe(window.doorbellTopic, (_topic, bytes) => inbox.push(bytes), { qos: 1 });
    try {
      await transport.publish(window.phoneTopic, sealed, { qos: 1 });
      const welcome = await converse({ link, window, hello, inbox, onCode, signal, timeoutMs });
      return await welcomed({ link, identity, hello, welcome, paper, recovery });
    } finally {
      await unsubscribe?.();
    }
  } finally {
    paper.fill(0);
  }
}

async function converse({ link, window, hello, inbox, onCode, signal, timeoutMs }) {
  const mine = toBase64(hello.nonce);
  const untilExpiry = Math.max(0, link.expires * 1000 - Date.now()) + 5000;
  let deadline = performance.now() + Math.min(untilExpiry, timeoutMs ?? Infinity);
  let stray = 0;
  let coded = false;
  for (;;) {
    const payload = await inbox.next(deadline, signal);
    if (payload === null) {
      const why = coded
        ? 'the doorbell did not confirm in time'
        : 'the doorbell did not answer before the link expired';
      throw new EnrolmentError(why, 'timeout');
    }
    let message;
    try {
      message = await openMessage(window.doorbellToPhone, window.doorbellTopic, payload, MAX_ANSWER);
    } catch (error) {
      if (!(error instanceof EnrolmentError)) throw error;
      // Not from the doorbell: anyone can publish on a broker.
      if (++stray >= MAX_STRAY) {
        throw new EnrolmentError('too many stray messages on the enrolment topic', 'stray');
      }
      continue;
    }
    if (message.phone_nonce !== mine) continue; // the answer to another phone that saw the link
    if (message.type === 'code' && !coded) {
      let doorbellNonce;
      try {
        doorbellNonce = unbase64(message.nonce, 'the doorbell nonce', NONCE_LEN);
      } catch {
        continue;
      }
      coded = true;
      deadline = performance.now() + (timeoutMs ?? ANSWER_SECONDS * 1000);
      onCode(await confirmationCode(link, window, hello, doorbellNonce));
    } else if (message.type === 'refused') {
      const reason = String(message.reason ?? 'refused').slice(0, 1000);
      const error = new EnrolmentError(`the doorbell refused: ${reason}`, 'refused');
      error.reason = reason;
      throw error;
    } else if (message.type === 'welcome' && coded) {
      return message;
    }
  }
}

/**
 * Check the keyring the doorbell sent: sealed by the device the link named, openable by
 * this phone, listing it with both its keys. Only then is the device worth pinning.
 */
async function welcomed({ link, identity, hello, welcome, paper, recovery }) {
  let keyringObject;
  let keyring;
  try {
    keyringObject = unbase64(welcome.keyring, 'the keyring', null, MAX_ANSWER);
    const reader = new Reader({ devices: [link.device], keys: [identity.holder] });
    const opened = await reader.open(keyringObject);
    keyring = opened.keyring;
  } catch (error) {
    throw new EnrolmentError(`the doorbell's keyring does not check out: ${error.message}`, 'bad-keyring');
  }
  const me = keyring?.recipients?.find(
    (r) =>
      equal(r.publicKey, hello.identity.publicKey) &&
      r.signingKey != null &&
      equal(r.signingKey, hello.identity.signingPublicKey),
  );
  if (!me) throw new EnrolmentError("the doorbell's keyring does not list this phone", 'not-listed');
  const listed = keyring.recipients.some((r) => r.role === 'recovery' && equal(r.publicKey, recovery.publicKey));
  return {
    name: me.name,
    role: me.role,
    devicePublicKey: link.device,
    deviceKey: deviceKeyString(link.device),
    deviceId: link.deviceId,
    deviceIdHex: toHex(link.deviceId),
    keyring,
    keyringObject,
    broker: { host: link.host, port: link.port, tls: link.tls, prefix: link.prefix },
    words: welcome.recovery === true && listed ? recoveryWords(paper) : null,
  };
}

/** Standard base64 of `length` bytes (any length when null), or EnrolmentError. */
function unbase64(value, what, length = null, limit = MAX_MESSAGE) {
  if (typeof value !== 'string' || value.length > limit * 2) {
    throw new EnrolmentError(`${what} must be a base64 string`, 'garbled');
  }
  let raw;
  try {
    raw = fromBase64(value);
  } catch {
    throw new EnrolmentError(`${what} is not valid base64`, 'garbled');
  }
  if (length !== null && raw.length !== length) {
    throw new EnrolmentError(`${what} must be ${length} bytes, got ${raw.length}`, 'garbled');
  }
  return raw;
}

/** Messages as they arrive, taken one at a time with a deadline (performance.now()). */
class Inbox {
  constructor() {
    this.items = [];
    this.wake = null;
  }

  push(item) {
    this.items.push(item);
    this.wake?.();
  }

  async next(deadline, signal) {
    while (this.items.length === 0) {
      signal?.throwIfAborted();
      const left = deadline - performance.now();
      if (left <= 0) return null;
      await new Promise((resolve) => {
        // Timers overflow past 2^31 ms; a far-off deadline is waited for in steps.
        const timer = setTimeout(done, Math.min(left, 2 ** 31 - 1));
        signal?.addEventListener('abort', done, { once: true });
        this.wake = done;
        function done() {
          clearTimeout(timer);
          signal?.removeEventListener('abort', done);
          resolve();
        }
      });
      this.wake = null;
    }
    return this.items.shift();
  }
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
