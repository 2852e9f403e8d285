// The keyring document (FORMAT §7), versions 1 and 2: who can open what the doorbell seals,
// by epoch. Parsed as doorbell/sealing/keyring.py parses it, check for check, so that a
// keyring object valid for the reference phone is valid here and no other is.

import { x25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { equal, toHex, utf8 } from '../bytes.js';
import { KeyStringError, PREFIX, SUITES, decodeKeyString, encodeKeyString } from '../keystrings.js';
import { isObject } from './payload.js';
import { parseStrictJson, pyRepr } from './strictjson.js';

export const KEYRING_FORMAT = 'doorbell-keyring';
export const KEYRING_VERSION = 2;
export const READABLE_VERSIONS = Object.freeze([1, 2]);
export const ROLES = Object.freeze(['owner', 'member', 'guest', 'recovery']);
export const MAX_RECIPIENTS = 64;
export const MAX_NAME_LEN = 64;
export const MAX_KEYRING_BYTES = 256 * 1024;
// Characters that reorder or hide text: a name must look the same on every phone.
const INVISIBLE = /[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/u;
// Python's strptime(text, "%Y-%m-%dT%H:%M:%SZ") pattern, case-insensitive as strptime is:
// it takes one-digit fields and a space before a one-digit day. Its \d also takes other
// scripts' digits; this one takes ASCII digits only.
const TIME = /^(\d\d\d\d)-(1[0-2]|0[1-9]|[1-9])-(3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])T(2[0-3]|[0-1]\d|\d):([0-5]\d|\d):(6[0-1]|[0-5]\d|\d)Z$/i;
const X25519_PROBE = new Uint8Array(32).fill(0x5a);

/** A keyring document that breaks a rule of FORMAT §7; `code` is 'keyring'. */
export class KeyringError extends Error {
  constructor(message) {
    super(message);
    this.name = 'KeyringError';
    this.code = 'keyring';
  }
}

/** Python's repr of a parsed JSON value, as its messages show one. */
function shown(value) {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'string') return pyRepr(value);
  if (typeof value === 'bigint') return value.toString();
  return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? Number(v) : v)) ?? String(value);
}

/**
 * Parse a keyring document (bytes or text). `where` names its source in every error.
 * Returns a frozen { version, epoch, recipients: [{ name, role, suite ('x25519' or
 * 'mlkem768-x25519'), suiteByte (1 or 2), key (the key string, canonical), publicKey (raw),
 * signingKey (raw or null), added (Date), expires (Date or null) }] }. A version 1 document's recipients are owners without a
 * signing key. Throws KeyringError.
 */
export function parseKeyring(raw, where = 'keyring') {
  const size = typeof raw === 'string' ? utf8(raw).length : raw.length;
  if (size > MAX_KEYRING_BYTES) throw new KeyringError(`${where}: keyring is ${size} bytes, limit ${MAX_KEYRING_BYTES}`);
  const document = parseStrictJson(raw, (reason) => new KeyringError(`${where}: not a JSON keyring: ${reason}`));
  return keyringFromDocument(document, where);
}

/** A keyring from an already parsed document (strict JSON: integers are BigInt). */
export function keyringFromDocument(document, where = 'keyring') {
  if (!isObject(document) || document.format !== KEYRING_FORMAT || !Object.hasOwn(document, 'format')) {
    throw new KeyringError(`${where}: not a Doorbell keyring (format field)`);
  }
  const version = document.version;
  if (typeof version !== 'bigint' || !READABLE_VERSIONS.includes(Number(version))) {
    throw new KeyringError(`${where}: unsupported keyring version ${shown(version)}`);
  }
  const epoch = document.epoch;
  if (typeof epoch !== 'bigint' || epoch < 0n || epoch >= 1n << 32n) {
    throw new KeyringError(`${where}: epoch must be an integer in 0..2^32-1`);
  }
  const entries = document.recipients;
  if (!Array.isArray(entries) || entries.length > MAX_RECIPIENTS) {
    throw new KeyringError(`${where}: recipients must be a list of at most ${MAX_RECIPIENTS}`);
  }
  const recipients = entries.map((entry, index) => parseRecipient(entry, `${where}: recipient ${index}`, Number(version)));
  unique(where, 'names', recipients.map((r) => r.name));
  unique(where, 'keys', recipients.map((r) => toHex(r.publicKey)));
  unique(where, 'signing keys', recipients.filter((r) => r.signingKey).map((r) => toHex(r.signingKey)));
  return Object.freeze({ version: Number(version), epoch: Number(epoch), recipients: Object.freeze(recipients) });
}

