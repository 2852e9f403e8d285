// The sealed object (FORMAT §3, §5, §8, §9): parsing hostile bytes, the reader that
// verifies a doorbell's signature and only then opens what is sealed to this phone, and the
// per-kind checks of what it opened. A port of doorbell/sealing/format.py and reader.py,
// with doorbell/phone/rules.py's check_contents.
//
//   const reader = new Reader({ devices: [devicePublicKeyRaw], keys: [holder] });
//   const envelope = await reader.verify(bytes);      // structure, device, signature
//   const opened = await reader.openEnvelope(envelope); // stanza, payload (§4)
//   const keyring = checkContents(opened);             // meta by kind (§4.1), keyring (§7)
//   // or all three: await reader.open(bytes)
//
// Errors are ObjectError with a `code` (format/errors.js): 'malformed', 'untrusted',
// 'forged', 'not-for-us' (NotARecipient), 'unopenable', 'rejected'.
//
// The reader keeps views of the bytes it is given, never copies: do not change them while
// an envelope or an opened object made from them is in use.

import { sha256 } from '@noble/hashes/sha2.js';
import { concat, equal, readU64, toHex, u64, utf8, sha256 as digest } from '../bytes.js';
import { SignatureError, verifyStrict } from '../crypto/ed25519.js';
import { HpkeError, openBase } from '../crypto/hpke.js';
import { NotARecipient, ObjectError, malformed, rejected } from './errors.js';
import { KeyringError, parseKeyring } from './keyring.js';
import { KIND, MAX_CIPHERTEXT, MIN_INNER, TAG_LEN, checkMeta, decodePayload } from './payload.js';

export { NotARecipient, ObjectError } from './errors.js';
export { KIND, KIND_NAMES, MAX_BODY, MAX_CIPHERTEXT, MAX_META, padme } from './payload.js';

export const MAGIC = Uint8Array.of(0x89, 0x44, 0x42, 0x45, 0x4c, 0x4c, 0x0d, 0x0a);
export const VERSION = 1;
export const NONCE_LEN = 12;
export const SIGNATURE_LEN = 64;
export const RECIPIENT_TAG_LEN = 16;
export const MAX_STANZAS = 64;
/** Bytes of a stanza's wrapped key by suite byte: HPKE enc || ct for a 32-byte data key. */
export const WRAPPED_LEN = Object.freeze({ 1: 32 + 48, 2: 1120 + 48 });
// magic, version, flags, device id, seq, prev, nonce, stanza count
export const FIXED_HEADER_LEN = 8 + 1 + 1 + 32 + 8 + 32 + 12 + 1;
export const MAX_OBJECT = FIXED_HEADER_LEN + MAX_STANZAS * (1 + 16 + WRAPPED_LEN[2]) + 8 + MAX_CIPHERTEXT + SIGNATURE_LEN;
/** The smallest ciphertext: an empty payload's 20 bytes and the GCM tag. */
export const MIN_CIPHERTEXT = MIN_INNER + TAG_LEN;
export const ZERO_PREV = new Uint8Array(32);
const SIGNATURE_CONTEXT = utf8('doorbell/v1 object signature\0');
const RECIPIENT_CONTEXT = utf8('doorbell/v1 recipient\0');
const HPKE_INFO_CONTEXT = utf8('doorbell/v1 data key\0');
const OBJECT_NAME = /^([0-9a-f]{16})-([0-9]{20})\.sealed$/;
const EMPTY = new Uint8Array(0);

// Envelopes whose signature a reader verified: only those are opened.
const verified = new WeakSet();

/** The per-object recipient tag (FORMAT §3.2): unlinkable across objects without `publicKey`. */
export function recipientTag(deviceId, seq, suite, publicKey) {
  return sha256(concat(RECIPIENT_CONTEXT, deviceId, u64(seq), Uint8Array.of(suite), publicKey)).subarray(0, RECIPIENT_TAG_LEN);
}

