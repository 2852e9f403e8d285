// Key holders (the reader's, enrolment's and live view's view of a phone's secret key):
//   { suite: 1 | 2, publicKey: raw bytes (32 or 1216), async decap(enc) -> KEM shared secret }
// decap is RFC 9180's Decap for the suite: DHKEM(X25519, HKDF-SHA256) for suite 1,
// X-Wing for suite 2 (FORMAT §3.2). Two kinds: one over raw secret bytes (@noble, for
// node and tests) and one over non-extractable WebCrypto keys (the browser's phone).

import { x25519 } from '@noble/curves/ed25519.js';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { concat } from '../bytes.js';
import { dhkemSharedSecret } from './hpke.js';
import { expandXwingSeed, splitExpanded, xwingCombine } from './xwing.js';

const CT_M_LEN = 1088;
const PK_M_LEN = 1184;

function expandedSecret(secretRaw) {
  if (secretRaw.length === 32) return expandXwingSeed(secretRaw);
  if (secretRaw.length === 96) return splitExpanded(secretRaw.slice());
  throw new Error('an mlkem768-x25519 secret key is 32 bytes (X-Wing seed) or 96 (expanded)');
}

/** The raw public key of a raw secret key (suite 1: 32 bytes; suite 2: 32 or 96). */
export function publicKeyFromSecret(suite, secretRaw) {
  if (suite === 1) {
    if (secretRaw.length !== 32) throw new Error('an x25519 secret key is 32 bytes');
    return x25519.getPublicKey(secretRaw);
  }
  if (suite !== 2) throw new Error(`unknown suite ${suite}`);
  const { mlkemSeed, x25519Secret, expanded } = expandedSecret(secretRaw);
  const { publicKey } = ml_kem768.keygen(mlkemSeed);
  const out = concat(publicKey, x25519.getPublicKey(x25519Secret));
  expanded.fill(0);
  return out;
}

/** A key holder over raw secret bytes (suite 1: 32; suite 2: X-Wing seed 32, or 96 expanded). */
export function bytesKeyHolder(suite, secretRaw) {
  if (suite === 1) {
    if (secretRaw.length !== 32) throw new Error('an x25519 secret key is 32 bytes');
    const secret = secretRaw.slice();
    const publicKey = x25519.getPublicKey(secret);
    return {
      suite,
      publicKey,
      async decap(enc) {
        return dhkemSharedSecret(x25519.getSharedSecret(secret, enc), enc, publicKey);
      },
    };
  }
  if (suite !== 2) throw new Error(`unknown suite ${suite}`);
  // Expanded once: the ML-KEM key from its seed costs more than a decapsulation.
  const { mlkemSeed, x25519Secret, expanded } = expandedSecret(secretRaw);
  const { publicKey: pkM, secretKey: skM } = ml_kem768.keygen(mlkemSeed);
  const skX = x25519Secret.slice();
  expanded.fill(0);
  const pkX = x25519.getPublicKey(skX);
  const publicKey = concat(pkM, pkX);
  return {
    suite,
    publicKey,
    async decap(enc) {
      if (enc.length !== CT_M_LEN + 32) throw new Error('an X-Wing encapsulation is 1120 bytes');
      const ctX = enc.subarray(CT_M_LEN);
      const ssM = ml_kem768.decapsulate(enc.subarray(0, CT_M_LEN), skM);
      const ssX = x25519.getSharedSecret(skX, ctX);
      return xwingCombine(ssM, ssX, ctX, pkX);
    },
  };
}

async function x25519Derive(privateKey, publicRaw) {
  const peer = await crypto.subtle.importKey('raw', publicRaw, { name: 'X25519' }, false, []);
  const bits = new Uint8Array(await crypto.subtle.deriveBits({ name: 'X25519', public: peer }, privateKey, 256));
  if (bits.every((b) => b === 0)) throw new Error('X25519 gave the all-zero secret (a low-order point)');
  return bits;
}

/**
 * A key holder over WebCrypto keys: `x25519Key` (an X25519 private CryptoKey with
 * deriveBits) and, for suite 2, `mlkemKey` (an ML-KEM-768 private CryptoKey with
 * decapsulateBits, Chromium 156 and later). `publicKey` is the raw public key.
 */
export function cryptoKeyHolder({ suite, publicKey, x25519Key, mlkemKey }) {
  if (suite === 1) {
    return {
      suite,
      publicKey,
      async decap(enc) {
        if (enc.length !== 32) throw new Error('an X25519 encapsulation is 32 bytes');
        return dhkemSharedSecret(await x25519Derive(x25519Key, enc), enc, publicKey);
      },
    };
  }
  if (suite !== 2) throw new Error(`unknown suite ${suite}`);
  const pkX = publicKey.subarray(PK_M_LEN);
  return {
    suite,
    publicKey,
    async decap(enc) {
      if (enc.length !== CT_M_LEN + 32) throw new Error('an X-Wing encapsulation is 1120 bytes');
      const ctM = enc.subarray(0, CT_M_LEN);
      const ctX = enc.subarray(CT_M_LEN);
      const [ssM, ssX] = await Promise.all([
        crypto.subtle.decapsulateBits({ name: 'ML-KEM-768' }, mlkemKey, ctM).then((b) => new Uint8Array(b)),
        x25519Derive(x25519Key, ctX),
      ]);
      return xwingCombine(ssM, ssX, ctX, pkX);
    },
  };
}
