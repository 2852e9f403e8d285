// Sealed objects (FORMAT §3-§5, §8-§9): the reader. A port of doorbell/sealing/format.py,
// reader.py and doorbell/phone/rules.py's check_contents. `verify` checks structure and
// the device signature and touches no secret; `openEnvelope` then unwraps the data key,
// decrypts and applies the payload rules.
//
// Every failure is an ObjectError with a code:
//   malformed   not a well-formed sealed object, or a payload breaking §4
//   untrusted   signed by a device this phone has not pinned
//   forged      the signature does not verify (or is not strict)
//   not-for-us  no stanza is addressed to this phone (NotARecipient)
//   unopenable  addressed to this phone, yet its stanza or the payload does not decrypt
//   rejected    authentic, but its meta or keyring document breaks §4.1 or §7

import { sha256 as sha256Sync } from '@noble/hashes/sha2.js';
import { concat, readU16, readU32, readU64, readI64, toHex, u64, u8, utf8 } from '../bytes.js';
import { verifyStrict } from '../crypto/ed25519.js';
import { openBase } from '../crypto/hpke.js';
import { KeyringError, parseKeyring } from './keyring.js';
import { dumps, isJsonInteger, isJsonObject, parseStrictJson, quote } from './strictjson.js';

export const MAGIC = Uint8Array.of(0x89, 0x44, 0x42, 0x45, 0x4c, 0x4c, 0x0d, 0x0a);
export const VERSION = 1;
export const FIXED_HEADER_LEN = 95;
export const TAG_LEN = 16;
export const SIGNATURE_LEN = 64;
export const MAX_STANZAS = 64;
export const MAX_META = 16 * 1024;
export const MAX_BODY = 64 * 1024 * 1024;
export const MIN_INNER = 20;
export const KINDS = { 1: 'init', 2: 'segment', 3: 'event', 4: 'keyring', 5: 'notice' };
export const KIND = { init: 1, segment: 2, event: 3, keyring: 4, notice: 5 };
/** Stanza bytes after suite and tag: HPKE enc || ct of a 32-byte data key. */
export const STANZA_LEN = { 1: 32 + 48, 2: 1120 + 48 };

/** Padmé (FORMAT §4): leaks O(log log L) bits of the size for at most 12% overhead. */
export function padme(length) {
  if (length < 2) return length;
  const n = BigInt(length);
  const e = n.toString(2).length - 1; // floor(log2(L)), exactly
  const s = e.toString(2).length; // floor(log2(E)) + 1
  const mask = (1n << BigInt(e - s)) - 1n;
  return Number((n + mask) & ~mask);
}

export const MAX_CIPHERTEXT = padme(MIN_INNER + MAX_META + MAX_BODY) + TAG_LEN;

const SIGNATURE_CONTEXT = utf8('doorbell/v1 object signature\0');
const RECIPIENT_CONTEXT = utf8('doorbell/v1 recipient\0');
const HPKE_INFO_CONTEXT = utf8('doorbell/v1 data key\0');
const FORGED = 'this object was altered after the doorbell signed it, or forged';

export class ObjectError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'ObjectError';
    this.code = code;
  }
}

export class NotARecipient extends ObjectError {
  constructor(message) {
    super('not-for-us', message);
    this.name = 'NotARecipient';
  }
}

const malformed = (message) => new ObjectError('malformed', message);

/** Per-object recipient tag (FORMAT §3.2): unlinkable across objects without the key. */
export function recipientTag(deviceId, seq, suite, publicKey) {
  return sha256Sync(concat(RECIPIENT_CONTEXT, deviceId, u64(seq), u8(suite), publicKey)).subarray(0, 16);
}

/** HPKE info: binds a wrapped data key to this format, device, object and stanza. */
export function hpkeInfo(deviceId, seq, suite, tag) {
  return concat(HPKE_INFO_CONTEXT, deviceId, u64(seq), u8(suite), tag);
}

/** The storage name of object `seq` (FORMAT §8); `device` is the device id (bytes or hex). */
export function objectName(device, seq) {
  const hex = typeof device === 'string' ? device : toHex(device);
  return `${hex.slice(0, 16)}-${BigInt(seq).toString().padStart(20, '0')}.sealed`;
}

