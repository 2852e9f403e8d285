// The keyring document (FORMAT §7), read as doorbell/sealing/keyring.py reads it:
// versions 1 and 2, every rule checked, every error naming the recipient and the field.

import { sha256 } from '@noble/hashes/sha2.js';
import { equal, toHex } from '../bytes.js';
import { decodeKeyString, KeyStringError, PREFIX, SUITES } from '../keystrings.js';
import { isJsonInteger, isJsonObject, parseStrictJson, quote } from './strictjson.js';

export const KEYRING_FORMAT = 'doorbell-keyring';
export const READABLE_VERSIONS = [1, 2];
export const MAX_RECIPIENTS = 64;
export const MAX_NAME_LEN = 64;
export const MAX_KEYRING_BYTES = 256 * 1024;
export const ROLES = ['owner', 'member', 'guest', 'recovery'];
// Characters that reorder or hide text: a name must look the same to every phone.
const INVISIBLE = /[\u200B-\u200F\u202A-\u202E\u2066-\u2069\uFEFF]/u;
const CONTROL = /\p{C}/u;
// Python's strptime("%Y-%m-%dT%H:%M:%SZ"), which the reference reader uses: it is that
// lenient (one-digit fields, either case), and no more.
const TIME = /^(\d{4})-(1[0-2]|0[1-9]|[1-9])-(3[01]|[12]\d|0[1-9]|[1-9]| [1-9])T(2[0-3]|[01]\d|\d):([0-5]\d|\d):(6[01]|[0-5]\d|\d)Z$/i;
const P = 2n ** 255n - 19n;
// X25519 u-coordinates of small order (and those equal to them mod p): every shared
// secret with them is zero, so no seal to such a key could be made.
const LOW_ORDER = new Set([
  0n,
  1n,
  P - 1n,
  325606250916557431795983626356110631294008115727848805560023387167927233504n,
  39382357235489614581723060781553021112529911719440698176882885853963445705823n,
]);
const MLKEM_Q = 3329;

export class KeyringError extends Error {
  constructor(message) {
    super(message);
    this.name = 'KeyringError';
    this.code = 'keyring';
  }
}

/**
 * Parse a keyring document (bytes or text). `where` names its source in every error.
 * Returns {epoch, version, recipients: [{name, role, suite, suiteByte, key, publicKey,
 * signingKey, added, expires}]}, `added` and `expires` Dates; throws KeyringError.
 */
export function parseKeyring(raw, where = 'keyring') {
  const size = typeof raw === 'string' ? new TextEncoder().encode(raw).length : raw.length;
  if (size > MAX_KEYRING_BYTES) throw new KeyringError(`${where}: keyring is ${size} bytes, limit ${MAX_KEYRING_BYTES}`);
  const document = parseStrictJson(raw, (reason) => new KeyringError(`${where}: not a JSON keyring: ${reason}`));
  return keyringFromDocument(document, where);
}

/** A keyring from an already parsed document (strict JSON). */
export function keyringFromDocument(document, where = 'keyring') {
  if (!isJsonObject(document) || document.format !== KEYRING_FORMAT) {
    throw new KeyringError(`${where}: not a Doorbell keyring (format field)`);
  }
  const version = document.version;
  if (!isJsonInteger(document, 'version') || !READABLE_VERSIONS.includes(version)) {
    throw new KeyringError(`${where}: unsupported keyring version ${pyRepr(version)}`);
  }
  const epoch = document.epoch;
  if (!isJsonInteger(document, 'epoch') || !(epoch >= 0 && epoch < 2 ** 32)) {
    throw new KeyringError(`${where}: epoch must be an integer in 0..2^32-1`);
  }
  const entries = document.recipients;
  if (!Array.isArray(entries) || entries.length > MAX_RECIPIENTS) {
    throw new KeyringError(`${where}: recipients must be a list of at most ${MAX_RECIPIENTS}`);
  }
  const recipients = entries.map((entry, index) => parseRecipient(entry, `${where}: recipient ${index}`, version));
  unique(where, 'names', recipients.map((r) => r.name));
  unique(where, 'keys', recipients.map((r) => toHex(r.publicKey)));
  unique(where, 'signing keys', recipients.filter((r) => r.signingKey).map((r) => toHex(r.signingKey)));
  return { epoch: Number(epoch), version, recipients };
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
  if (!isJsonObject(entry)) throw new KeyringError(`${where}: not an object`);
  const { name, suite, key, added } = entry;
  if (typeof name !== 'string') throw new KeyringError(`${where}: name must be a string`);
  try {
    checkName(name);
  } catch (error) {
    throw new KeyringError(`${where}: ${error.message}`);
  }
  if (typeof suite !== 'string' || typeof key !== 'string' || typeof added !== 'string') {
    throw new KeyringError(`${where}: suite, key and added must be strings`);
  }
  let publicKey;
  let suiteByte;
  try {
    ({ publicKey, suiteByte } = parsePublicKey(key));
    const labelled = Object.values(SUITES).find((s) => s.label === suite);
    if (!labelled) {
      throw new KeyStringError(`unknown suite ${quote(suite)}; expected one of: x25519, mlkem768-x25519`);
    }
    if (labelled.byte !== suiteByte) throw new KeyringError(`${where}: suite ${quote(suite)} does not match the key`);
  } catch (error) {
    if (error instanceof KeyringError) throw error;
    throw new KeyringError(`${where}: ${error.message}`);
  }
  const addedAt = parseTime(added, where, 'added');
  const recipient = {
    name,
    role: 'owner',
    suite: SUITES[suiteByte].label,
    suiteByte,
    key,
    publicKey,
    signingKey: null,
    added: addedAt,
    expires: null,
  };
  // Version 1 had no roles: every phone was enrolled by the owner at the doorbell.
  if (version === 1) return recipient;
  const role = entry.role;
  if (typeof role !== 'string' || !ROLES.includes(role)) {
    throw new KeyringError(`${where}: role must be one of ${ROLES.join(', ')}, got ${pyRepr(role)}`);
  }
  recipient.role = role;
  if ('signing_key' in entry) {
    const text = entry.signing_key;
    if (typeof text !== 'string') throw new KeyringError(`${where}: signing_key must be a string`);
    try {
      recipient.signingKey = decodeKeyString(text, [PREFIX.signing]).raw;
    } catch (error) {
      throw new KeyringError(`${where}: signing_key: ${error.message}`);
    }
  }
  if ('expires' in entry) {
    const text = entry.expires;
    if (typeof text !== 'string') throw new KeyringError(`${where}: expires must be a string`);
    recipient.expires = parseTime(text, where, 'expires');
  }
  if ((role === 'guest') !== (recipient.expires !== null)) {
    throw new KeyringError(`${where}: a guest has an expires time, and only a guest`);
  }
  if (recipient.expires !== null && recipient.expires <= addedAt) {
    throw new KeyringError(`${where}: expires is not after added`);
  }
  return recipient;
}

