// Who a phone and a doorbell are, as people and other programs see them (FORMAT §1, §2):
// the phone's identity string (dbid-…), key strings for each public key, the device id
// and the fingerprints people compare by eye.

import { sha256 } from '@noble/hashes/sha2.js';
import { concat } from '../bytes.js';
import { checkCanonicalDeviceKey } from '../crypto/ed25519.js';
import { checkName, checkPublicKey, keyFingerprint } from '../format/keyring.js';
import { decodeKeyString, encodeKeyString, KeyStringError, PREFIX, SUITES } from '../keystrings.js';

const SIGNING_LEN = 32;

export class IdentityError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'IdentityError';
    this.code = code;
  }
}

/** The device id (FORMAT §1): SHA-256 of the device public key, 32 bytes. */
export function deviceId(devicePublicKey) {
  return sha256(devicePublicKey);
}

/** The first 16 bytes of SHA-256(raw public key), colon-grouped hex: "3fa1:c0d2:…". */
export const fingerprint = keyFingerprint;

/** A phone's identity string: dbid-<suite>- over its public key and its signing key. */
export function identityString({ suite, publicKey, signingPublicKey }) {
  checkSuite(suite, publicKey);
  if (signingPublicKey?.length !== SIGNING_LEN) {
    throw new IdentityError('a phone identity needs its 32-byte signing key', 'signing-key');
  }
  return encodeKeyString(PREFIX.identity[suite], concat(publicKey, signingPublicKey));
}

/**
 * The parts of an identity string, {suite, publicKey, signingPublicKey}; a public key no
 * seal could use is refused as the doorbell refuses it. Throws KeyStringError.
 */
export function parseIdentity(text) {
  const { prefix, raw } = decodeKeyString(text, [PREFIX.identity[1], PREFIX.identity[2]]);
  const suite = prefix === PREFIX.identity[1] ? 1 : 2;
  const publicKey = raw.slice(0, raw.length - SIGNING_LEN);
  checkPublicKey(suite, publicKey);
  return { suite, publicKey, signingPublicKey: raw.slice(raw.length - SIGNING_LEN) };
}

/** A phone public key's string: dbpub-<suite>-…. */
export function publicKeyString(suite, publicKey) {
  checkSuite(suite, publicKey);
  return encodeKeyString(PREFIX.public[suite], publicKey);
}

/** A phone signing public key's string: dbsig-ed25519-…. */
export function signingKeyString(signingPublicKey) {
  if (signingPublicKey?.length !== SIGNING_LEN) {
    throw new IdentityError('a phone signing key is 32 bytes', 'signing-key');
  }
  return encodeKeyString(PREFIX.signing, signingPublicKey);
}

/** A doorbell's device public key string: dbdev-ed25519-…. */
export function deviceKeyString(devicePublicKey) {
  checkDeviceKey(devicePublicKey);
  return encodeKeyString(PREFIX.device, devicePublicKey);
}

/** The raw device public key of a dbdev- string, refused unless canonical (FORMAT §5). */
export function parseDeviceKey(text) {
  const { raw } = decodeKeyString(text, [PREFIX.device]);
  checkDeviceKey(raw);
  return raw;
}

/**
 * Refuse a device public key that is not the one canonical encoding of its point
 * (FORMAT §5): such a key (y = p + 1 encodes the identity point) lets anyone sign for it.
 */
export function checkDeviceKey(raw) {
  try {
    checkCanonicalDeviceKey(raw);
  } catch (error) {
    throw new IdentityError(`the ${error.message}`, 'device-key');
  }
}

/** Refuse a name the doorbell's keyring would refuse (FORMAT §7), saying why. */
export function checkPhoneName(name) {
  if (typeof name !== 'string') throw new IdentityError("the phone's name must be text", 'name');
  try {
    checkName(name);
  } catch (error) {
    throw new IdentityError(`the phone's ${error.message}`, 'name');
  }
}

function checkSuite(suite, publicKey) {
  const known = SUITES[suite];
  if (!known) throw new KeyStringError(`unknown suite ${suite}; expected 1 (x25519) or 2 (mlkem768-x25519)`);
  if (publicKey?.length !== known.publicLen) {
    throw new IdentityError(
      `a ${known.label} public key is ${known.publicLen} bytes, got ${publicKey?.length}`,
      'public-key',
    );
  }
}
