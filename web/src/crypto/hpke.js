// HPKE (RFC 9180) base mode, the receiving side, written out over WebCrypto: the two suites
// of FORMAT §3.2, KDF HKDF-SHA256 (0x0001) and AEAD AES-256-GCM (0x0002), with either
// DHKEM(X25519, HKDF-SHA256) (0x0020) or X-Wing (0x647A) as the KEM. The KEM's
// decapsulation is the key holder's (crypto/kem.js): it returns the KEM shared secret.

import { concat, u16, utf8 } from '../bytes.js';

export const KEM_ID = { 1: 0x0020, 2: 0x647a };
/** Bytes of `enc` by suite byte: an X25519 public key, or ct_M (1088) || ct_X (32). */
export const ENC_LEN = { 1: 32, 2: 1120 };
const KDF_HKDF_SHA256 = 0x0001;
const AEAD_AES_256_GCM = 0x0002;
const HASH_LEN = 32;
const KEY_LEN = 32;
const NONCE_LEN = 12;
const TAG_LEN = 16;
const EMPTY = new Uint8Array(0);
const ZERO_SALT = new Uint8Array(HASH_LEN);
const HPKE_V1 = utf8('HPKE-v1');
const label = (text) => utf8(text);
const LABELS = {
  eaePrk: label('eae_prk'),
  sharedSecret: label('shared_secret'),
  pskIdHash: label('psk_id_hash'),
  infoHash: label('info_hash'),
  secret: label('secret'),
  key: label('key'),
  baseNonce: label('base_nonce'),
};

/** An HPKE ciphertext that does not open with this key (or a KEM that refused `enc`). */
export class HpkeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'HpkeError';
    this.code = 'unopenable';
  }
}

const KEM_SUITE_ID = { 0x0020: concat(utf8('KEM'), u16(0x0020)), 0x647a: concat(utf8('KEM'), u16(0x647a)) };
const HPKE_SUITE_ID = Object.fromEntries(
  Object.entries(KEM_ID).map(([suite, kem]) => [
    suite,
    concat(utf8('HPKE'), u16(kem), u16(KDF_HKDF_SHA256), u16(AEAD_AES_256_GCM)),
  ]),
);

function hmacKey(key) {
  // HKDF-Extract with no salt uses HashLen zero bytes (RFC 5869), which HMAC pads alike.
  return crypto.subtle.importKey('raw', key.length ? key : ZERO_SALT, { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
  ]);
}

async function hmac(key, data) {
  const imported = key instanceof Uint8Array ? await hmacKey(key) : key;
  return new Uint8Array(await crypto.subtle.sign('HMAC', imported, data));
}

/** LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm). */
export function labeledExtract(suiteId, salt, labelBytes, ikm) {
  return hmac(salt, concat(HPKE_V1, suiteId, labelBytes, ikm));
}

/** LabeledExpand(prk, label, info, L) = HKDF-Expand(prk, I2OSP(L, 2) || "HPKE-v1" ||
 * suite_id || label || info, L). `prk` is bytes or an imported HMAC key. */
export async function labeledExpand(suiteId, prk, labelBytes, info, length) {
  const key = prk instanceof Uint8Array ? await hmacKey(prk) : prk;
  const labeled = concat(u16(length), HPKE_V1, suiteId, labelBytes, info);
  const out = new Uint8Array(length);
  let block = EMPTY;
  for (let i = 1, at = 0; at < length; i++) {
    block = await hmac(key, concat(block, labeled, Uint8Array.of(i)));
    out.set(block.subarray(0, Math.min(HASH_LEN, length - at)), at);
    at += HASH_LEN;
  }
  return out;
}

/** DHKEM(X25519, HKDF-SHA256) Decap's last step: ExtractAndExpand(dh, enc || pkR). */
export async function dhkemSharedSecret(dh, enc, publicKey) {
  const suiteId = KEM_SUITE_ID[0x0020];
  const prk = await labeledExtract(suiteId, EMPTY, LABELS.eaePrk, dh);
  return labeledExpand(suiteId, prk, LABELS.sharedSecret, concat(enc, publicKey), HASH_LEN);
}

// psk_id_hash is the same for every base-mode message of a suite.
const pskIdHashes = new Map();

function pskIdHash(suite) {
  let hash = pskIdHashes.get(suite);
  if (hash === undefined) {
    hash = labeledExtract(HPKE_SUITE_ID[suite], EMPTY, LABELS.pskIdHash, EMPTY);
    pskIdHashes.set(suite, hash);
  }
  return hash;
}

/** KeySchedule(mode_base, shared_secret, info): the AEAD key and base nonce. */
export async function keySchedule(suite, sharedSecret, info) {
  const suiteId = HPKE_SUITE_ID[suite];
  const [pskHash, infoHash, secret] = await Promise.all([
    pskIdHash(suite),
    labeledExtract(suiteId, EMPTY, LABELS.infoHash, info),
    labeledExtract(suiteId, sharedSecret, LABELS.secret, EMPTY).then(hmacKey),
  ]);
  const context = concat(Uint8Array.of(0), pskHash, infoHash);
  const [key, nonce] = await Promise.all([
    labeledExpand(suiteId, secret, LABELS.key, context, KEY_LEN),
    labeledExpand(suiteId, secret, LABELS.baseNonce, context, NONCE_LEN),
  ]);
  return { key, nonce };
}

/**
 * HPKE OpenBase for one message (sequence number 0): `wrapped` is enc || ct as the sender
 * wrote it, `holder` a key holder ({suite, publicKey, decap(enc)}). Resolves to the
 * plaintext; rejects with HpkeError when it does not open.
 */
export async function openBase(holder, wrapped, info, aad = EMPTY) {
  const encLen = ENC_LEN[holder.suite];
  if (encLen === undefined) throw new HpkeError(`unknown suite ${holder.suite}`);
  if (wrapped.length < encLen + TAG_LEN) throw new HpkeError('the HPKE ciphertext is cut short');
  const enc = wrapped.subarray(0, encLen);
  let shared;
  try {
    shared = await holder.decap(enc);
  } catch (error) {
    throw new HpkeError(`the key exchange failed: ${error.message}`);
  }
  const { key, nonce } = await keySchedule(holder.suite, shared, info);
  const aead = await crypto.subtle.importKey('raw', key, { name: 'AES-GCM' }, false, ['decrypt']);
  try {
    const plaintext = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: nonce, additionalData: aad },
      aead,
      wrapped.subarray(encLen),
    );
    return new Uint8Array(plaintext);
  } catch {
    throw new HpkeError('does not open with this key (authentication failed)');
  }
}
