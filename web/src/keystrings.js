// Key strings (FORMAT §2): prefix || base32(raw || checksum), checksum the first
// 4 bytes of SHA-256(prefix || raw), RFC 4648 base32 in lower case without padding.

import { sha256 } from '@noble/hashes/sha2.js';
import { concat, equal, utf8 } from './bytes.js';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const CHECKSUM_LEN = 4;

export const SUITES = {
  1: { byte: 1, label: 'x25519', tag: 'x25519', publicLen: 32, encLen: 32 },
  2: { byte: 2, label: 'mlkem768-x25519', tag: 'mlkem768x25519', publicLen: 1216, encLen: 1120 },
};

export function suiteByLabel(label) {
  for (const suite of Object.values(SUITES)) if (suite.label === label) return suite;
  throw new KeyStringError(`unknown suite "${label}"; expected x25519 or mlkem768-x25519`);
}

export const PREFIX = {
  public: { 1: 'dbpub-x25519-', 2: 'dbpub-mlkem768x25519-' },
  identity: { 1: 'dbid-x25519-', 2: 'dbid-mlkem768x25519-' },
  secret: { 1: 'dbsec-x25519-', 2: 'dbsec-xwing-' },
  expandedSecret: 'dbsec-mlkem768x25519-',
  device: 'dbdev-ed25519-',
  deviceSecret: 'dbdevsec-ed25519-',
  signing: 'dbsig-ed25519-',
  signingSecret: 'dbsigsec-ed25519-',
};

/** prefix -> [raw length, what a person calls it] */
const KINDS = {
  'dbpub-x25519-': [32, 'phone public key (x25519)'],
  'dbpub-mlkem768x25519-': [1216, 'phone public key (mlkem768-x25519)'],
  'dbid-x25519-': [64, 'phone identity (x25519)'],
  'dbid-mlkem768x25519-': [1248, 'phone identity (mlkem768-x25519)'],
  'dbsec-x25519-': [32, 'phone secret key (x25519)'],
  'dbsec-xwing-': [32, 'phone secret key (mlkem768-x25519)'],
  'dbsec-mlkem768x25519-': [96, 'phone secret key (mlkem768-x25519, expanded)'],
  'dbdev-ed25519-': [32, 'doorbell device public key'],
  'dbdevsec-ed25519-': [32, 'doorbell device secret key'],
  'dbsig-ed25519-': [32, 'phone signing public key'],
  'dbsigsec-ed25519-': [32, 'phone signing secret key'],
};

export class KeyStringError extends Error {
  constructor(message) {
    super(message);
    this.name = 'KeyStringError';
  }
}

export function kindName(prefix) {
  return KINDS[prefix][1];
}

function checksum(prefix, raw) {
  return sha256(concat(utf8(prefix), raw)).subarray(0, CHECKSUM_LEN);
}

function base32(bytes) {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

export function encodeKeyString(prefix, raw) {
  return prefix + base32(concat(raw, checksum(prefix, raw)));
}

/**
 * Parse a key string whose prefix is one of `expected` (a list of prefixes).
 * Whitespace anywhere is ignored and case does not matter. Returns {prefix, raw}.
 * Throws KeyStringError naming the problem.
 */
export function decodeKeyString(text, expected) {
  const compact = String(text).replace(/\s+/g, '').toLowerCase();
  if (!compact) throw new KeyStringError('empty key string');
  const wanted = expected.map((p) => KINDS[p][1]).join(' or ');
  const prefix = Object.keys(KINDS)
    .sort((a, b) => b.length - a.length)
    .find((p) => compact.startsWith(p));
  if (prefix === undefined) {
    const shown = compact.slice(0, 24) + (compact.length > 24 ? '...' : '');
    throw new KeyStringError(`"${shown}" is not a Doorbell key string; expected a ${wanted}`);
  }
  if (!expected.includes(prefix)) {
    throw new KeyStringError(`this is a ${KINDS[prefix][1]}, expected a ${wanted}`);
  }
  const name = KINDS[prefix][1];
  const body = compact.slice(prefix.length);
  for (let i = 0; i < body.length; i++) {
    if (!ALPHABET.includes(body[i])) {
      throw new KeyStringError(
        `invalid character "${body[i]}" at position ${prefix.length + i + 1} of the ${name}`,
      );
    }
  }
  const rawLen = KINDS[prefix][0];
  const wantChars = Math.ceil(((rawLen + CHECKSUM_LEN) * 8) / 5);
  if (body.length !== wantChars) {
    const state = body.length < wantChars ? 'truncated' : 'too long';
    throw new KeyStringError(
      `${name} is ${state}: ${compact.length} characters, expected ${prefix.length + wantChars}`,
    );
  }
  const bytes = new Uint8Array(rawLen + CHECKSUM_LEN);
  let buffer = 0;
  let bits = 0;
  let index = 0;
  for (const char of body) {
    buffer = (buffer << 5) | ALPHABET.indexOf(char);
    bits += 5;
    if (bits >= 8) {
      bytes[index++] = (buffer >>> (bits - 8)) & 0xff;
      bits -= 8;
      buffer &= (1 << bits) - 1;
    }
  }
  if (buffer !== 0) throw new KeyStringError(`${name} is not canonical base32 (stray trailing bits)`);
  const raw = bytes.subarray(0, rawLen);
  if (!equal(bytes.subarray(rawLen), checksum(prefix, raw))) {
    throw new KeyStringError(`${name} has a bad checksum: a character was mistyped or lost`);
  }
  return { prefix, raw: raw.slice() };
}