const NAME = /^([0-9a-f]{16})-([0-9]{20})\.sealed$/;
const U64_MAX = (1n << 64n) - 1n;

/** {deviceHex16, seq} for an exact FORMAT §8 name, else null. */
export function parseObjectName(name) {
  const match = NAME.exec(name);
  if (!match) return null;
  const seq = BigInt(match[2]);
  if (seq > U64_MAX) return null;
  return { deviceHex16: match[1], seq };
}

/**
 * Parse the cleartext structure of a sealed object, checking every length and bound.
 * No cryptography. Fields are views into `bytes`.
 */
export function parseEnvelope(bytes) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  if (bytes.length < MAGIC.length && MAGIC.subarray(0, bytes.length).every((b, i) => bytes[i] === b)) {
    throw malformed(`truncated: ${bytes.length} bytes, shorter than the magic`);
  }
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw malformed('not a Doorbell sealed object (bad magic)');
  }
  if (bytes.length < FIXED_HEADER_LEN) {
    throw malformed(`truncated header: ${bytes.length} bytes, need ${FIXED_HEADER_LEN}`);
  }
  const version = bytes[8];
  if (version !== VERSION) throw malformed(`unsupported version ${version} (this reader knows ${VERSION})`);
  const flags = bytes[9];
  if (flags !== 0) throw malformed(`reserved flags byte is 0x${flags.toString(16).padStart(2, '0')}, must be 0`);
  const count = bytes[94];
  if (count < 1 || count > MAX_STANZAS) throw malformed(`stanza count ${count} is outside 1..${MAX_STANZAS}`);
  let offset = FIXED_HEADER_LEN;
  const stanzas = [];
  for (let index = 0; index < count; index++) {
    if (offset + 17 > bytes.length) throw malformed(`stanza ${index}: truncated at byte ${offset}`);
    const suite = bytes[offset];
    const length = STANZA_LEN[suite];
    if (length === undefined) throw malformed(`stanza ${index}: unknown suite ${suite}`);
    const tag = bytes.subarray(offset + 1, offset + 17);
    offset += 17;
    if (offset + length > bytes.length) throw malformed(`stanza ${index}: truncated at byte ${offset}`);
    stanzas.push({ suite, tag, wrapped: bytes.subarray(offset, offset + length) });
    offset += length;
  }
  if (offset + 8 > bytes.length) throw malformed(`ciphertext length: truncated at byte ${offset}`);
  const ctLen = readU64(bytes, offset);
  offset += 8;
  if (ctLen < BigInt(MIN_INNER + TAG_LEN) || ctLen > BigInt(MAX_CIPHERTEXT)) {
    throw malformed(`ciphertext length ${ctLen} is outside ${MIN_INNER + TAG_LEN}..${MAX_CIPHERTEXT}`);
  }
  const signedLength = offset + Number(ctLen);
  const expected = signedLength + SIGNATURE_LEN;
  if (bytes.length !== expected) {
    const problem = bytes.length < expected ? 'truncated' : 'trailing bytes';
    throw malformed(`${problem}: object is ${bytes.length} bytes, header says ${expected}`);
  }
  const deviceId = bytes.subarray(10, 42);
  return {
    deviceId,
    deviceIdHex: toHex(deviceId),
    seq: readU64(bytes, 42),
    prev: bytes.subarray(50, 82),
    nonce: bytes.subarray(82, 94),
    stanzas,
    headerLength: offset,
    signedLength,
    signature: bytes.subarray(signedLength),
    chainHash: null,
    bytes,
  };
}

/** Parse a decrypted payload (FORMAT §4). It is authenticated: parse it strictly anyway. */
export function decodePayload(plaintext) {
  if (plaintext.length < MIN_INNER) throw malformed(`payload is ${plaintext.length} bytes, shorter than ${MIN_INNER}`);
  const kind = plaintext[0];
  if (!(kind in KINDS)) throw malformed(`payload: unknown kind ${kind}`);
  if (plaintext[1] !== 0) throw malformed('payload: reserved byte is not 0');
  const epoch = readU32(plaintext, 2);
  const timeUs = readI64(plaintext, 6);
  const metaLength = readU16(plaintext, 14);
  if (metaLength > MAX_META) throw malformed(`payload: metadata length ${metaLength} exceeds ${MAX_META}`);
  let offset = 16;
  if (offset + metaLength + 4 > plaintext.length) throw malformed('payload: metadata runs past the end');
  const meta = decodeMeta(plaintext.subarray(offset, offset + metaLength));
  offset += metaLength;
  const bodyLength = readU32(plaintext, offset);
  offset += 4;
  if (bodyLength > MAX_BODY) throw malformed(`payload: body length ${bodyLength} exceeds ${MAX_BODY}`);
  if (offset + bodyLength > plaintext.length) throw malformed(`payload: body length ${bodyLength} runs past the end`);
  if (!allZero(plaintext, offset + bodyLength)) throw malformed('payload: padding is not all zero');
  return { kind, epoch, timeUs, meta, body: plaintext.subarray(offset, offset + bodyLength) };
}

