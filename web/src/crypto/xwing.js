// X-Wing (draft-connolly-cfrg-xwing-kem, FORMAT §1 and §3.2): the seed expansion and the
// combiner. The KEMs themselves are ML-KEM-768 and X25519, in kem.js.

import { sha3_256, shake256 } from '@noble/hashes/sha3.js';

export const XWING_SEED_LEN = 32;
export const XWING_EXPANDED_LEN = 96;
/** XWingLabel, the six bytes \.//^\ , hashed last. */
export const XWING_LABEL = Uint8Array.of(0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c);

/**
 * The X-Wing seed's expansion, SHAKE256(seed, 96): the ML-KEM-768 seed d || z (64 bytes)
 * and the X25519 private key (32). Views into one fresh buffer; wipe it when done.
 */
export function expandXwingSeed(seed) {
  if (!(seed instanceof Uint8Array) || seed.length !== XWING_SEED_LEN) {
    throw new Error(`an X-Wing seed is ${XWING_SEED_LEN} bytes`);
  }
  return splitExpanded(shake256(seed, { dkLen: XWING_EXPANDED_LEN }));
}

/** The 96-byte expanded form (as phones before the seed form kept it), split. */
export function splitExpanded(expanded) {
  if (expanded.length !== XWING_EXPANDED_LEN) throw new Error(`an expanded X-Wing key is ${XWING_EXPANDED_LEN} bytes`);
  return { mlkemSeed: expanded.subarray(0, 64), x25519Secret: expanded.subarray(64, 96), expanded };
}

/** The KEM shared secret: SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel). */
export function xwingCombine(ssM, ssX, ctX, pkX) {
  return sha3_256
    .create()
    .update(ssM)
    .update(ssX)
    .update(ctX)
    .update(pkX)
    .update(XWING_LABEL)
    .digest();
}