/** HPKE info: binds a wrapped data key to this format, device, object and stanza. */
export function hpkeInfo(deviceId, seq, suite, tag) {
  return concat(HPKE_INFO_CONTEXT, deviceId, u64(seq), Uint8Array.of(suite), tag);
}

/** The `prev` the next object carries: SHA-256 of this one's signature (FORMAT §6). */
export function chainHash(signature) {
  return sha256(signature);
}

/** The device id of a device public key: SHA-256 of its 32 raw bytes. */
export function deviceIdOf(devicePublicKey) {
  return sha256(devicePublicKey);
}

/** The storage name of object `seq` of a device (FORMAT §8); `deviceId` bytes or hex. */
export function objectName(deviceId, seq) {
  const hex = typeof deviceId === 'string' ? deviceId.toLowerCase() : toHex(deviceId);
  const number = BigInt(seq);
  if (number < 0n || number >= 1n << 64n) throw new RangeError(`seq ${seq} is not a u64`);
  return `${hex.slice(0, 16)}-${number.toString().padStart(20, '0')}.sealed`;
}

/** { deviceIdPrefix (16 hex digits), seq (BigInt) } of exactly a FORMAT §8 name, else null.
 * Like the reference phone, any 20 digits are a name; a seq beyond u64 matches no header. */
export function parseObjectName(name) {
  const match = typeof name === 'string' ? OBJECT_NAME.exec(name) : null;
  return match === null ? null : { deviceIdPrefix: match[1], seq: BigInt(match[2]) };
}

/**
 * Parse the cleartext structure (FORMAT §3), checking every length and bound; no key is
 * used. Returns an envelope, not yet verified:
 *   { deviceId, deviceIdHex, seq (BigInt), prev, nonce, stanzas: [{ suite, tag, wrapped }],
 *     headerLength, signedLength, ciphertextLength, signature, chainHash, bytes }
 * Every byte array is a view of `bytes`. Throws ObjectError 'malformed' naming the field.
 */
export function parseEnvelope(bytes) {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  checkMagic(data);
  if (data.length < FIXED_HEADER_LEN) {
    throw malformed(`truncated header: ${data.length} bytes, need ${FIXED_HEADER_LEN}`);
  }
  const version = data[8];
  if (version !== VERSION) throw malformed(`unsupported version ${version} (this reader knows ${VERSION})`);
  const flags = data[9];
  if (flags !== 0) throw malformed(`reserved flags byte is 0x${flags.toString(16).padStart(2, '0')}, must be 0`);
  const count = data[94];
  if (count < 1 || count > MAX_STANZAS) throw malformed(`stanza count ${count} is outside 1..${MAX_STANZAS}`);
  let offset = FIXED_HEADER_LEN;
  const stanzas = [];
  for (let index = 0; index < count; index++) {
    if (offset + 17 > data.length) throw malformed(`stanza ${index}: truncated at byte ${offset}`);
    const suite = data[offset];
    const length = WRAPPED_LEN[suite];
    if (length === undefined) throw malformed(`stanza ${index}: unknown suite ${suite}`);
    const tag = data.subarray(offset + 1, offset + 17);
    offset += 17;
    if (offset + length > data.length) throw malformed(`stanza ${index}: truncated at byte ${offset}`);
    stanzas.push(Object.freeze({ suite, tag, wrapped: data.subarray(offset, offset + length) }));
    offset += length;
  }
  if (offset + 8 > data.length) throw malformed(`ciphertext length: truncated at byte ${offset}`);
  const ciphertextLength = readU64(data, offset);
  offset += 8;
  if (ciphertextLength < BigInt(MIN_CIPHERTEXT) || ciphertextLength > BigInt(MAX_CIPHERTEXT)) {
    throw malformed(`ciphertext length ${ciphertextLength} is outside ${MIN_CIPHERTEXT}..${MAX_CIPHERTEXT}`);
  }
  const expected = offset + Number(ciphertextLength) + SIGNATURE_LEN;
  if (data.length !== expected) {
    const problem = data.length < expected ? 'truncated' : 'trailing bytes';
    throw malformed(`${problem}: object is ${data.length} bytes, header says ${expected}`);
  }
  const deviceId = data.subarray(10, 42);
  const signedLength = offset + Number(ciphertextLength);
  const signature = data.subarray(signedLength);
  return Object.freeze({
    deviceId,
    deviceIdHex: toHex(deviceId),
    seq: readU64(data, 42),
    prev: data.subarray(50, 82),
    nonce: data.subarray(82, 94),
    stanzas: Object.freeze(stanzas),
    headerLength: offset,
    signedLength,
    ciphertextLength: Number(ciphertextLength),
    signature,
    chainHash: chainHash(signature),
    bytes: data,
  });
}

