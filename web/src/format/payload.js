// The plaintext of a sealed object (FORMAT §4) and its meta by kind (§4.1): decoding a
// decrypted payload as strictly as hostile input, and the keys a reader that uses a kind
// requires. A port of doorbell/sealing/format.py's decode_inner and check_meta.

import { readI64, readU16, readU32 } from '../bytes.js';
import { malformed, rejected } from './errors.js';
import { parseStrictJson, pyRepr } from './strictjson.js';

export const KIND = Object.freeze({ INIT: 1, SEGMENT: 2, EVENT: 3, KEYRING: 4, NOTICE: 5 });
export const KIND_NAMES = Object.freeze({ 1: 'init', 2: 'segment', 3: 'event', 4: 'keyring', 5: 'notice' });
export const MAX_META = 16 * 1024;
export const MAX_BODY = 64 * 1024 * 1024;
// kind, reserved, epoch (u32), time (i64), meta length (u16); then the body length (u32)
const INNER_LEN = 16;
export const MIN_INNER = INNER_LEN + 4;
export const TAG_LEN = 16;

/** Padmé (FORMAT §4): the padded length of a payload of `length` bytes. */
export function padme(length) {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError('padme takes a length');
  if (length < 2) return length;
  const exponent = length.toString(2).length - 1;
  const mantissaBits = exponent.toString(2).length;
  const step = 2 ** (exponent - mantissaBits);
  return Math.ceil(length / step) * step;
}

export const MAX_CIPHERTEXT = padme(MIN_INNER + MAX_META + MAX_BODY) + TAG_LEN;

/** Whether every byte of `bytes` is zero; a word at a time, padding can be megabytes. */
function allZero(bytes) {
  let at = 0;
  let end = bytes.length;
  let any = 0;
  while (at < end && (bytes.byteOffset + at) % 4 !== 0) any |= bytes[at++];
  const words = (end - at) >>> 2;
  if (words > 0) {
    const view = new Uint32Array(bytes.buffer, bytes.byteOffset + at, words);
    for (let i = 0; i < words; i++) any |= view[i];
    at += words * 4;
  }
  while (at < end) any |= bytes[at++];
  return any === 0;
}

/**
 * Decode a decrypted payload: { kind, kindName, epoch (Number), timeUs (BigInt), meta,
 * body (a view of `plaintext`) }. Throws ObjectError 'rejected' naming the broken rule.
 */
export function decodePayload(plaintext) {
  if (plaintext.length < MIN_INNER) {
    throw rejected(`payload is ${plaintext.length} bytes, shorter than ${MIN_INNER}`);
  }
  const kind = plaintext[0];
  if (KIND_NAMES[kind] === undefined) throw rejected(`payload: unknown kind ${kind}`);
  if (plaintext[1] !== 0) throw rejected('payload: reserved byte is not 0');
  const epoch = readU32(plaintext, 2);
  const timeUs = readI64(plaintext, 6);
  const metaLen = readU16(plaintext, 14);
  if (metaLen > MAX_META) throw rejected(`payload: metadata length ${metaLen} exceeds ${MAX_META}`);
  let offset = INNER_LEN;
  if (offset + metaLen + 4 > plaintext.length) throw rejected('payload: metadata runs past the end');
  const meta = decodeMeta(plaintext.subarray(offset, offset + metaLen));
  offset += metaLen;
  const bodyLen = readU32(plaintext, offset);
  offset += 4;
  if (bodyLen > MAX_BODY) throw rejected(`payload: body length ${bodyLen} exceeds ${MAX_BODY}`);
  if (offset + bodyLen > plaintext.length) throw rejected(`payload: body length ${bodyLen} runs past the end`);
  if (!allZero(plaintext.subarray(offset + bodyLen))) throw rejected('payload: padding is not all zero');
  return { kind, kindName: KIND_NAMES[kind], epoch, timeUs, meta, body: plaintext.subarray(offset, offset + bodyLen) };
}

function decodeMeta(raw) {
  if (raw.length === 0) return {};
  const meta = parseStrictJson(raw, (reason) => rejected(`payload: metadata: ${reason}`));
  if (!isObject(meta)) throw rejected('payload: metadata is not a JSON object');
  return meta;
}

// --- meta by kind (FORMAT §4.1): what a reader that uses a kind must reject ---------------

export const NOTICES = Object.freeze(['clip-end', 'restart', 'discarded']);
const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = (1n << 32n) - 1n;
const ID = /^[0-9a-f]{32}$/;
const HASH = /^[0-9a-f]{64}$/;

export const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
const isInt = (value) => typeof value === 'bigint';
const isNumber = (value) => typeof value === 'bigint' || (typeof value === 'number' && Number.isFinite(value));
const isStr = (value) => typeof value === 'string';
const isId = (value) => isStr(value) && ID.test(value);
const has = (object, key) => Object.hasOwn(object, key);