function allZero(bytes, from) {
  let i = from;
  const end = bytes.length;
  // Word at a time where aligned: the padding of a large segment is up to 12% of it.
  while (i < end && (bytes.byteOffset + i) % 4 !== 0) if (bytes[i++] !== 0) return false;
  const words = Math.floor((end - i) / 4);
  if (words > 0) {
    const view = new Uint32Array(bytes.buffer, bytes.byteOffset + i, words);
    for (let w = 0; w < words; w++) if (view[w] !== 0) return false;
    i += words * 4;
  }
  while (i < end) if (bytes[i++] !== 0) return false;
  return true;
}

function decodeMeta(raw) {
  if (raw.length === 0) return {};
  const meta = parseStrictJson(raw, (reason) => malformed(`payload: metadata: ${reason}`));
  if (!isJsonObject(meta)) throw malformed('payload: metadata is not a JSON object');
  return meta;
}

/**
 * What a phone holds: its key holders and the doorbells it pinned.
 * `devices`: raw 32-byte device public keys; `keys`: key holders (crypto/kem.js).
 */
export class Reader {
  constructor({ devices = [], keys = [] } = {}) {
    this.devices = new Map();
    for (const raw of devices) {
      const key = raw instanceof Uint8Array ? raw : new Uint8Array(raw);
      this.devices.set(toHex(sha256Sync(key)), key);
    }
    this.keys = keys;
  }

  /** The pinned public key of `deviceIdHex`; ObjectError 'untrusted' otherwise. */
  device(deviceIdHex) {
    const key = this.devices.get(deviceIdHex);
    if (!key) {
      throw new ObjectError(
        'untrusted',
        `signed by device ${deviceIdHex.slice(0, 16)}, which this phone does not trust: pin that doorbell first`,
      );
    }
    return key;
  }

  /** Structure, device and strict signature; returns the envelope. No secret is used. */
  async verify(bytes) {
    const envelope = parseEnvelope(bytes);
    const device = this.device(envelope.deviceIdHex);
    const data = envelope.bytes;
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', data.subarray(0, envelope.signedLength)));
    try {
      await verifyStrict(device, concat(SIGNATURE_CONTEXT, digest), envelope.signature);
    } catch (error) {
      throw new ObjectError('forged', `object ${envelope.seq}: ${FORGED} (${error.message})`);
    }
    envelope.chainHash = sha256Sync(envelope.signature);
    return envelope;
  }

  /** Whether one of this reader's keys has a stanza in `envelope`. */
  canOpen(envelope) {
    return this.matches(envelope).length > 0;
  }

  matches(envelope) {
    const found = [];
    for (const holder of this.keys) {
      const tag = recipientTag(envelope.deviceId, envelope.seq, holder.suite, holder.publicKey);
      for (const stanza of envelope.stanzas) {
        if (stanza.suite === holder.suite && equalTag(stanza.tag, tag)) found.push([holder, stanza]);
      }
    }
    return found;
  }

  async unwrap(envelope) {
    const matched = this.matches(envelope);
    for (const [holder, stanza] of matched) {
      const info = hpkeInfo(envelope.deviceId, envelope.seq, stanza.suite, stanza.tag);
      let dataKey;
      try {
        dataKey = await openBase(holder, stanza.wrapped, info, new Uint8Array(0));
      } catch {
        continue;
      }
      if (dataKey.length === 32) return dataKey;
    }
    if (matched.length) {
      // Signed by the device, addressed to us, yet unopenable: the object is invalid.
      throw new ObjectError(
        'unopenable',
        `object ${envelope.seq}: the stanza for this phone does not open; the doorbell sealed it wrongly, do not trust it`,
      );
    }
    throw new NotARecipient(
      `object ${envelope.seq} is not sealed to this phone's key (sealed before this phone was enrolled, or after it was removed)`,
    );
  }

