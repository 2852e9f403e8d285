// Strict Ed25519 verification (FORMAT §5, RFC 8032 §5.1.7): S below the group order and
// a canonical public key A, checked here, before WebCrypto's verify, which does not
// reject every non-canonical A (y = p + 1 is the identity, under which anyone signs).

export class SignatureError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SignatureError';
    this.code = 'forged';
  }
}

// RFC 8032: the group order L and the field prime p.
const L = 2n ** 252n + 27742317777372353535851777893976580429n;
const P = 2n ** 255n - 19n;
const imported = new Map(); // hex of the raw key -> Promise<CryptoKey>

function littleEndian(bytes) {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
  return value;
}

/** Throws SignatureError unless `raw` is the one canonical encoding of its point. */
export function checkCanonicalDeviceKey(raw, who = 'device') {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) {
    throw new SignatureError(`${who} public key must be 32 bytes`);
  }
  const y = littleEndian(raw) & ((1n << 255n) - 1n);
  const sign = raw[31] >> 7;
  if (y >= P || (sign && (y === 1n || y === P - 1n))) {
    throw new SignatureError(`${who} public key is not a canonical Ed25519 encoding`);
  }
}

function importKey(raw) {
  let hex = '';
  for (const byte of raw) hex += byte.toString(16).padStart(2, '0');
  let key = imported.get(hex);
  if (key === undefined) {
    key = crypto.subtle.importKey('raw', raw, { name: 'Ed25519' }, false, ['verify']);
    if (imported.size > 256) imported.clear();
    imported.set(hex, key);
    key.catch(() => imported.delete(hex));
  }
  return key;
}

/**
 * Verify an Ed25519 signature strictly. Resolves when it is valid; throws SignatureError
 * (code 'forged') naming the problem otherwise. `who` names the signer in messages.
 */
export async function verifyStrict(publicKeyRaw, message, signature, who = 'device') {
  if (!(signature instanceof Uint8Array) || signature.length !== 64) {
    throw new SignatureError(`${who} signature must be 64 bytes`);
  }
  if (littleEndian(signature.subarray(32, 64)) >= L) {
    throw new SignatureError(`${who} signature is not canonical (S is not below the group order)`);
  }
  checkCanonicalDeviceKey(publicKeyRaw, who);
  let valid;
  try {
    valid = await crypto.subtle.verify({ name: 'Ed25519' }, await importKey(publicKeyRaw), signature, message);
  } catch {
    throw new SignatureError(`${who} public key is not a valid point`);
  }
  if (!valid) throw new SignatureError(`${who} signature does not verify`);
}
