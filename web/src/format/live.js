// Live view's bytes (FORMAT §11), the phone's side, as doorbell/sealing/live.py reads
// them: a session object that hands this phone a fresh session key and carries the
// stream's details, then short fragments sealed under that key and each signed by the
// doorbell (every viewer holds the session key: without the signature one viewer could
// forge fragments another would accept).
//
// Every refusal is a LiveError with a code: 'malformed', 'foreign' (another doorbell's
// session, or another session's fragment), 'forged' (not signed by the doorbell, or
// signed yet not decrypting), 'not-for-us' (this phone is not a viewer), 'replayed'
// (a counter not above the last accepted: replayed, or overtaken by a later fragment).

import { sha256 as sha256Sync } from '@noble/hashes/sha2.js';
import { concat, readU64, u64, u8, utf8 } from '../bytes.js';
import { verifyStrict } from '../crypto/ed25519.js';
import { openBase } from '../crypto/hpke.js';
import { parseStrictJson } from './strictjson.js';

export const VERSION = 1;
export const SESSION_MAGIC = utf8('DBLS');
export const FRAGMENT_MAGIC = utf8('DBLF');
export const MAX_VIEWERS = 16;
export const MAX_SESSION = 1024 * 1024;
export const MAX_FRAGMENT = 4 * 1024 * 1024;
export const KEYFRAME = 0x01;
export const END = 0x02;
const SESSION_ID_LEN = 16;
const TAG_LEN = 16;
const SIGNATURE_LEN = 64;
const SESSION_HEAD = 4 + 1 + 1 + 32 + 16 + 1; // magic, version, reserved, device id, session id, count
const FRAGMENT_HEAD = 4 + 1 + 1 + 16 + 8; // magic, version, flags, session id, counter
const INNER = 1 + 8; // flags, capture time
const STANZA_LEN = { 1: 32 + 48, 2: 1120 + 48 };
const RECIPIENT_CONTEXT = utf8('doorbell/v1 live recipient\0');
const HPKE_INFO_CONTEXT = utf8('doorbell/v1 live key\0');
const SESSION_CONTEXT = utf8('doorbell live session v1\0');
const FRAGMENT_CONTEXT = utf8('doorbell live fragment v1\0');

export class LiveError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'LiveError';
    this.code = code;
  }
}

/** This phone's tag in a session object (FORMAT §11). */
export function viewerTag(deviceId, sessionId, suite, publicKey) {
  return sha256Sync(concat(RECIPIENT_CONTEXT, deviceId, sessionId, u8(suite), publicKey)).subarray(0, 16);
}

function nonce(counter) {
  const out = new Uint8Array(12);
  out.set(u64(counter), 4);
  return out;
}

function startsWith(bytes, magic) {
  for (let i = 0; i < magic.length; i++) if (bytes[i] !== magic[i]) return false;
  return true;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function signedBy(devicePublicKey, context, body, signature) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', body));
  try {
    await verifyStrict(devicePublicKey, concat(context, digest), signature);
    return true;
  } catch {
    return false;
  }
}

/**
 * Check a session object's signature and open it with one of `keys` (key holders).
 * Returns {sessionId, sessionKey (raw 32 bytes), aesKey (CryptoKey), deviceId, details}.
 */