function checkMagic(data) {
  const head = data.subarray(0, MAGIC.length);
  if (data.length < MAGIC.length && equal(head, MAGIC.subarray(0, data.length))) {
    throw malformed(`truncated: ${data.length} bytes, shorter than the magic`);
  }
  if (!equal(head, MAGIC)) throw malformed('not a Doorbell sealed object (bad magic)');
}

/**
 * What a phone holds: the doorbells it pinned (`devices`, 32-byte Ed25519 public keys) and
 * its key holders (`keys`, crypto/kem.js). `verify` checks structure and the device
 * signature and never touches a secret; `openEnvelope` then unwraps and decrypts.
 */
export class Reader {
  #devices = new Map(); // device id hex -> raw public key
  #keys;

  constructor({ devices = [], keys = [] } = {}) {
    for (const raw of devices) {
      if (!(raw instanceof Uint8Array) || raw.length !== 32) throw new TypeError('a device public key is 32 bytes');
      this.#devices.set(toHex(deviceIdOf(raw)), raw);
    }
    for (const key of keys) {
      if (WRAPPED_LEN[key?.suite] === undefined || !(key.publicKey instanceof Uint8Array) || typeof key.decap !== 'function') {
        throw new TypeError('a key holder is { suite, publicKey, decap(enc) }');
      }
    }
    this.#keys = [...keys];
  }