/**
 * A phone public key string (FORMAT §2) -> {suiteByte, publicKey}, refusing key material
 * no seal could use: an X25519 point of small order, an ML-KEM-768 encapsulation key whose
 * coefficients are not reduced (FIPS 203 §7.2 modulus check). Throws KeyStringError.
 */
export function parsePublicKey(text) {
  const { prefix, raw } = decodeKeyString(text, [PREFIX.public[1], PREFIX.public[2]]);
  const suiteByte = prefix === PREFIX.public[1] ? 1 : 2;
  checkPublicKey(suiteByte, raw);
  return { suiteByte, publicKey: raw };
}

/** Throws KeyStringError unless `raw` is a usable public key of suite `suiteByte`. */
export function checkPublicKey(suiteByte, raw) {
  const label = SUITES[suiteByte].label;
  if (raw.length !== SUITES[suiteByte].publicLen) {
    throw new KeyStringError(`${label} public key must be ${SUITES[suiteByte].publicLen} bytes, got ${raw.length}`);
  }
  if (suiteByte === 2) {
    for (let i = 0; i < 1152; i += 3) {
      const a = raw[i] | ((raw[i + 1] & 0x0f) << 8);
      const b = (raw[i + 1] >> 4) | (raw[i + 2] << 4);
      if (a >= MLKEM_Q || b >= MLKEM_Q) {
        throw new KeyStringError('invalid mlkem768-x25519 public key: the ML-KEM-768 key is not reduced mod q');
      }
    }
  }
  let u = 0n;
  const x = raw.subarray(raw.length - 32);
  for (let i = 31; i >= 0; i--) u = (u << 8n) | BigInt(i === 31 ? x[i] & 0x7f : x[i]);
  if (LOW_ORDER.has(u % P)) throw new KeyStringError(`${label} public key is not a usable key (a degenerate point)`);
}

/** Names are shown to every phone: short, printable, no control characters. */
export function checkName(name) {
  const chars = [...name];
  if (chars.length < 1 || chars.length > MAX_NAME_LEN) {
    throw new KeyringError(`name must be 1 to ${MAX_NAME_LEN} characters, got ${chars.length}`);
  }
  const position = chars.findIndex((c) => INVISIBLE.test(c));
  if (position >= 0) {
    const code = chars[position].codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
    throw new KeyringError(
      `name ${quote(name)} has control characters: U+${code} at position ${position} reorders or hides text`,
    );
  }
  if (name !== name.trim() || CONTROL.test(name)) {
    throw new KeyringError(`name ${quote(name)} has control characters or surrounding spaces`);
  }
}

function parseTime(text, where, field) {
  const match = TIME.exec(text);
  const fail = () => new KeyringError(`${where}: ${field} ${quote(text)} is not YYYY-MM-DDTHH:MM:SSZ`);
  if (!match) throw fail();
  const [year, month, day, hour, minute, second] = match.slice(1).map((f) => Number(f.trim()));
  const daysIn = [31, year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  if (year < 1 || day > daysIn[month - 1] || second > 59) throw fail();
  const when = new Date(0);
  when.setUTCFullYear(year, month - 1, day);
  when.setUTCHours(hour, minute, second, 0);
  return when;
}

/** The same key holder public key is in the keyring: by raw bytes. */
export function findRecipient(keyring, publicKey) {
  return keyring.recipients.find((r) => equal(r.publicKey, publicKey)) ?? null;
}

/** SHA-256 fingerprint of a raw public key (FORMAT §1): 16 bytes as grouped hex. */
export function keyFingerprint(raw) {
  const hex = toHex(sha256(raw)).slice(0, 32);
  return hex.match(/.{4}/g).join(':');
}

function pyRepr(value) {
  if (value === undefined || value === null) return 'None';
  if (typeof value === 'string') return quote(value);
  if (value === true) return 'True';
  if (value === false) return 'False';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}