function unique(where, label, values) {
  const first = new Map();
  values.forEach((value, index) => {
    if (first.has(value)) {
      throw new KeyringError(`${where}: duplicate recipient ${label}: recipients ${first.get(value)} and ${index}`);
    }
    first.set(value, index);
  });
}

function parseRecipient(entry, where, version) {
  if (!isObject(entry)) throw new KeyringError(`${where}: not an object`);
  const { name, suite, key, added } = pick(entry, ['name', 'suite', 'key', 'added']);
  if (typeof name !== 'string') throw new KeyringError(`${where}: name must be a string`);
  try {
    checkName(name);
  } catch (error) {
    throw new KeyringError(`${where}: ${error.message}`);
  }
  if (typeof suite !== 'string' || typeof key !== 'string' || typeof added !== 'string') {
    throw new KeyringError(`${where}: suite, key and added must be strings`);
  }
  const { suite: keySuite, raw } = recipientPublicKey(key, where);
  const labelled = Object.values(SUITES).find((s) => s.label === suite);
  if (labelled === undefined) {
    throw new KeyringError(`${where}: unknown suite ${pyRepr(suite)}; expected one of: x25519, mlkem768-x25519`);
  }
  if (labelled.byte !== keySuite) throw new KeyringError(`${where}: suite ${pyRepr(suite)} does not match the key`);
  const when = parseTime(added, where, 'added');
  const recipient = {
    name,
    role: 'owner',
    suite: labelled.label,
    suiteByte: keySuite,
    key: encodeKeyString(PREFIX.public[keySuite], raw),
    publicKey: raw,
    signingKey: null,
    added: when,
    expires: null,
  };
  // Version 1 had no roles: every phone was enrolled by the owner at the doorbell.
  if (version !== 1) Object.assign(recipient, versionTwoFields(entry, where, when));
  return Object.freeze(recipient);
}

function pick(entry, keys) {
  return Object.fromEntries(keys.map((k) => [k, Object.hasOwn(entry, k) ? entry[k] : undefined]));
}

function versionTwoFields(entry, where, added) {
  const role = Object.hasOwn(entry, 'role') ? entry.role : undefined;
  if (typeof role !== 'string' || !ROLES.includes(role)) {
    throw new KeyringError(`${where}: role must be one of ${ROLES.join(', ')}, got ${shown(role)}`);
  }
  let signingKey = null;
  if (Object.hasOwn(entry, 'signing_key')) {
    const text = entry.signing_key;
    if (typeof text !== 'string') throw new KeyringError(`${where}: signing_key must be a string`);
    try {
      signingKey = decodeKeyString(text, [PREFIX.signing]).raw;
    } catch (error) {
      if (!(error instanceof KeyStringError)) throw error;
      throw new KeyringError(`${where}: signing_key: ${error.message}`);
    }
  }
  let expires = null;
  if (Object.hasOwn(entry, 'expires')) {
    const text = entry.expires;
    if (typeof text !== 'string') throw new KeyringError(`${where}: expires must be a string`);
    expires = parseTime(text, where, 'expires');
  }
  if ((role === 'guest') !== (expires !== null)) {
    throw new KeyringError(`${where}: a guest has an expires time, and only a guest`);
  }
  if (expires !== null && expires.getTime() <= added.getTime()) {
    throw new KeyringError(`${where}: expires is not after added`);
  }
  return { role, signingKey, expires };
}

// Keys already found usable: a keyring names the same phones object after object.
const usable = new Set();
const MLKEM_Q = 3329;

/**
 * Throws KeyStringError unless `raw` is a public key of suite `suite` (1 or 2) that a seal
 * could use (FORMAT §2, "key material the algorithm rejects"), as pyca's trial wrap
 * decides: an X25519 point of small order is refused, and so is an ML-KEM-768
 * encapsulation key whose coefficients are not reduced mod q (FIPS 203 section 7.2).
 */
export function checkPublicKey(suite, raw) {
  const label = SUITES[suite]?.label;
  if (label === undefined) throw new KeyStringError(`unknown suite ${suite}`);
  if (!(raw instanceof Uint8Array) || raw.length !== SUITES[suite].publicLen) {
    throw new KeyStringError(`${label} public key must be ${SUITES[suite].publicLen} bytes, got ${raw?.length}`);
  }
  const id = `${suite}:${toHex(raw)}`;
  if (usable.has(id)) return;
  if (suite === 2) {
    // ByteDecode12 of the 1152 bytes before rho: two 12-bit coefficients per 3 bytes.
    for (let i = 0; i < 1152; i += 3) {
      const a = raw[i] | ((raw[i + 1] & 0x0f) << 8);
      const b = (raw[i + 1] >> 4) | (raw[i + 2] << 4);
      if (a >= MLKEM_Q || b >= MLKEM_Q) {
        throw new KeyStringError(`invalid ${label} public key: the ML-KEM-768 key is not reduced mod q`);
      }
    }
  }
  try {
    x25519.getSharedSecret(X25519_PROBE, raw.subarray(raw.length - 32));
  } catch {
    throw new KeyStringError(`${label} public key is not a usable key (a degenerate point)`);
  }
  usable.add(id);
}