  /** The raw public keys of the doorbells this reader trusts. */
  get devices() {
    return [...this.#devices.values()];
  }

  /** The public key of device `deviceId` (bytes or hex), or ObjectError 'untrusted'. */
  device(deviceId) {
    const hex = typeof deviceId === 'string' ? deviceId : toHex(deviceId);
    const raw = this.#devices.get(hex);
    if (raw === undefined) {
      throw new ObjectError('untrusted', `signed by device ${hex.slice(0, 16)}, which this phone does not trust`);
    }
    return raw;
  }

  /** Parse `bytes` and verify the device signature (FORMAT §5, in its order). Resolves to
   * the envelope; rejects with ObjectError 'malformed', 'untrusted' or 'forged'. */
  async verify(bytes) {
    const envelope = parseEnvelope(bytes);
    const device = this.device(envelope.deviceIdHex);
    const message = concat(SIGNATURE_CONTEXT, await digest(envelope.bytes.subarray(0, envelope.signedLength)));
    try {
      await verifyStrict(device, message, envelope.signature, 'device');
    } catch (error) {
      if (error instanceof SignatureError) throw new ObjectError('forged', error.message);
      throw error;
    }
    verified.add(envelope);
    return envelope;
  }

  /** Verify and open `bytes`, and check its contents (FORMAT §4.1, §7): an object ready to
   * use, its `keyring` parsed when it is a keyring object. */
  async open(bytes) {
    const opened = await this.openEnvelope(await this.verify(bytes));
    checkContents(opened);
    return opened;
  }

  /** Whether one of this reader's keys has a stanza in `envelope` (suite and tag match). */
  canOpen(envelope) {
    return this.#matches(envelope).length > 0;
  }

  /**
   * Open an envelope `verify` returned: unwrap the data key from this phone's stanza,
   * decrypt and decode the payload (FORMAT §4). Resolves to
   *   { deviceId, deviceIdHex, seq, prev, chainHash, kind, kindName, epoch (Number),
   *     timeUs (BigInt), meta, body (a view of the plaintext), keyring: null }
   * (`keyring` is set by checkContents). Rejects with NotARecipient ('not-for-us'),
   * ObjectError 'unopenable' (sealed to this phone, yet does not open) or 'rejected'.
   */
  async openEnvelope(envelope) {
    if (!verified.has(envelope)) throw new TypeError('openEnvelope takes an envelope that Reader.verify returned');
    const dataKey = await this.#unwrap(envelope);
    const key = await crypto.subtle.importKey('raw', dataKey, { name: 'AES-GCM' }, false, ['decrypt']);
    let plaintext;
    try {
      plaintext = await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: envelope.nonce, additionalData: envelope.bytes.subarray(0, envelope.headerLength) },
        key,
        envelope.bytes.subarray(envelope.headerLength, envelope.signedLength),
      );
    } catch {
      throw new ObjectError('unopenable', `object ${envelope.seq}: payload does not decrypt, though signed by the doorbell`);
    }
    const payload = decodePayload(new Uint8Array(plaintext));
    return {
      deviceId: envelope.deviceId,
      deviceIdHex: envelope.deviceIdHex,
      seq: envelope.seq,
      prev: envelope.prev,
      chainHash: envelope.chainHash,
      ...payload,
      keyring: null,
    };
  }

  #matches(envelope) {
    const matches = [];
    for (const holder of this.#keys) {
      const tag = recipientTag(envelope.deviceId, envelope.seq, holder.suite, holder.publicKey);
      for (const stanza of envelope.stanzas) {
        if (stanza.suite === holder.suite && equal(stanza.tag, tag)) matches.push([holder, stanza]);
      }
    }
    return matches;
  }

  async #unwrap(envelope) {
    const matches = this.#matches(envelope);
    for (const [holder, stanza] of matches) {
      const info = hpkeInfo(envelope.deviceId, envelope.seq, stanza.suite, stanza.tag);
      let dataKey;
      try {
        dataKey = await openBase(holder, stanza.wrapped, info, EMPTY);
      } catch (error) {
        if (error instanceof HpkeError) continue;
        throw error;
      }
      if (dataKey.length === 32) return dataKey;
    }
    if (matches.length) {
      // Signed by the device, addressed to us, yet unopenable: the object is invalid.
      throw new ObjectError('unopenable', `object ${envelope.seq}: the stanza for this phone does not open`);
    }
    throw new NotARecipient(`object ${envelope.seq} is not sealed to this phone's key`);
  }
}

/**
 * Check an opened object's meta for its kind (FORMAT §4.1) and, for a keyring object,
 * parse its document (§7) and check that its meta epoch, payload epoch and document epoch
 * are one number. Returns the keyring (also set as `opened.keyring`) or null for other
 * kinds. Throws ObjectError 'rejected': no part of such an object may be used.
 */
export function checkContents(opened) {
  checkMeta(opened.kind, opened.meta);
  if (opened.kind !== KIND.KEYRING) return null;
  let keyring;
  try {
    keyring = parseKeyring(opened.body, `keyring object ${opened.seq}`);
  } catch (error) {
    if (error instanceof KeyringError) throw rejected(error.message);
    throw error;
  }
  const epochs = [Number(opened.meta.epoch), opened.epoch, keyring.epoch];
  if (epochs[0] !== epochs[1] || epochs[1] !== epochs[2]) {
    throw rejected(
      `keyring object ${opened.seq}: meta epoch ${epochs[0]}, payload epoch ${epochs[1]} ` +
        `and document epoch ${epochs[2]} must be the same`,
    );
  }
  opened.keyring = keyring;
  return keyring;
}
