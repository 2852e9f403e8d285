// This browser's phone: its keys, made here with WebCrypto as non-extractable CryptoKeys
// (the page can use them, never read them), kept in IndexedDB with persistent storage
// asked for; and, in the same database, the small records the app remembers (pinned
// doorbells, brokers, the chain memory).
//
// A post-quantum phone (suite 2) is an X-Wing seed (FORMAT §1), expanded into an
// ML-KEM-768 key and an X25519 key, each kept as its own CryptoKey: Chromium reads a
// stored MLKEM768-X25519 CryptoKey back as null, its two halves persist. The seed bytes
// are wiped as soon as the keys are imported.

import { concat } from './bytes.js';
import { cryptoKeyHolder } from './crypto/kem.js';
import { expandXwingSeed } from './crypto/xwing.js';
import { checkPhoneName, fingerprint, identityString } from './protocol/identity.js';
import { entropyFromWords, recoverySeeds } from './protocol/recovery.js';

const DATABASE = 'doorbell-phone';
const DATABASE_VERSION = 1;
const KEYS = 'keys'; // one record, PHONE: this phone's keys
const RECORDS = 'records'; // small values the app keeps, by name
const PHONE = 'phone';
// RFC 8410 PKCS #8 wrappings of a raw 32-byte private key.
const ED25519_PKCS8 = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20);
const X25519_PKCS8 = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20);

export class KeystoreError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'KeystoreError';
    this.code = code;
  }
}

/** This browser's phone: public parts readable, secret parts usable only. */
export class Phone {
  constructor({ name, suite, publicKey, signingPublicKey, keys }) {
    this.name = name;
    this.suite = suite;
    this.publicKey = publicKey;
    this.signingPublicKey = signingPublicKey;
    this.keys = keys; // {mlkem?, x25519, signing}: non-extractable CryptoKeys
    this.holder = cryptoKeyHolder({ suite, publicKey, mlkemKey: keys.mlkem, x25519Key: keys.x25519 });
    this.identityString = identityString(this);
    this.fingerprint = fingerprint(publicKey);
  }

  /** Ed25519 signature by this phone's signing key: 64 bytes. */
  async sign(message) {
    return new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, this.keys.signing, message));
  }
}

/** The phone this browser holds, or null when it has none yet. */
export async function loadPhone() {
  const stored = await request(KEYS, 'readonly', (store) => store.get(PHONE));
  if (!stored) return null;
  const { mlkem, x25519, signing } = stored.keys;
  if (!x25519 || !signing || (stored.suite === 2 && !mlkem)) {
    throw new KeystoreError(
      "this browser lost part of the phone's keys (its storage read them back empty); " +
        'restore the phone from its recovery words, or enrol it again',
      'lost',
    );
  }
  return new Phone(stored);
}

/**
 * Make this browser's phone and keep it. With `recoveryWords` (the 24 words of a
 * recovery key) the phone is that key again: the same X-Wing and signing keys; else its
 * keys are new. Refuses when the browser holds a phone already: its keys are not to be
 * overwritten by accident.
 */
export async function createPhone({ name, recoveryWords, suite = 2 }) {
  checkPhoneName(name);
  if (await request(KEYS, 'readonly', (store) => store.count(PHONE))) {
    throw new KeystoreError('this browser holds a phone already; its keys are kept', 'exists');
  }
  let seeds;
  if (recoveryWords !== undefined && recoveryWords !== null) {
    const entropy = entropyFromWords(recoveryWords);
    seeds = await recoverySeeds(entropy);
    entropy.fill(0);
    suite = 2;
  } else {
    seeds = { xwingSeed: randomSeed(), ed25519Seed: randomSeed() };
  }
  const phone = { name, suite, keys: {} };
  try {
    if (suite === 2) {
      Object.assign(phone, await importXwingSeed(seeds.xwingSeed));
    } else if (suite === 1) {
      const pair = await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
      phone.keys.x25519 = pair.privateKey;
      phone.publicKey = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    } else {
      throw new KeystoreError(`unknown suite ${suite}; expected 1 (x25519) or 2 (mlkem768-x25519)`, 'suite');
    }
    phone.keys.signing = await importSigningSeed(seeds.ed25519Seed);
    phone.signingPublicKey = await publicKeyOf(phone.keys.signing, ['verify'], 'raw');
  } finally {
    seeds.xwingSeed.fill(0);
    seeds.ed25519Seed.fill(0);
  }
  // Without persistence the browser may clear the keys when it runs short of space.
  await navigator.storage?.persist?.().catch(() => false);
  await request(KEYS, 'readwrite', (store) => store.add(phone, PHONE));
  return new Phone(phone);
}