export async function openLiveSession(bytes, { devicePublicKey, keys }) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  if (bytes.length < SESSION_HEAD + TAG_LEN + SIGNATURE_LEN || bytes.length > MAX_SESSION) {
    throw new LiveError('malformed', 'malformed: not a session object');
  }
  if (!startsWith(bytes, SESSION_MAGIC) || bytes[4] !== VERSION || bytes[5] !== 0) {
    throw new LiveError('malformed', 'malformed: not a version 1 session object');
  }
  const deviceId = bytes.subarray(6, 38);
  if (!sameBytes(deviceId, sha256Sync(devicePublicKey))) {
    throw new LiveError('foreign', 'foreign: a session of another doorbell');
  }
  const sessionId = bytes.subarray(38, 38 + SESSION_ID_LEN);
  const count = bytes[54];
  const body = bytes.subarray(0, bytes.length - SIGNATURE_LEN);
  if (!(await signedBy(devicePublicKey, SESSION_CONTEXT, body, bytes.subarray(body.length)))) {
    throw new LiveError('forged', 'forged: the session object is not signed by the doorbell');
  }
  const mine = keys.map((holder) => [holder, viewerTag(deviceId, sessionId, holder.suite, holder.publicKey)]);
  let offset = SESSION_HEAD;
  let sessionKey = null;
  for (let index = 0; index < count; index++) {
    if (offset + 17 > body.length) throw new LiveError('malformed', 'malformed: the stanzas are cut short');
    const suite = body[offset];
    const length = STANZA_LEN[suite];
    if (length === undefined) throw new LiveError('malformed', `malformed: unknown suite ${suite}`);
    const tag = body.subarray(offset + 1, offset + 17);
    offset += 17;
    const wrapped = body.subarray(offset, offset + length);
    offset += length;
    if (sessionKey !== null) continue;
    const match = mine.find(([holder, own]) => holder.suite === suite && sameBytes(own, tag));
    if (!match) continue;
    const info = concat(HPKE_INFO_CONTEXT, deviceId, sessionId, u8(suite), tag);
    try {
      sessionKey = await openBase(match[0], wrapped, info, new Uint8Array(0));
    } catch {
      throw new LiveError('forged', "forged: this phone's stanza does not open");
    }
  }
  if (sessionKey === null) throw new LiveError('not-for-us', 'not for us: this phone is not a viewer of the session');
  let aesKey;
  let plaintext;
  try {
    aesKey = await crypto.subtle.importKey('raw', sessionKey, 'AES-GCM', false, ['decrypt']);
    plaintext = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: nonce(0n), additionalData: body.subarray(0, offset) },
        aesKey,
        body.subarray(offset),
      ),
    );
  } catch {
    throw new LiveError('forged', 'forged: the session details do not decrypt');
  }
  const details = parseStrictJson(plaintext, (why) => new LiveError('malformed', `malformed details: ${why}`));
  return { sessionId: sessionId.slice(), sessionKey, aesKey, deviceId: deviceId.slice(), details };
}

/** A phone's side of one session: opens fragments, each once, in increasing order. */
export class LiveFragments {
  constructor(session, devicePublicKey) {
    this.session = session;
    this.sessionId = session.sessionId;
    this.devicePublicKey = devicePublicKey;
    this.aesKey = session.aesKey ?? crypto.subtle.importKey('raw', session.sessionKey, 'AES-GCM', false, ['decrypt']);
    this.last = 0n;
  }

  /**
   * The fragment {counter, keyframe, end, captureUs, chunk}, or a LiveError saying why it
   * is refused: malformed, another session's, not signed by the doorbell, altered, or not
   * newer than the last accepted.
   */
  async open(bytes) {
    if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
    if (bytes.length < FRAGMENT_HEAD + INNER + TAG_LEN + SIGNATURE_LEN) {
      throw new LiveError('malformed', 'malformed: too short for a fragment');
    }
    if (bytes.length > MAX_FRAGMENT) throw new LiveError('malformed', `malformed: a ${bytes.length}-byte fragment`);
    if (!startsWith(bytes, FRAGMENT_MAGIC) || bytes[4] !== VERSION || bytes[5] !== 0) {
      throw new LiveError('malformed', 'malformed: not a version 1 live fragment');
    }
    if (!sameBytes(bytes.subarray(6, 22), this.sessionId)) {
      throw new LiveError('foreign', 'foreign: a fragment of another session');
    }
    const counter = readU64(bytes, 22);
    const body = bytes.subarray(0, bytes.length - SIGNATURE_LEN);
    if (!(await signedBy(this.devicePublicKey, FRAGMENT_CONTEXT, body, bytes.subarray(body.length)))) {
      throw new LiveError('forged', 'forged: not signed by the doorbell');
    }
    if (counter <= this.last) {
      throw new LiveError('replayed', `replayed or late: fragment ${counter} after ${this.last}`);
    }
    let inner;
    try {
      inner = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: 'AES-GCM', iv: nonce(counter), additionalData: body.subarray(0, FRAGMENT_HEAD) },
          await this.aesKey,
          body.subarray(FRAGMENT_HEAD),
        ),
      );
    } catch {
      throw new LiveError('forged', 'forged: signed, yet does not decrypt');
    }
    const flags = inner[0];
    if (flags & ~(KEYFRAME | END)) throw new LiveError('malformed', 'malformed: unknown fragment flags');
    // Checked again after the awaits: a later fragment may have been accepted meanwhile.
    if (counter <= this.last) {
      throw new LiveError('replayed', `replayed or late: fragment ${counter} after ${this.last}`);
    }
    this.last = counter;
    return {
      counter,
      keyframe: Boolean(flags & KEYFRAME),
      end: Boolean(flags & END),
      captureUs: readU64(inner, 1),
      chunk: inner.subarray(INNER),
    };
  }
}
