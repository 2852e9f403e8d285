// HKDF-SHA256 (RFC 5869) through WebCrypto: the enrolment window's keys (PROTOCOL §2)
// and the recovery key's seeds (PROTOCOL §8) are both derived with it.

import { utf8 } from '../bytes.js';

/** HKDF-SHA256(IKM = ikm, salt, info, L = length bytes); salt and info may be strings. */
export async function hkdf(ikm, salt, info, length) {
  const key = await crypto.subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: bytesOf(salt), info: bytesOf(info) },
    key,
    length * 8,
  );
  return new Uint8Array(bits);
}

function bytesOf(value) {
  return typeof value === 'string' ? utf8(value) : value;
}