/** A small value the app keeps (structured-clonable), or undefined. */
export async function getRecord(key) {
  return request(RECORDS, 'readonly', (store) => store.get(key));
}

export async function putRecord(key, value) {
  await request(RECORDS, 'readwrite', (store) => store.put(value, key));
}

/**
 * The X-Wing seed's two halves as non-extractable CryptoKeys, and the public key
 * (ML-KEM-768 encapsulation key || X25519 public key, 1216 bytes).
 */
async function importXwingSeed(seed) {
  const { mlkemSeed, x25519Secret } = expandXwingSeed(seed);
  const wrapped = x25519Pkcs8(x25519Secret);
  try {
    const mlkem = await crypto.subtle.importKey('raw-seed', mlkemSeed, { name: 'ML-KEM-768' }, false, ['decapsulateBits']);
    const x25519 = await crypto.subtle.importKey('pkcs8', wrapped, { name: 'X25519' }, false, ['deriveBits']);
    const publicKey = concat(
      await publicKeyOf(mlkem, ['encapsulateBits'], 'raw-public'),
      await publicKeyOf(x25519, [], 'raw'),
    );
    return { publicKey, keys: { mlkem, x25519 } };
  } finally {
    mlkemSeed.fill(0);
    x25519Secret.fill(0);
    wrapped.fill(0);
  }
}

/** An Ed25519 private key from its 32-byte seed (RFC 8032), non-extractable, for signing. */
export async function importSigningSeed(seed) {
  const wrapped = ed25519Pkcs8(seed);
  try {
    return await crypto.subtle.importKey('pkcs8', wrapped, { name: 'Ed25519' }, false, ['sign']);
  } finally {
    wrapped.fill(0);
  }
}

/** The PKCS #8 document holding a raw Ed25519 seed (RFC 8410). */
export function ed25519Pkcs8(seed) {
  return pkcs8(ED25519_PKCS8, seed);
}

/** The PKCS #8 document holding a raw X25519 private key (RFC 8410). */
export function x25519Pkcs8(secret) {
  return pkcs8(X25519_PKCS8, secret);
}

function pkcs8(header, raw) {
  if (raw?.length !== 32) throw new TypeError('a raw private key here is 32 bytes');
  return concat(header, raw);
}

async function publicKeyOf(privateKey, usages, format) {
  const publicKey = await crypto.subtle.getPublicKey(privateKey, usages);
  return new Uint8Array(await crypto.subtle.exportKey(format, publicKey));
}

function randomSeed() {
  return crypto.getRandomValues(new Uint8Array(32));
}

/** Run `action(store)` in a transaction; resolves to its request's result once committed. */
async function request(storeName, mode, action) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(storeName, mode);
      const pending = action(transaction.objectStore(storeName));
      transaction.oncomplete = () => resolve(pending.result);
      transaction.onerror = () => reject(storageError(transaction.error));
      transaction.onabort = () => reject(storageError(transaction.error));
    });
  } finally {
    db.close();
  }
}

function open() {
  if (typeof indexedDB === 'undefined') {
    return Promise.reject(new KeystoreError('this browser has no IndexedDB: it cannot keep keys', 'no-storage'));
  }
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(DATABASE, DATABASE_VERSION);
    opening.onupgradeneeded = () => {
      opening.result.createObjectStore(KEYS);
      opening.result.createObjectStore(RECORDS);
    };
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(storageError(opening.error));
    opening.onblocked = () =>
      reject(new KeystoreError('another tab of this app holds the key store open: close it and reload', 'blocked'));
  });
}

function storageError(error) {
  return new KeystoreError(
    `this browser's storage refused: ${error?.message ?? error} (private browsing keeps nothing)`,
    'storage',
  );
}
