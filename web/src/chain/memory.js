// What a phone remembers of each doorbell across runs: the objects and keyring it saw
// (FORMAT §6.3, doorbell/phone/memory.py). Objects alone cannot show that the newest ones
// were deleted, that one the phone already saw is now "evicted" by a signed notice, that an
// old event is replayed as new, or that a keyring was rolled back: a phone that remembers
// what it has already seen can. Updates only ever add.
//
// Remembered = { head: {seq: BigInt, hash: Uint8Array} | null,
//                keyring: {seq: BigInt, keyring, epoch: Number} | null,
//                seen: [[first, last]] BigInt runs, kept: [[first, last]] BigInt runs }

import { fromHex, toHex, equal, utf8 } from '../bytes.js';
import { parseJson } from '../protocol/json.js';
import { bisectRight, compareBig, maxBig } from './runs.js';

export const VERSION = 2;
const READS = [1, 2]; // version 1 had no "seen": its head is the only seq it remembers
// At most this many runs of seen numbers per device; beyond it the oldest are forgotten
// (forgetting only makes later checks weaker, never raises a false alarm).
export const MAX_RUNS = 4096;
const U64_MAX = (1n << 64n) - 1n;
const DEVICE = /^[0-9a-f]{64}$/;

export class MemoryError extends Error {
  constructor(message) {
    super(message);
    this.name = 'MemoryError';
    this.code = 'damaged';
  }
}

export const NOTHING = Object.freeze({ head: null, keyring: null, seen: [], kept: [] });

export function knownKeyring(seq, keyring) {
  return { seq, keyring, epoch: keyring.epoch };
}

/** Sorted, merged runs, at most MAX_RUNS of them (the newest kept). */
export function runsOf(runs) {
  const merged = [];
  const sorted = [...runs].sort((a, b) => compareBig(a[0], b[0]) || compareBig(a[1], b[1]));
  for (const [first, last] of sorted) {
    const top = merged[merged.length - 1];
    if (top && first <= top[1] + 1n) top[1] = maxBig(top[1], last);
    else merged.push([first, last]);
  }
  return merged.slice(-MAX_RUNS);
}

/** Runs of consecutive numbers, from any seqs. */
export function seqsAsRuns(seqs) {
  return runsOf([...seqs].map((seq) => [seq, seq]));
}

/** The lowest number of `runs` in first..last, or null. */
export function firstIn(runs, first, last) {
  let at = bisectRight(runs, first, (run) => run[0]) - 1;
  if (at >= 0 && runs[at][1] >= first) return first;
  at += 1;
  if (at < runs.length && runs[at][0] <= last) return runs[at][0];
  return null;
}

/** The lowest remembered seq in first..last, or null. */
export function seenIn(remembered, first, last) {
  return firstIn(remembered.seen, first, last);
}

const headRun = (head) => (head === null ? [] : [[head.seq, head.seq]]);

const sameRuns = (a, b) =>
  a.length === b.length && a.every((run, i) => run[0] === b[i][0] && run[1] === b[i][1]);

/** Move forward only: a lower seq or an older keyring never replaces a newer one; seen
 * numbers are added. Returns `before` itself when nothing changes. */
export function merged(before, other) {
  let out = before;
  const { head, keyring } = other;
  if (head && (before.head === null || head.seq > before.head.seq)) out = { ...out, head };
  if (
    keyring &&
    (before.keyring === null ||
      (keyring.seq > before.keyring.seq && keyring.epoch >= before.keyring.epoch))
  ) {
    out = { ...out, keyring };
  }
  const seen = runsOf([...before.seen, ...other.seen, ...headRun(head)]);
  const kept = runsOf([...before.kept, ...other.kept]);
  if (!sameRuns(seen, before.seen) || !sameRuns(kept, before.kept)) out = { ...out, seen, kept };
  return out;
}

/** Whether two Remembered hold the same. */
export function sameRemembered(a, b) {
  if (a === b) return true;
  const heads =
    (a.head === null && b.head === null) ||
    (a.head && b.head && a.head.seq === b.head.seq && equal(a.head.hash, b.head.hash));
  const keyrings =
    (a.keyring === null && b.keyring === null) ||
    (a.keyring && b.keyring && a.keyring.seq === b.keyring.seq && a.keyring.keyring === b.keyring.keyring);
  return Boolean(heads && keyrings && sameRuns(a.seen, b.seen) && sameRuns(a.kept, b.kept));
}

/** seen.json: what this phone remembers of every device, by device id in hex.
 *
 * `parseKeyring(text, where)` turns a stored keyring document into the reader's keyring
 * (throwing on a bad one), `keyringDocument(keyring)` a keyring back into its document. */
export class PhoneMemory {
  constructor(devices = new Map(), { parseKeyring, keyringDocument } = {}) {
    this.devices = devices;
    this.parseKeyring = parseKeyring;
    this.keyringDocument = keyringDocument;
  }

  static fromJSON(text, options = {}) {
    return new PhoneMemory(parse(text, options.parseKeyring), options);
  }

