// Live view's bytes, the phone's side (FORMAT §11; doorbell/sealing/live.py): the session
// object that hands this phone a fresh session key and the stream's details, and the
// fragments sealed under that key, each signed by the device, opened in increasing order.
//
// Every viewer holds the session key, so AES-GCM alone would let one viewer forge
// fragments for another: a fragment counts only when the device's signature verifies.

import { sha256 } from '@noble/hashes/sha2.js';
import { concat, equal, readU64, utf8, sha256 as digest } from '../bytes.js';
import { SignatureError, verifyStrict } from '../crypto/ed25519.js';
import { HpkeError, openBase } from '../crypto/hpke.js';
import { WRAPPED_LEN } from './object.js';
import { parseStrictJson } from './strictjson.js';

export const VERSION = 1;
export const SESSION_ID_LEN = 16;
export const MAX_VIEWERS = 16;
export const MAX_SESSION = 1024 * 1024; // a session object, init segment included
export const MAX_FRAGMENT = 4 * 1024 * 1024; // one ~100 ms chunk; a 1080p keyframe fits
export const KEYFRAME = 0x01;
export const END = 0x02; // the session's last fragment: no media, the doorbell ended it
const SESSION_MAGIC = utf8('DBLS');
const FRAGMENT_MAGIC = utf8('DBLF');
const RECIPIENT_CONTEXT = utf8('doorbell/v1 live recipient\0');
const HPKE_INFO_CONTEXT = utf8('doorbell/v1 live key\0');
const SESSION_CONTEXT = utf8('doorbell live session v1\0');
const FRAGMENT_CONTEXT = utf8('doorbell live fragment v1\0');
const SESSION_HEAD_LEN = 4 + 1 + 1 + 32 + SESSION_ID_LEN + 1;
const FRAGMENT_HEAD_LEN = 4 + 1 + 1 + SESSION_ID_LEN + 8;
const INNER_HEAD_LEN = 1 + 8; // flags, capture time
const TAG_LEN = 16;
const SIGNATURE_LEN = 64;

/**
 * A session object or fragment refused. `code`:
 *   'malformed'  not a version 1 session object or fragment
 *   'foreign'    another doorbell's session, or a fragment of another session
 *   'forged'     not signed by the doorbell, or signed yet not decrypting
 *   'not-for-us' this phone is not a viewer of the session
 *   'replayed'   a fragment whose counter is not above the last one accepted
 */
export class LiveError extends Error {
  constructor(code, message) {
    super(`${code === 'replayed' ? 'replayed or late' : code}: ${message}`);
    this.name = 'LiveError';
    this.code = code;
  }
}

/** A viewer's tag in a session object (FORMAT §11). */
export function viewerTag(deviceId, sessionId, suite, publicKey) {
  return sha256(concat(RECIPIENT_CONTEXT, deviceId, sessionId, Uint8Array.of(suite), publicKey)).subarray(0, 16);
}

/** Fragment `counter`'s AES-GCM nonce; counter 0 is the session object's own. */
function nonce(counter) {
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(4, BigInt(counter));
  return out;
}

async function checkSigned(devicePublicKey, context, data, refusal) {
  const body = data.subarray(0, data.length - SIGNATURE_LEN);
  const signature = data.subarray(data.length - SIGNATURE_LEN);
  try {
    await verifyStrict(devicePublicKey, concat(context, await digest(body)), signature, 'device');
  } catch (error) {
    if (error instanceof SignatureError) throw new LiveError('forged', refusal);
    throw error;
  }
  return body;
}

/**
 * Check a session object's signature and open it with one of `keys` (key holders).
 * Resolves to { deviceId, sessionId, sessionKey (a non-extractable AES-GCM CryptoKey),
 * details (strict JSON: integers are BigInt) }; rejects with LiveError.
 */