// A rule: what a value must satisfy, and how an error message says it.
const ID_HEX = [isId, '32 lower-case hex digits'];
const ID_OR_EMPTY = [(v) => v === '' || isId(v), '32 lower-case hex digits or empty'];
const HASH_HEX = [(v) => isStr(v) && HASH.test(v), '64 lower-case hex digits'];
const STR = [isStr, 'a string'];
const NUMBER = [isNumber, 'a number'];
const U64 = [(v) => isInt(v) && v >= 0n && v <= U64_MAX, 'an integer in 0..2^64-1'];
const INDEX_OR_BEFORE = [(v) => isInt(v) && v >= -1n && v <= U64_MAX, 'an integer in -1..2^64-1'];
const NOTICE = [(v) => NOTICES.includes(v), NOTICES.join(' or ')];
const OBJECT = [isObject, 'an object'];

// A key ending in "?" is optional.
const KEYS = {
  [KIND.INIT]: [
    ['stream', ID_HEX],
    ['codec', STR],
    ['width', [(v) => isInt(v) && v > 0n, 'an integer above 0']],
    ['height', [(v) => isInt(v) && v > 0n, 'an integer above 0']],
    ['fps', [(v) => isNumber(v) && v > 0, 'a number above 0']],
    ['camera?', STR],
  ],
  [KIND.SEGMENT]: [
    ['stream', ID_HEX],
    ['index', U64],
    ['start', NUMBER],
    ['duration', [(v) => isNumber(v) && v >= 0, 'a number of at least 0']],
    ['frames', U64],
  ],
  [KIND.EVENT]: [
    ['type', STR],
    ['clip', ID_HEX],
    ['stream', ID_OR_EMPTY],
    ['first_index', U64],
    ['position?', NUMBER],
    ['camera?', STR],
  ],
  [KIND.KEYRING]: [['epoch', [(v) => isInt(v) && v >= 0n && v <= U32_MAX, 'an integer in 0..2^32-1']]],
};
const NOTICE_KEYS = {
  'clip-end': [
    ['clip', ID_HEX],
    ['stream', ID_OR_EMPTY],
    ['last_index', INDEX_OR_BEFORE],
    ['reason', STR],
  ],
  restart: [
    ['previous', [(v) => v === null || isObject(v), 'null or an object']],
    ['skipped', OBJECT],
  ],
  discarded: [
    ['reason', STR],
    ['ranges', [(v) => Array.isArray(v) && v.length > 0, 'a non-empty list']],
  ],
};

/** Throws ObjectError 'rejected' naming the key when `meta` lacks a key `kind` requires or
 * holds one of the wrong type. Unknown keys are allowed: readers ignore them. */
export function checkMeta(kind, meta) {
  let where = `${KIND_NAMES[kind]} meta`;
  if (kind !== KIND.NOTICE) {
    checkKeys(meta, where, KEYS[kind]);
    return;
  }
  const notice = field(meta, where, 'notice', NOTICE);
  where = `${notice} notice meta`;
  checkKeys(meta, where, NOTICE_KEYS[notice]);
  if (notice === 'restart') {
    if (meta.previous !== null) {
      checkKeys(meta.previous, `${where}: previous`, [['seq', U64], ['hash', HASH_HEX]]);
    }
    checkKeys(meta.skipped, `${where}: skipped`, [['first', U64], ['last', INDEX_OR_BEFORE]]);
  } else if (notice === 'discarded') {
    meta.ranges.forEach((item, number) => {
      const at = `${where}: range ${number}`;
      if (!isObject(item)) throw rejected(`${at} is not an object`);
      checkKeys(item, at, [['first', U64], ['last', U64], ['last_hash', HASH_HEX]]);
    });
  }
}

function checkKeys(meta, where, keys) {
  for (const [key, rule] of keys) {
    if (key.endsWith('?')) {
      if (has(meta, key.slice(0, -1))) field(meta, where, key.slice(0, -1), rule);
    } else {
      field(meta, where, key, rule);
    }
  }
}

function field(meta, where, key, [valid, what]) {
  if (!has(meta, key)) throw rejected(`${where}: ${pyRepr(key)} is missing`);
  const value = meta[key];
  if (!valid(value)) throw rejected(`${where}: ${pyRepr(key)} is ${pyJson(value).slice(0, 60)}, must be ${what}`);
  return value;
}

/** A value as Python's json.dumps writes it (ASCII only), for messages that quote it. */
export function pyJson(value) {
  if (value === null) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') return pyFloat(value);
  if (typeof value === 'string') {
    return `"${value.replace(/[\\"\u0000-\u001f\u007f-\uffff]/g, (char) => {
      const short = { '\\': '\\\\', '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' }[char];
      return short ?? (char === '\u007f' ? char : `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
    })}"`;
  }
  if (Array.isArray(value)) return `[${value.map(pyJson).join(', ')}]`;
  return `{${Object.entries(value).map(([k, v]) => `${pyJson(k)}: ${pyJson(v)}`).join(', ')}}`;
}

/** Python's repr of a float: the shortest round trip, in exponent form below 1e-4 and from 1e16. */
function pyFloat(value) {
  if (Object.is(value, -0)) return '-0.0';
  const [mantissa, exponentText] = value.toExponential().split('e');
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= 16) {
    const sign = exponent < 0 ? '-' : '+';
    return `${mantissa}e${sign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  const text = String(value);
  return text.includes('.') ? text : `${text}.0`;
}
