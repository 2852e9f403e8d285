// HPKE base mode (RFC 9180), the receiving side only, for the two suites of FORMAT §3.2:
// DHKEM(X25519, HKDF-SHA256) 0x0020 or X-Wing (MLKEM768-X25519) 0x647A, with HKDF-SHA256
// and AES-256-GCM. The key schedule is written out over WebCrypto's HMAC-SHA256, as
// tests/test_vectors.py writes it out in Python.

import { concat, u16, utf8 } from '../bytes.js';

export class HpkeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'HpkeError';
    this.code = 'unopenable';
  }
}

export const KEM_X25519 = 0x0020;
export const KEM_XWING = 0x647a;
const KDF_HKDF_SHA256 = 0x0001;
const AEAD_AES_256_GCM = 0x0002;
const N_H = 32;
const N_K = 32;
const N_N = 12;
const TAG = 16;

/** Per suite byte (FORMAT §3.2): the KEM id and the length of `enc`. */
export const HPKE_SUITES = {
  1: { kem: KEM_X25519, encLen: 32 },
  2: { kem: KEM_XWING, encLen: 1120 },
};

const VERSION_LABEL = utf8('HPKE-v1');
const ZERO_SALT = new Uint8Array(N_H);
const EMPTY = new Uint8Array(0);
const LABELS = Object.fromEntries(
  ['psk_id_hash', 'info_hash', 'secret', 'key', 'base_nonce', 'eae_prk', 'shared_secret'].map((l) => [l, utf8(l)]),
);

function suiteId(kem) {
  return concat(utf8('HPKE'), u16(kem), u16(KDF_HKDF_SHA256), u16(AEAD_AES_256_GCM));
}
const SUITE_IDS = { [KEM_X25519]: suiteId(KEM_X25519), [KEM_XWING]: suiteId(KEM_XWING) };
const DHKEM_SUITE_ID = concat(utf8('KEM'), u16(KEM_X25519));

async function hmac(key, data) {
  const imported = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await crypto.subtle.sign('HMAC', imported, data));
}

/** RFC 9180 LabeledExtract(salt, label, ikm) with HKDF-SHA256. */
export function labeledExtract(suite, salt, label, ikm) {
  return hmac(salt.length ? salt : ZERO_SALT, concat(VERSION_LABEL, suite, LABELS[label] ?? utf8(label), ikm));
}

/** RFC 9180 LabeledExpand(prk, label, info, length) with HKDF-SHA256; length ≤ 32. */
export async function labeledExpand(suite, prk, label, info, length) {
  if (length > N_H) throw new Error('labeledExpand: one HKDF block only');
  const labeled = concat(u16(length), VERSION_LABEL, suite, LABELS[label] ?? utf8(label), info, Uint8Array.of(1));
  return (await hmac(prk, labeled)).subarray(0, length);
}

/**
 * DHKEM(X25519, HKDF-SHA256)'s shared secret from the Diffie-Hellman output:
 * ExtractAndExpand(dh, kem_context = enc || pkR).
 */
export async function dhkemSharedSecret(dh, enc, publicKey) {
  const prk = await labeledExtract(DHKEM_SUITE_ID, EMPTY, 'eae_prk', dh);
  return labeledExpand(DHKEM_SUITE_ID, prk, 'shared_secret', concat(enc, publicKey), 32);
}

const pskIdHash = new Map(); // kem -> Promise<psk_id_hash>, the same for every message

/**
 * Open `wrapped` (enc || ct) sealed with HPKE base mode to `holder`'s public key
 * (key holder: {suite, publicKey, decap(enc)}), with `info` and `aad`. Returns the
 * plaintext; throws HpkeError when it does not open.
 */
export async function openBase(holder, wrapped, info, aad = EMPTY) {
  const params = HPKE_SUITES[holder.suite];
  if (!params) throw new HpkeError(`unknown HPKE suite ${holder.suite}`);
  if (wrapped.length < params.encLen + TAG) throw new HpkeError('the wrapped key is too short');
  const enc = wrapped.subarray(0, params.encLen);
  const ct = wrapped.subarray(params.encLen);
  let shared;
  try {
    shared = await holder.decap(enc);
  } catch {
    throw new HpkeError('the key encapsulation does not open');
  }
  const suite = SUITE_IDS[params.kem];
  let psk = pskIdHash.get(params.kem);
  if (!psk) pskIdHash.set(params.kem, (psk = labeledExtract(suite, EMPTY, 'psk_id_hash', EMPTY)));
  const [pskHash, infoHash, secret] = await Promise.all([
    psk,
    labeledExtract(suite, EMPTY, 'info_hash', info),
    labeledExtract(suite, shared, 'secret', EMPTY),
  ]);
  const context = concat(Uint8Array.of(0), pskHash, infoHash);
  const [key, nonce] = await Promise.all([
    labeledExpand(suite, secret, 'key', context, N_K),
    labeledExpand(suite, secret, 'base_nonce', context, N_N),
  ]);
  const aesKey = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['decrypt']);
  try {
    return new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad }, aesKey, ct));
  } catch {
    throw new HpkeError('the wrapped key does not decrypt');
  }
}