export async function openLiveSession(bytes, { devicePublicKey, keys }) {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (data.length < SESSION_HEAD_LEN + TAG_LEN + SIGNATURE_LEN || data.length > MAX_SESSION) {
    throw new LiveError('malformed', 'not a session object');
  }
  if (!equal(data.subarray(0, 4), SESSION_MAGIC) || data[4] !== VERSION || data[5] !== 0) {
    throw new LiveError('malformed', 'not a version 1 session object');
  }
  const deviceId = data.subarray(6, 38);
  if (!equal(deviceId, sha256(devicePublicKey))) throw new LiveError('foreign', 'a session of another doorbell');
  const body = await checkSigned(devicePublicKey, SESSION_CONTEXT, data, 'the session object is not signed by the doorbell');
  const sessionId = data.subarray(38, 54);
  const count = data[54];
  if (count < 1 || count > MAX_VIEWERS) throw new LiveError('malformed', `${count} viewers, not 1..${MAX_VIEWERS}`);
  const tags = keys.map((key) => viewerTag(deviceId, sessionId, key.suite, key.publicKey));
  let offset = SESSION_HEAD_LEN;
  let mine = null;
  for (let index = 0; index < count; index++) {
    if (offset + 17 > body.length) throw new LiveError('malformed', 'the stanzas are cut short');
    const suite = body[offset];
    const length = WRAPPED_LEN[suite];
    if (length === undefined) throw new LiveError('malformed', `unknown suite ${suite}`);
    const tag = body.subarray(offset + 1, offset + 17);
    offset += 17;
    if (offset + length > body.length) throw new LiveError('malformed', 'the stanzas are cut short');
    const at = keys.findIndex((key, i) => key.suite === suite && equal(tags[i], tag));
    if (mine === null && at >= 0) mine = { holder: keys[at], suite, tag, wrapped: body.subarray(offset, offset + length) };
    offset += length;
  }
  if (mine === null) throw new LiveError('not-for-us', 'this phone is not a viewer of the session');
  let rawKey;
  try {
    const info = concat(HPKE_INFO_CONTEXT, deviceId, sessionId, Uint8Array.of(mine.suite), mine.tag);
    rawKey = await openBase(mine.holder, mine.wrapped, info);
  } catch (error) {
    if (error instanceof HpkeError) throw new LiveError('forged', "this phone's stanza does not open");
    throw error;
  }
  if (rawKey.length !== 32) throw new LiveError('forged', "this phone's stanza does not hold a session key");
  const sessionKey = await crypto.subtle.importKey('raw', rawKey, { name: 'AES-GCM' }, false, ['decrypt']);
  rawKey.fill(0);
  let plaintext;
  try {
    plaintext = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: nonce(0), additionalData: body.subarray(0, offset) },
      sessionKey,
      body.subarray(offset),
    );
  } catch {
    throw new LiveError('forged', 'the session details do not decrypt');
  }
  const details = parseStrictJson(new Uint8Array(plaintext), (why) => new LiveError('malformed', `details: ${why}`));
  return { deviceId: deviceId.slice(), sessionId: sessionId.slice(), sessionKey, details };
}

/**
 * A viewer's side of one session: opens its fragments, each once, in increasing counter
 * order. `open` resolves to { counter (BigInt), keyframe, end, captureUs (BigInt),
 * chunk (Uint8Array) } or rejects with LiveError: malformed, foreign (another session),
 * forged (not signed by the doorbell, or signed yet not decrypting), replayed (counter not
 * above the last accepted: replayed, or overtaken by a later one). Calls are handled one
 * at a time, in the order made, so two copies of a fragment never both count.
 */
export class LiveFragments {
  #session;
  #device;
  #queue = Promise.resolve();
  /** The counter of the last fragment accepted; 0n before the first. */
  last = 0n;

  constructor(session, devicePublicKey) {
    this.#session = session;
    this.#device = devicePublicKey;
  }

  open(bytes) {
    const result = this.#queue.then(() => this.#open(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)));
    this.#queue = result.catch(() => {});
    return result;
  }

  async #open(data) {
    if (data.length < FRAGMENT_HEAD_LEN + INNER_HEAD_LEN + TAG_LEN + SIGNATURE_LEN) {
      throw new LiveError('malformed', 'too short for a fragment');
    }
    if (data.length > MAX_FRAGMENT) throw new LiveError('malformed', `a ${data.length}-byte fragment`);
    if (!equal(data.subarray(0, 4), FRAGMENT_MAGIC) || data[4] !== VERSION || data[5] !== 0) {
      throw new LiveError('malformed', 'not a version 1 live fragment');
    }
    if (!equal(data.subarray(6, 22), this.#session.sessionId)) throw new LiveError('foreign', 'a fragment of another session');
    const body = await checkSigned(this.#device, FRAGMENT_CONTEXT, data, 'not signed by the doorbell');
    const counter = readU64(data, 22);
    if (counter <= this.last) throw new LiveError('replayed', `fragment ${counter} after ${this.last}`);
    let inner;
    try {
      inner = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: 'AES-GCM', iv: nonce(counter), additionalData: body.subarray(0, FRAGMENT_HEAD_LEN) },
          this.#session.sessionKey,
          body.subarray(FRAGMENT_HEAD_LEN),
        ),
      );
    } catch {
      throw new LiveError('forged', 'signed, yet does not decrypt');
    }
    const flags = inner[0];
    if (flags & ~(KEYFRAME | END)) throw new LiveError('malformed', 'unknown fragment flags');
    this.last = counter;
    return {
      counter,
      keyframe: (flags & KEYFRAME) !== 0,
      end: (flags & END) !== 0,
      captureUs: readU64(inner, 1),
      chunk: inner.subarray(INNER_HEAD_LEN),
    };
  }
}