  /** Open an envelope `verify` returned: unwrap, decrypt, payload rules, meta rules. */
  async openEnvelope(envelope) {
    const dataKey = await this.unwrap(envelope);
    const data = envelope.bytes;
    const key = await crypto.subtle.importKey('raw', dataKey, 'AES-GCM', false, ['decrypt']);
    dataKey.fill(0);
    let plaintext;
    try {
      plaintext = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: 'AES-GCM', iv: envelope.nonce, additionalData: data.subarray(0, envelope.headerLength) },
          key,
          data.subarray(envelope.headerLength, envelope.signedLength),
        ),
      );
    } catch {
      throw new ObjectError('unopenable', `object ${envelope.seq}: payload does not decrypt`);
    }
    const inner = decodePayload(plaintext);
    const opened = {
      deviceId: envelope.deviceId,
      deviceIdHex: envelope.deviceIdHex,
      seq: envelope.seq,
      prev: envelope.prev,
      chainHash: envelope.chainHash,
      stanzas: envelope.stanzas,
      kind: inner.kind,
      kindName: KINDS[inner.kind],
      epoch: inner.epoch,
      timeUs: inner.timeUs,
      meta: inner.meta,
      body: inner.body,
      keyring: null,
    };
    opened.keyring = checkContents(opened);
    return opened;
  }

  async open(bytes) {
    return this.openEnvelope(await this.verify(bytes));
  }
}

