// Key holders: a phone's secret key behind one interface, whatever holds it.
//   { suite: 1 | 2, publicKey: Uint8Array (32 or 1216 raw bytes),
//     async decap(enc): the KEM shared secret (32 bytes) }
// Suite 1 is DHKEM(X25519, HKDF-SHA256); suite 2 is X-Wing, whose shared secret is
// SHA3-256(ss_M || ss_X || ct_X || pk_X || "\.//^\") (FORMAT §3.2).
//
// bytesKeyHolder holds raw secret bytes (tests, Node, a key typed in from paper); in a
// browser cryptoKeyHolder holds non-extractable WebCrypto keys instead.

import { x25519 } from '@noble/curves/ed25519.js';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { concat, fromHex } from '../bytes.js';
import { dhkemSharedSecret, ENC_LEN } from './hpke.js';
import { EXPANDED_LEN, MLKEM_CIPHERTEXT_LEN, MLKEM_PUBLIC_LEN, XWING_SEED_LEN, expandXwingSeed, xwingCombine } from './xwing.js';

export const PUBLIC_LEN = { 1: 32, 2: MLKEM_PUBLIC_LEN + 32 };
// PKCS #8 wrapping of a raw X25519 private key (RFC 8410): WebCrypto imports no raw secret.
const PKCS8_X25519 = fromHex('302e020100300506032b656e04220420');

/** A secret key of the wrong shape for its suite. */
export class KeyError extends Error {
  constructor(message) {
    super(message);
    this.name = 'KeyError';
    this.code = 'bad-key';
  }
}

function checkSuite(suite) {
  if (suite !== 1 && suite !== 2) throw new KeyError(`unknown suite ${suite}; expected 1 (x25519) or 2 (mlkem768-x25519)`);
}

/** The halves of a secret: suite 1 its X25519 key; suite 2 the ML-KEM-768 seed d || z and
 * the X25519 key, from the 32-byte X-Wing seed or the 96-byte expanded form. */
function secretParts(suite, secretRaw) {
  checkSuite(suite);
  if (!(secretRaw instanceof Uint8Array)) throw new KeyError('a secret key is bytes');
  if (suite === 1) {
    if (secretRaw.length !== 32) throw new KeyError('an x25519 secret key is 32 bytes');
    return { x25519Secret: secretRaw };
  }
  if (secretRaw.length === XWING_SEED_LEN) return expandXwingSeed(secretRaw);
  if (secretRaw.length === EXPANDED_LEN) {
    return { mlkemSeed: secretRaw.subarray(0, 64), x25519Secret: secretRaw.subarray(64, 96) };
  }
  throw new KeyError(`an mlkem768-x25519 secret key is ${XWING_SEED_LEN} or ${EXPANDED_LEN} bytes`);
}

/** The raw public key (32 or 1216 bytes) of a raw secret key (32, or for suite 2 also 96). */
export function publicKeyFromSecret(suite, secretRaw) {
  const parts = secretParts(suite, secretRaw);
  const publicX = x25519.getPublicKey(parts.x25519Secret);
  if (suite === 1) return publicX;
  return concat(ml_kem768.keygen(parts.mlkemSeed).publicKey, publicX);
}

function importX25519Secret(secret) {
  return crypto.subtle.importKey('pkcs8', concat(PKCS8_X25519, secret), { name: 'X25519' }, false, ['deriveBits']);
}

/** X25519(private key, peer), refusing the all-zero output of a low-order peer (RFC 7748
 * section 6.1; RFC 9180 and pyca refuse it too). */
async function x25519Shared(privateKey, peer) {
  const publicKey = await crypto.subtle.importKey('raw', peer, { name: 'X25519' }, true, []);
  const shared = new Uint8Array(await crypto.subtle.deriveBits({ name: 'X25519', public: publicKey }, privateKey, 256));
  if (shared.every((byte) => byte === 0)) throw new Error('X25519 with a low-order point');
  return shared;
}

function checkEnc(suite, enc) {
  if (!(enc instanceof Uint8Array) || enc.length !== ENC_LEN[suite]) {
    throw new Error(`enc must be ${ENC_LEN[suite]} bytes for suite ${suite}`);
  }
}

/** A holder whose X25519 half is a WebCrypto key and whose ML-KEM half (suite 2) is
 * `mlkemDecap(ct_M)`: the two holders differ only there. */
function holder(suite, publicKey, x25519Key, mlkemDecap) {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== PUBLIC_LEN[suite]) {
    throw new KeyError(`suite ${suite} public keys are ${PUBLIC_LEN[suite]} bytes`);
  }
  if (suite === 1) {
    return {
      suite,
      publicKey,
      async decap(enc) {
        checkEnc(suite, enc);
        return dhkemSharedSecret(await x25519Shared(await x25519Key, enc), enc, publicKey);
      },
    };
  }
  const publicX = publicKey.subarray(MLKEM_PUBLIC_LEN);
  return {
    suite,
    publicKey,
    async decap(enc) {
      checkEnc(suite, enc);
      const ctM = enc.subarray(0, MLKEM_CIPHERTEXT_LEN);
      const ctX = enc.subarray(MLKEM_CIPHERTEXT_LEN);
      const [ssM, ssX] = await Promise.all([mlkemDecap(ctM), x25519Key.then((key) => x25519Shared(key, ctX))]);
      return xwingCombine(ssM, ssX, ctX, publicX);
    },
  };
}

/**
 * A key holder over raw secret bytes: suite 1 a 32-byte X25519 secret; suite 2 the 32-byte
 * X-Wing seed or its 96-byte expansion. ML-KEM-768 is noble's (Node has none in WebCrypto).
 */
export async function bytesKeyHolder(suite, secretRaw) {
  const parts = secretParts(suite, secretRaw);
  const x25519Key = importX25519Secret(parts.x25519Secret);
  const publicX = x25519.getPublicKey(parts.x25519Secret);
  await x25519Key;
  if (suite === 1) return holder(1, publicX, x25519Key);
  // Expanded once: per object that would cost more than the decapsulation itself.
  const { publicKey, secretKey } = ml_kem768.keygen(parts.mlkemSeed);
  const decap = async (ctM) => ml_kem768.decapsulate(ctM, secretKey);
  return holder(2, concat(publicKey, publicX), x25519Key, decap);
}

/**
 * A key holder over WebCrypto keys, as a browser keeps them (non-extractable):
 * `x25519Key` an X25519 private CryptoKey (deriveBits); for suite 2 `mlkemKey` an
 * ML-KEM-768 private CryptoKey (decapsulateBits). `publicKey` is the raw public key.
 */
export function cryptoKeyHolder({ suite, publicKey, x25519Key, mlkemKey }) {
  checkSuite(suite);
  if (!x25519Key) throw new KeyError('an X25519 CryptoKey is needed');
  if (suite === 1) return holder(1, publicKey, Promise.resolve(x25519Key));
  if (!mlkemKey) throw new KeyError('an ML-KEM-768 CryptoKey is needed for suite 2');
  const decap = async (ctM) =>
    new Uint8Array(await crypto.subtle.decapsulateBits({ name: 'ML-KEM-768' }, mlkemKey, ctM));
  return holder(2, publicKey, Promise.resolve(x25519Key), decap);
}
