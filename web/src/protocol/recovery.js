// The recovery key (PROTOCOL §8): 256 random bits written as 24 BIP-39 English words,
// from which a phone derives an X-Wing seed and an Ed25519 seed, enrolled with the role
// `recovery`. The words are shown once and stored nowhere; typed back in, they are
// checked word by word so a person learns which one to look at again.

import { entropyToMnemonic, mnemonicToEntropy } from '@scure/bip39';
import { wordlist } from '@scure/bip39/wordlists/english.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { randomBytes } from '../bytes.js';
import { publicKeyFromSecret } from '../crypto/kem.js';
import { hkdf } from './kdf.js';

export const WORDS = 24;
export const ENTROPY_LEN = 32;
const SALT = 'doorbell recovery v1';
const WORDSET = new Set(wordlist);

export class RecoveryWordsError extends Error {
  /** `code` is `count`, `word` (with `position`, 1-based, and `suggestion`) or `checksum`. */
  constructor(message, code, details = {}) {
    super(message);
    this.name = 'RecoveryWordsError';
    this.code = code;
    Object.assign(this, details);
  }
}

/** 32 fresh random bytes: a new recovery key. */
export function newRecoveryEntropy() {
  return randomBytes(ENTROPY_LEN);
}

/** The 24 words of `entropy`: the bits and the first 8 bits of their SHA-256. */
export function recoveryWords(entropy) {
  if (entropy?.length !== ENTROPY_LEN) throw new TypeError(`a recovery key is ${ENTROPY_LEN} bytes`);
  return entropyToMnemonic(entropy, wordlist).split(' ');
}

/**
 * The 32 bytes the words hold. `words` is text (any spacing or case) or a list.
 * Throws RecoveryWordsError naming the first word outside the list by its position,
 * with the closest word of the list when one is close, or saying the checksum fails.
 */
export function entropyFromWords(words) {
  const list = (Array.isArray(words) ? words.join(' ') : String(words))
    .toLowerCase()
    .split(/\s+/u)
    .filter(Boolean);
  if (list.length !== WORDS) {
    throw new RecoveryWordsError(`a recovery key is ${WORDS} words; these are ${list.length}`, 'count');
  }
  for (const [index, word] of list.entries()) {
    if (WORDSET.has(word)) continue;
    const suggestion = closest(word);
    const hint = suggestion ? `; did you mean "${suggestion}"?` : '';
    throw new RecoveryWordsError(
      `word ${index + 1} ("${[...word].slice(0, 20).join('')}") is not in the recovery word list${hint}`,
      'word',
      { position: index + 1, word, suggestion },
    );
  }
  try {
    return mnemonicToEntropy(list.join(' '), wordlist);
  } catch {
    throw new RecoveryWordsError(
      'the words do not check out: one of them is wrong or two are swapped ' +
        '(every word is a real one, so compare them with the paper again)',
      'checksum',
    );
  }
}

/** The seeds of PROTOCOL §8: {xwingSeed, ed25519Seed}, 32 bytes each. */
export async function recoverySeeds(entropy) {
  if (entropy?.length !== ENTROPY_LEN) throw new TypeError(`a recovery key is ${ENTROPY_LEN} bytes`);
  return {
    xwingSeed: await hkdf(entropy, SALT, 'x-wing seed', 32),
    ed25519Seed: await hkdf(entropy, SALT, 'ed25519 seed', 32),
  };
}

/**
 * The recovery key's public identity, {suite: 2, publicKey, signingPublicKey}: what a
 * hello offers and `set-recovery` enrols. Its seeds are wiped once used.
 */
export async function recoveryIdentity(entropy) {
  const { xwingSeed, ed25519Seed } = await recoverySeeds(entropy);
  try {
    return {
      suite: 2,
      publicKey: publicKeyFromSecret(2, xwingSeed),
      signingPublicKey: ed25519.getPublicKey(ed25519Seed),
    };
  } finally {
    xwingSeed.fill(0);
    ed25519Seed.fill(0);
  }
}

/** The word of the list a mistyped `word` most likely meant, or null. */
function closest(word) {
  // Every word of the list is fixed by its first four letters.
  if (word.length >= 4) {
    const start = wordlist.find((w) => w.startsWith(word.slice(0, 4)));
    if (start) return start;
  }
  let best = null;
  let bestDistance = 3; // further than two edits is a guess, not a suggestion
  for (const candidate of wordlist) {
    const distance = editDistance(word, candidate, bestDistance);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Levenshtein distance, adjacent swaps counting one; stops early at `limit`. */
function editDistance(a, b, limit) {
  if (Math.abs(a.length - b.length) >= limit) return limit;
  let before = null;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let smallest = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let value = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost);
      if (before && i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        value = Math.min(value, before[j - 2] + 1);
      }
      row.push(value);
      smallest = Math.min(smallest, value);
    }
    if (smallest >= limit) return limit;
    before = previous;
    previous = row;
  }
  return previous[b.length];
}
