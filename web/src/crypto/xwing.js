// X-Wing (draft-connolly-cfrg-xwing-kem-06 and later; HPKE KEM 0x647A, FORMAT §1 and §3.2):
// the 32-byte seed's expansion and the combiner. The ML-KEM-768 and X25519 halves are
// computed by the key holders (crypto/kem.js); SHA-3 is not in WebCrypto, so noble's.

import { sha3_256, shake256 } from '@noble/hashes/sha3.js';

export const XWING_SEED_LEN = 32;
export const EXPANDED_LEN = 96;
export const MLKEM_PUBLIC_LEN = 1184;
export const MLKEM_CIPHERTEXT_LEN = 1088;
/** "\.//^\": last in the combiner's input (earlier drafts put it first). */
export const XWING_LABEL = Uint8Array.of(0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c);

/** The X-Wing seed's expansion: SHAKE256(seed, 96) = ML-KEM-768 seed d || z (64 bytes),
 * then the X25519 private key (32 bytes). */
export function expandXwingSeed(seed32) {
  if (!(seed32 instanceof Uint8Array) || seed32.length !== XWING_SEED_LEN) {
    throw new TypeError(`an X-Wing seed is ${XWING_SEED_LEN} bytes`);
  }
  const expanded = shake256(seed32, { dkLen: EXPANDED_LEN });
  return { mlkemSeed: expanded.slice(0, 64), x25519Secret: expanded.slice(64, 96) };
}

/** The X-Wing shared secret: SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel). */
export function xwingCombine(ssM, ssX, ctX, pkX) {
  for (const part of [ssM, ssX, ctX, pkX]) {
    if (!(part instanceof Uint8Array) || part.length !== 32) throw new TypeError('X-Wing combines 32-byte values');
  }
  const input = new Uint8Array(32 + 32 + 32 + 32 + XWING_LABEL.length);
  input.set(ssM, 0);
  input.set(ssX, 32);
  input.set(ctX, 64);
  input.set(pkX, 96);
  input.set(XWING_LABEL, 128);
  return sha3_256(input);
}
