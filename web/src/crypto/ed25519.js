// Ed25519 verification as FORMAT §5 asks: strict (RFC 8032 section 5.1.7), checked here
// before WebCrypto sees the signature. S must be below the group order L, and the public
// key A must be the one canonical encoding of its point: WebCrypto's verify, like OpenSSL's,
// accepts a non-canonical A such as y = p + 1 (the identity point, for which anyone can
// sign anything).

const L = (1n << 252n) + 27742317777372353535851777893976580429n;
const P = (1n << 255n) - 19n;

/** A signature that does not verify, or is not strict, or a key nobody may pin. */
export class SignatureError extends Error {
  constructor(message, code = 'forged') {
    super(message);
    this.name = 'SignatureError';
    this.code = code;
  }
}

function littleEndian(bytes) {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
  return value;
}

/** Throws SignatureError unless `raw` (32 bytes) is the canonical encoding of its point:
 * y (the 255 low bits) below p, and not x = 0 (y = 1 or y = p - 1) with the sign bit set. */
export function checkCanonicalDeviceKey(raw, signer = 'device') {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) {
    throw new SignatureError(`${signer} public key must be 32 bytes`);
  }
  const y = littleEndian(raw) & ((1n << 255n) - 1n);
  const sign = raw[31] >> 7;
  if (y >= P || (sign && (y === 1n || y === P - 1n))) {
    throw new SignatureError(`${signer} public key is not a canonical Ed25519 encoding`);
  }
}

// Imported once per key: an import costs as much as a verification of a small message.
const imported = new Map();

function verifyKey(raw, signer) {
  const id = String.fromCharCode(...raw);
  let key = imported.get(id);
  if (key === undefined) {
    key = crypto.subtle.importKey('raw', raw, { name: 'Ed25519' }, false, ['verify']).catch(() => {
      imported.delete(id);
      throw new SignatureError(`${signer} public key is not a valid point`);
    });
    imported.set(id, key);
  }
  return key;
}

/**
 * Verify an Ed25519 signature strictly. Resolves to nothing; rejects with SignatureError
 * (code 'forged') unless the signature is valid, S < L and the key canonical.
 * `signer` names whose signature it is in the message ("device", "phone").
 */
export async function verifyStrict(publicKeyRaw, message, signature, signer = 'device') {
  if (!(signature instanceof Uint8Array) || signature.length !== 64) {
    throw new SignatureError(`${signer} signature must be 64 bytes`);
  }
  if (littleEndian(signature.subarray(32, 64)) >= L) {
    throw new SignatureError(`${signer} signature is not canonical (S is not below the group order)`);
  }
  checkCanonicalDeviceKey(publicKeyRaw, signer);
  const key = await verifyKey(publicKeyRaw, signer);
  let valid;
  try {
    valid = await crypto.subtle.verify({ name: 'Ed25519' }, key, signature, message);
  } catch {
    valid = false;
  }
  if (!valid) throw new SignatureError(
      `${signer} signature does not verify: altered after it was signed, or signed by another key`,
    );
}