/** A phone public key string (FORMAT §2), decoded and checked as usable:
 * { suiteByte, publicKey }. Throws KeyStringError. */
export function parsePublicKey(text) {
  const { prefix, raw } = decodeKeyString(text, [PREFIX.public[1], PREFIX.public[2]]);
  const suiteByte = prefix === PREFIX.public[1] ? 1 : 2;
  checkPublicKey(suiteByte, raw);
  return { suiteByte, publicKey: raw };
}

function recipientPublicKey(text, where) {
  try {
    const { suiteByte, publicKey } = parsePublicKey(text);
    return { suite: suiteByte, raw: publicKey };
  } catch (error) {
    if (!(error instanceof KeyStringError)) throw error;
    throw new KeyringError(`${where}: ${error.message}`);
  }
}

/** The fingerprint people compare by eye (FORMAT §1): SHA-256's first 16 bytes, grouped. */
export function keyFingerprint(raw) {
  return toHex(sha256(raw).subarray(0, 16)).match(/.{4}/g).join(':');
}

/** The recipient of `keyring` whose public key is `publicKey` (raw bytes), or null. */
export function findRecipient(keyring, publicKey) {
  return keyring.recipients.find((r) => equal(r.publicKey, publicKey)) ?? null;
}

/** Names are shown to every phone: 1..64 characters, printable, no surrounding space. */
export function checkName(name) {
  const chars = [...name];
  if (chars.length < 1 || chars.length > MAX_NAME_LEN) {
    throw new KeyringError(`name must be 1 to ${MAX_NAME_LEN} characters, got ${chars.length}`);
  }
  const position = chars.findIndex((char) => INVISIBLE.test(char));
  if (position >= 0) {
    const hex = chars[position].codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
    throw new KeyringError(`name ${pyRepr(name)} has control characters: U+${hex} at position ${position} reorders or hides text`);
  }
  if (name !== pyStrip(name) || /\p{C}/u.test(name)) {
    throw new KeyringError(`name ${pyRepr(name)} has control characters or surrounding spaces`);
  }
}

// Python's str.strip(): whitespace is what str.isspace() calls it, beyond JavaScript's trim.
const PY_SPACE = /^[\s\x1c-\x1f\x85]+|[\s\x1c-\x1f\x85]+$/g;
const pyStrip = (text) => text.replace(PY_SPACE, '');

function daysIn(year, month) {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** A keyring time, YYYY-MM-DDTHH:MM:SSZ in UTC, as a Date; taken as Python's strptime takes it. */
export function parseTime(text, where, field) {
  const match = TIME.exec(text);
  const bad = () => new KeyringError(`${where}: ${field} ${pyRepr(text)} is not YYYY-MM-DDTHH:MM:SSZ`);
  if (match === null) throw bad();
  const [year, month, day, hour, minute, second] = match.slice(1).map((part) => Number(part.trim()));
  if (year < 1 || day > daysIn(year, month) || second > 59) throw bad();
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, 0);
  return date;
}

/** A Date as the keyring writes it: YYYY-MM-DDTHH:MM:SSZ. */
export function formatTime(date) {
  const pad = (n, width = 2) => String(n).padStart(width, '0');
  return (
    `${pad(date.getUTCFullYear(), 4)}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}` +
    `T${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}Z`
  );
}

/** The keyring document as the device publishes it (Keyring.to_json): version 2, the
 * same bytes doorbell/sealing/keyring.py writes for the same keyring. */
export function keyringDocument(keyring) {
  const document = {
    format: KEYRING_FORMAT,
    version: KEYRING_VERSION,
    epoch: keyring.epoch,
    recipients: keyring.recipients.map((r) => {
      const entry = { name: r.name, role: r.role, suite: SUITES[r.suiteByte].label, key: r.key };
      if (r.signingKey) entry.signing_key = encodeKeyString(PREFIX.signing, r.signingKey);
      entry.added = formatTime(r.added);
      if (r.expires) entry.expires = formatTime(r.expires);
      return entry;
    }),
  };
  return JSON.stringify(document, null, 2) + '\n';
}