function equalTag(a, b) {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

// --- meta by kind (FORMAT §4.1) and keyring objects (§7): rules.py's check_contents -------

/**
 * Check an opened object's meta for its kind, and parse a keyring object's document.
 * Returns the keyring of a keyring object (null for other kinds); throws ObjectError
 * 'rejected'. A keyring object's meta epoch, payload epoch and document epoch must agree.
 */
export function checkContents(opened) {
  try {
    checkMeta(opened.kind, opened.meta);
  } catch (error) {
    if (error instanceof ObjectError) throw new ObjectError('rejected', error.message);
    throw error;
  }
  if (opened.kind !== KIND.keyring) return null;
  let keyring;
  try {
    keyring = parseKeyring(opened.body, `keyring object ${opened.seq}`);
  } catch (error) {
    if (error instanceof KeyringError) throw new ObjectError('rejected', error.message);
    throw error;
  }
  const epochs = [Number(opened.meta.epoch), opened.epoch, keyring.epoch];
  if (epochs[0] !== epochs[1] || epochs[1] !== epochs[2]) {
    throw new ObjectError(
      'rejected',
      `keyring object ${opened.seq}: meta epoch ${epochs[0]}, payload epoch ${epochs[1]} ` +
        `and document epoch ${epochs[2]} must be the same`,
    );
  }
  return keyring;
}

const ID = /^[0-9a-f]{32}$/;
const HASH = /^[0-9a-f]{64}$/;
export const NOTICES = ['clip-end', 'restart', 'discarded'];
const TWO64 = 1n << 64n;

const isNumber = (c, k) => typeof c[k] === 'number' || typeof c[k] === 'bigint';
const isStr = (c, k) => typeof c[k] === 'string';
const inRange = (c, k, low, high) => isJsonInteger(c, k) && BigInt(c[k]) >= low && BigInt(c[k]) < high;

const RULE = {
  id: [(c, k) => isStr(c, k) && ID.test(c[k]), '32 lower-case hex digits'],
  idOrEmpty: [(c, k) => c[k] === '' || (isStr(c, k) && ID.test(c[k])), '32 lower-case hex digits or empty'],
  hash: [(c, k) => isStr(c, k) && HASH.test(c[k]), '64 lower-case hex digits'],
  str: [isStr, 'a string'],
  number: [isNumber, 'a number'],
  u64: [(c, k) => inRange(c, k, 0n, TWO64), 'an integer in 0..2^64-1'],
  u32: [(c, k) => inRange(c, k, 0n, 1n << 32n), 'an integer in 0..2^32-1'],
  indexOrBefore: [(c, k) => inRange(c, k, -1n, TWO64), 'an integer in -1..2^64-1'],
  positiveInt: [(c, k) => isJsonInteger(c, k) && c[k] > 0, 'an integer above 0'],
  positiveNumber: [(c, k) => isNumber(c, k) && c[k] > 0, 'a number above 0'],
  nonNegativeNumber: [(c, k) => isNumber(c, k) && c[k] >= 0, 'a number of at least 0'],
  notice: [(c, k) => NOTICES.includes(c[k]), NOTICES.join(' or ')],
  object: [(c, k) => isJsonObject(c[k]), 'an object'],
  nullOrObject: [(c, k) => c[k] === null || isJsonObject(c[k]), 'null or an object'],
  nonEmptyList: [(c, k) => Array.isArray(c[k]) && c[k].length > 0, 'a non-empty list'],
};

// FORMAT §4.1; a key ending in "?" is optional.
const KEYS = {
  [KIND.init]: [
    ['stream', RULE.id],
    ['codec', RULE.str],
    ['width', RULE.positiveInt],
    ['height', RULE.positiveInt],
    ['fps', RULE.positiveNumber],
    ['camera?', RULE.str],
  ],
  [KIND.segment]: [
    ['stream', RULE.id],
    ['index', RULE.u64],
    ['start', RULE.number],
    ['duration', RULE.nonNegativeNumber],
    ['frames', RULE.u64],
  ],
  [KIND.event]: [
    ['type', RULE.str],
    ['clip', RULE.id],
    ['stream', RULE.idOrEmpty],
    ['first_index', RULE.u64],
    ['position?', RULE.number],
    ['camera?', RULE.str],
  ],
  [KIND.keyring]: [['epoch', RULE.u32]],
};
const NOTICE_KEYS = {
  'clip-end': [
    ['clip', RULE.id],
    ['stream', RULE.idOrEmpty],
    ['last_index', RULE.indexOrBefore],
    ['reason', RULE.str],
  ],
  restart: [
    ['previous', RULE.nullOrObject],
    ['skipped', RULE.object],
  ],
  discarded: [
    ['reason', RULE.str],
    ['ranges', RULE.nonEmptyList],
  ],
};

/**
 * Throw ObjectError ('malformed') naming the key when `meta` lacks a key `kind` requires
 * or holds one of the wrong type. Unknown keys are allowed: readers ignore them.
 */
export function checkMeta(kind, meta) {
  let where = `${KINDS[kind]} meta`;
  if (kind !== KIND.notice) {
    checkKeys(meta, where, KEYS[kind]);
    return;
  }
  const notice = field(meta, where, 'notice', RULE.notice);
  where = `${notice} notice meta`;
  checkKeys(meta, where, NOTICE_KEYS[notice]);
  if (notice === 'restart') {
    if (meta.previous !== null) {
      checkKeys(meta.previous, `${where}: previous`, [
        ['seq', RULE.u64],
        ['hash', RULE.hash],
      ]);
    }
    checkKeys(meta.skipped, `${where}: skipped`, [
      ['first', RULE.u64],
      ['last', RULE.indexOrBefore],
    ]);
  } else if (notice === 'discarded') {
    meta.ranges.forEach((item, number) => {
      const at = `${where}: range ${number}`;
      if (!isJsonObject(item)) throw malformed(`${at} is not an object`);
      checkKeys(item, at, [
        ['first', RULE.u64],
        ['last', RULE.u64],
        ['last_hash', RULE.hash],
      ]);
    });
  }
}

function checkKeys(meta, where, keys) {
  for (const [key, rule] of keys) {
    if (key.endsWith('?')) {
      if (Object.hasOwn(meta, key.slice(0, -1))) field(meta, where, key.slice(0, -1), rule);
    } else {
      field(meta, where, key, rule);
    }
  }
}

function field(meta, where, key, [valid, what]) {
  if (!Object.hasOwn(meta, key)) throw malformed(`${where}: ${quote(key)} is missing`);
  if (!valid(meta, key)) {
    throw malformed(`${where}: ${quote(key)} is ${dumps(meta[key]).slice(0, 60)}, must be ${what}`);
  }
  return meta[key];
}