  toJSON() {
    const devices = {};
    for (const id of [...this.devices.keys()].sort()) {
      const item = this.devices.get(id);
      const entry = {};
      if (item.head) entry.head = { seq: item.head.seq, hash: toHex(item.head.hash) };
      if (item.keyring) {
        entry.keyring = { seq: item.keyring.seq, document: this.#document(item.keyring) };
      }
      if (item.seen.length) entry.seen = item.seen;
      if (item.kept.length) entry.kept = item.kept;
      devices[id] = entry;
    }
    // u64 numbers are written as JSON numbers, exactly (no round trip through a double).
    const marked = JSON.stringify({ version: VERSION, devices }, (_, value) =>
      typeof value === 'bigint' ? `\u0000${value}\u0000` : value, 1);
    return marked.replace(/"\\u0000(\d+)\\u0000"/g, '$1') + '\n';
  }

  #document(known) {
    if (typeof known.document === 'string') return known.document;
    const keyring = known.keyring;
    if (this.keyringDocument) return this.keyringDocument(keyring);
    if (typeof keyring.document === 'string') return keyring.document;
    if (keyring.document instanceof Uint8Array) return new TextDecoder().decode(keyring.document);
    if (typeof keyring.toJSON === 'function') {
      const document = keyring.toJSON();
      return typeof document === 'string' ? document : new TextDecoder().decode(document);
    }
    throw new MemoryError('cannot write a keyring: no way to turn it into its document');
  }

  /** Every device remembered: Map deviceIdHex -> Remembered. */
  remembered() {
    return new Map(this.devices);
  }

  /** Merge one device's Remembered in (forward only); whether anything changed. */
  update(deviceIdHex, remembered) {
    const before = this.devices.get(deviceIdHex) ?? NOTHING;
    const after = merged(before, remembered);
    if (sameRemembered(after, before)) return false;
    this.devices.set(deviceIdHex, after);
    return true;
  }

  /** Remember what a verification saw of each device (what `sync` records). */
  remember(verification) {
    let changed = false;
    for (const [id, item] of verification.seen) changed = this.update(id, item) || changed;
    return changed;
  }
}

function parse(text, parseKeyring) {
  const damaged = (reason) =>
    new MemoryError(
      `seen.json is damaged (${reason}); repair or remove it ` +
        '(removed, this phone forgets which objects and keyrings it has seen)',
    );
  const document = parseJson(typeof text === 'string' ? utf8(text) : text, damaged);
  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!isObject(document) || !READS.includes(document.version)) {
    throw damaged(`expected an object with version ${READS.join(' or ')}`);
  }
  const version = document.version;
  const keys = version === 1 ? ['head', 'keyring'] : ['head', 'keyring', 'seen', 'kept'];
  const top = Object.keys(document).sort();
  if (top.join() !== 'devices,version' || !isObject(document.devices)) {
    throw damaged("expected exactly the keys 'version' and 'devices' (an object)");
  }
  const out = new Map();
  for (const [device, entry] of Object.entries(document.devices)) {
    const where = `device '${device.slice(0, 16)}'`;
    if (!DEVICE.test(device)) throw damaged(`${where}: not a device id of 64 lower-case hex digits`);
    if (!isObject(entry) || !Object.keys(entry).every((k) => keys.includes(k))) {
      throw damaged(`${where}: expected an object with keys among [${keys.map((k) => `'${k}'`).join(', ')}]`);
    }
    const head = parseHead(entry.head, where, damaged);
    const seen = runsOf([...parseRuns(entry.seen ?? [], 'seen', where, damaged), ...headRun(head)]);
    const kept = version === 1 ? headRun(head) : runsOf(parseRuns(entry.kept ?? [], 'kept', where, damaged));
    out.set(device, { head, keyring: parseKnownKeyring(entry.keyring, where, damaged, parseKeyring), seen, kept });
  }
  return out;
}

const isSeq = (value) =>
  (typeof value === 'bigint' || Number.isInteger(value)) && value >= 0 && BigInt(value) <= U64_MAX;

function parseHead(value, where, damaged) {
  if (value === undefined || value === null) return null;
  if (
    typeof value !== 'object' ||
    Object.keys(value).sort().join() !== 'hash,seq' ||
    !isSeq(value.seq) ||
    typeof value.hash !== 'string' ||
    !/^[0-9a-f]{64}$/.test(value.hash)
  ) {
    throw damaged(`${where}: head must be {'seq': u64, 'hash': 64 hex digits}`);
  }
  return { seq: BigInt(value.seq), hash: fromHex(value.hash) };
}

function parseRuns(value, key, where, damaged) {
  if (
    !Array.isArray(value) ||
    value.length > MAX_RUNS ||
    !value.every((run) => Array.isArray(run) && run.length === 2 && run.every(isSeq) && run[0] <= run[1])
  ) {
    throw damaged(`${where}: ${key} must be at most ${MAX_RUNS} [first, last] u64 pairs`);
  }
  return value.map(([first, last]) => [BigInt(first), BigInt(last)]);
}

function parseKnownKeyring(value, where, damaged, parseKeyring) {
  if (value === undefined || value === null) return null;
  if (
    typeof value !== 'object' ||
    Object.keys(value).sort().join() !== 'document,seq' ||
    !isSeq(value.seq) ||
    typeof value.document !== 'string'
  ) {
    throw damaged(`${where}: keyring must be {'seq': u64, 'document': string}`);
  }
  if (!parseKeyring) throw damaged(`${where}: no keyring parser given to read its keyring`);
  let keyring;
  try {
    keyring = parseKeyring(value.document, `seen.json: ${where}: keyring`);
  } catch (error) {
    throw damaged(error.message);
  }
  return { ...knownKeyring(BigInt(value.seq), keyring), document: value.document };
}
