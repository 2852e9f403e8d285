// What a phone remembers of each doorbell across runs: the objects and keyring it saw
// (FORMAT §6.3, doorbell/phone/memory.py, and the live checks of doorbell/phone/watch.py).
//
// Objects alone cannot show that the newest ones were deleted, that one the phone already
// saw is now "evicted" by a signed notice, that an old event is replayed as new, or that a
// keyring was rolled back: a phone that remembers what it has already seen can. It keeps,
// per device, the highest seq whose signature it verified (with its chain hash), every seq
// it verified as runs of consecutive numbers, those of them it opened and found to be of a
// kind the device never evicts, and the newest keyring object it read. Updates only ever
// move forward. Storage is the app's: this is the seen.json document, as a string.
//
// Remembered = { head: {seq: BigInt, hash: Uint8Array} | null,
//                keyring: {seq: BigInt, keyring, epoch: Number} | null,
//                seen: [[first, last], ...], kept: [[first, last], ...] }   (BigInt runs)

import { equal, fromHex, toHex, utf8 } from '../bytes.js';
import { encodeKeyString, PREFIX, SUITES } from '../keystrings.js';
import { parseKeyring } from '../format/keyring.js';
import { parseStrictJson } from '../format/strictjson.js';
import { MAX_RUNS, firstIn, runsOf, seqsAsRuns } from './intervals.js';
import { epochRollback, pyRepr, sameKeyring, stanzaMismatch, suiteOf } from './rules.js';

export { MAX_RUNS, firstIn, runsOf, seqsAsRuns };

const isJsonObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
// An integer as the strict JSON reader gives one: a BigInt (or a Number holding an integer).
const isJsonInteger = (container, key) => typeof container[key] === 'bigint' || Number.isInteger(container[key]);

export const VERSION = 2;
const READS = [1, 2]; // version 1 had no "seen": its head is the only seq it remembers
const U64_LIMIT = 1n << 64n;
const DEVICE = /^[0-9a-f]{64}$/;
const HASH = /^[0-9a-f]{64}$/;

/** The phone's memory cannot be read: it is never taken as empty (that would switch off
 * exactly the checks it exists for). */
export class MemoryError extends Error {
  constructor(message) {
    super(message);
    this.name = 'MemoryError';
    this.code = 'damaged';
  }
}

export const NOTHING = Object.freeze({ head: null, keyring: null, seen: Object.freeze([]), kept: Object.freeze([]) });

/** The newest keyring object seen from a device: its seq and its (parsed) keyring. */
export function knownKeyring(seq, keyring) {
  return { seq, keyring, epoch: keyring.epoch };
}

const headRun = (head) => (head == null ? [] : [[head.seq, head.seq]]);

const sameRuns = (a, b) => a.length === b.length && a.every((run, i) => run[0] === b[i][0] && run[1] === b[i][1]);

/**
 * `before` moved forward by `other`: a lower seq or an older keyring never replaces a
 * newer one; seen numbers are added. Returns `before` itself when nothing changes.
 */
export function merged(before, other) {
  let out = before;
  const { head, keyring } = other;
  if (head != null && (before.head === null || head.seq > before.head.seq)) out = { ...out, head };
  if (
    keyring != null &&
    (before.keyring === null || (keyring.seq > before.keyring.seq && keyring.epoch >= before.keyring.epoch))
  ) {
    out = { ...out, keyring };
  }
  const seen = runsOf([...before.seen, ...(other.seen ?? []), ...headRun(head)]);
  const kept = runsOf([...before.kept, ...(other.kept ?? [])]);
  if (!sameRuns(seen, before.seen) || !sameRuns(kept, before.kept)) out = { ...out, seen, kept };
  return out;
}

/** Whether two Remembered hold the same. */
export function sameRemembered(a, b) {
  if (a === b) return true;
  const heads = a.head === null || b.head === null ? a.head === b.head : a.head.seq === b.head.seq && equal(a.head.hash, b.head.hash);
  const keyrings =
    a.keyring === null || b.keyring === null
      ? a.keyring === b.keyring
      : a.keyring.seq === b.keyring.seq && sameKeyring(a.keyring.keyring, b.keyring.keyring);
  return heads && keyrings && sameRuns(a.seen, b.seen) && sameRuns(a.kept, b.kept);
}

/** The lowest seq in first..last that `remembered` holds as seen, or null. */
export function seenIn(remembered, first, last) {
  return firstIn(remembered.seen, first, last);
}


/**
 * A keyring as the document the device publishes (FORMAT §7; Keyring.to_json, version 2):
 * what the memory writes for its newest keyring, and reads back as the same keyring.
 */
export function keyringDocument(keyring) {
  const recipients = keyring.recipients.map((r) => {
    const suite = suiteOf(r);
    const out = { name: r.name, role: r.role, suite: SUITES[suite].label, key: encodeKeyString(PREFIX.public[suite], r.publicKey) };
    if (r.signingKey) out.signing_key = encodeKeyString(PREFIX.signing, r.signingKey);
    out.added = utcSecond(r.added);
    if (r.expires) out.expires = utcSecond(r.expires);
    return out;
  });
  const document = { format: 'doorbell-keyring', version: 2, epoch: keyring.epoch, recipients };
  return JSON.stringify(document, null, 2) + '\n';
}

const utcSecond = (when) => when.toISOString().slice(0, 19) + 'Z';

/** What each live rejection is, in the watcher's own short words (watch.py). */
export const FORKED = 'FORK: a forked chain (a copied or restored doorbell state, or a stolen device key)';

/** seen.json: what this phone remembers of every device, by device id in hex. */
export class PhoneMemory {
  constructor(devices = new Map()) {
    this.devices = devices; // deviceIdHex -> Remembered
  }

  /** The memory a seen.json document (string or bytes) holds; MemoryError when damaged. */
  static fromJSON(text) {
    return new PhoneMemory(parse(typeof text === 'string' ? utf8(text) : text));
  }

  /** seen.json, version 2, as the Python phone writes it. */
  toJSON() {
    const devices = {};
    for (const id of [...this.devices.keys()].sort()) {
      const item = this.devices.get(id);
      const entry = {};
      if (item.head) entry.head = { seq: item.head.seq, hash: toHex(item.head.hash) };
      if (item.keyring) entry.keyring = { seq: item.keyring.seq, document: keyringDocument(item.keyring.keyring) };
      if (item.seen.length) entry.seen = item.seen;
      if (item.kept.length) entry.kept = item.kept;
      devices[id] = entry;
    }
    return encode({ version: VERSION, devices }, 1) + '\n';
  }

  /** What this phone remembers of one device (NOTHING when it knows none). */
  get(deviceIdHex) {
    return this.devices.get(deviceIdHex) ?? NOTHING;
  }

  /** Every device remembered: a Map deviceIdHex -> Remembered, as verifySource takes it. */
  remembered() {
    return new Map(this.devices);
  }

  /** Merge one device's Remembered in (forward only); whether anything changed. */
  update(deviceIdHex, remembered) {
    const before = this.get(deviceIdHex);
    const after = merged(before, remembered);
    if (sameRemembered(after, before)) return false;
    this.devices.set(deviceIdHex, after);
    return true;
  }

  /** Remember what a verification saw of each device (`sync` does; `verify` of a folder
   * does not: an old archive or someone else's copy must not change what this phone
   * expects). Whether anything changed. */
  remember(verification) {
    let changed = false;
    for (const [id, item] of verification.seen) changed = this.update(id, item) || changed;
    return changed;
  }

  // -- live objects (doorbell/phone/watch.py, Watcher) -------------------------------------

  /** Whether a keyring object arriving live is the newest one seen, or older than it:
   * retained on the broker, or late, and not news. */
  isKnownKeyring(deviceIdHex, seq, keyring) {
    const known = this.get(deviceIdHex).keyring;
    if (known === null || seq > known.seq) return false;
    return seq < known.seq || sameKeyring(keyring, known.keyring);
  }

  /**
   * The rules a live object (an event, or a keyring object whose document is `keyring`)
   * must pass against what this phone saw before: replays, forks, rollbacks, keyrings never
   * published, and stanzas against the keyring of its epoch. `envelope` is the reader's
   * ({deviceId, deviceIdHex, seq, chainHash, stanzas}), `opened` gives its `epoch`.
   * Returns {what, why} (`why` the kind of rejection, in a few fixed words), or null.
   */
  liveProblem(envelope, opened, keyring = null) {
    const { head, keyring: known } = this.get(envelope.deviceIdHex ?? toHex(envelope.deviceId));
    const seq = envelope.seq;
    if (keyring === null && head !== null && seq <= head.seq) {
      if (seq === head.seq && !equal(envelope.chainHash, head.hash)) {
        return { what: `FORK: object ${seq} differs from the one this phone saw before`, why: FORKED };
      }
      return {
        what:
          `REPLAY: event ${seq} is not newer than seq ${head.seq}, which this phone ` +
          'has already seen (replayed or held back by the broker): not a new ring',
        why: 'REPLAY: not newer than an event this phone has seen',
      };
    }
    if (keyring !== null && known !== null && seq === known.seq) {
      return { what: `FORK: keyring object ${seq} differs from the one seen before`, why: FORKED };
    }
    const rollback = epochRollback(seq, opened.epoch, null, known);
    if (rollback !== null) return { what: rollback, why: 'keyring rollback' };
    if (keyring === null && known !== null && opened.epoch > known.epoch) {
      // The device publishes (retained) the keyring object before any object sealed under
      // a changed keyring: this phone would have seen it first.
      return {
        what:
          `event ${seq} is sealed under keyring epoch ${opened.epoch}, but the ` +
          `newest keyring published is epoch ${known.epoch}: a keyring never published`,
        why: 'sealed under a keyring never published',
      };
    }
    const sealedUnder = keyring ?? known?.keyring ?? null;
    if (sealedUnder !== null && sealedUnder.epoch === opened.epoch) {
      const mismatch = stanzaMismatch(envelope, sealedUnder);
      if (mismatch !== null) return { what: mismatch, why: 'stanzas that are not exactly the keyring' };
    }
    return null;
  }

  /** Remember a live object that passed (an event, or a keyring object): its seq is now
   * the head, seen and kept (neither kind is ever evicted). Whether anything changed. */
  rememberLive(envelope, keyring = null) {
    const runs = seqsAsRuns([envelope.seq]);
    return this.update(envelope.deviceIdHex ?? toHex(envelope.deviceId), {
      head: { seq: envelope.seq, hash: envelope.chainHash },
      keyring: keyring === null ? null : knownKeyring(envelope.seq, keyring),
      seen: runs,
      kept: runs,
    });
  }
}

// -- seen.json -----------------------------------------------------------------------------

function parse(raw) {
  const damaged = (reason) =>
    new MemoryError(
      `seen.json is damaged (${reason}); repair or remove it ` +
        '(removed, this phone forgets which objects and keyrings it has seen)',
    );
  const document = parseStrictJson(raw, damaged);
  if (!isJsonObject(document) || !isJsonInteger(document, 'version') || !READS.includes(Number(document.version))) {
    throw damaged(`expected an object with version ${READS.join(' or ')}`);
  }
  const version = Number(document.version);
  const keys = version === 1 ? ['head', 'keyring'] : ['head', 'keyring', 'seen', 'kept'];
  const members = Object.keys(document);
  if (members.length !== 2 || !('devices' in document) || !isJsonObject(document.devices)) {
    throw damaged("expected exactly the keys 'version' and 'devices' (an object)");
  }
  const out = new Map();
  for (const [device, entry] of Object.entries(document.devices)) {
    const where = `device ${pyRepr(device.slice(0, 16))}`;
    if (!DEVICE.test(device)) throw damaged(`${where}: not a device id of 64 lower-case hex digits`);
    if (!isJsonObject(entry) || !Object.keys(entry).every((key) => keys.includes(key))) {
      throw damaged(`${where}: expected an object with keys among [${[...keys].sort().map(pyRepr).join(', ')}]`);
    }
    const head = parseHead(entry.head, where, damaged);
    out.set(device, {
      head,
      keyring: parseKnownKeyring(entry.keyring, where, damaged),
      seen: runsOf([...parseRuns(entry.seen ?? [], 'seen', where, damaged), ...headRun(head)]),
      // Version 1 knew only its head, and held quota notices to it whatever its kind.
      kept: version === 1 ? headRun(head) : runsOf(parseRuns(entry.kept ?? [], 'kept', where, damaged)),
    });
  }
  return out;
}

/** A u64 of a parsed document: an integer written as one (not 1.0), in 0..2^64-1. */
function isSeq(container, key) {
  return isJsonInteger(container, key) && container[key] >= 0 && BigInt(container[key]) < U64_LIMIT;
}

function parseHead(value, where, damaged) {
  if (value === undefined || value === null) return null;
  if (
    !isJsonObject(value) ||
    Object.keys(value).sort().join() !== 'hash,seq' ||
    !isSeq(value, 'seq') ||
    typeof value.hash !== 'string' ||
    !HASH.test(value.hash)
  ) {
    throw damaged(`${where}: head must be {'seq': u64, 'hash': 64 hex digits}`);
  }
  return { seq: BigInt(value.seq), hash: fromHex(value.hash) };
}

function parseRuns(value, key, where, damaged) {
  const valid =
    Array.isArray(value) &&
    value.length <= MAX_RUNS &&
    value.every((run) => Array.isArray(run) && run.length === 2 && isSeq(run, 0) && isSeq(run, 1) && run[0] <= run[1]);
  if (!valid) throw damaged(`${where}: ${key} must be at most ${MAX_RUNS} [first, last] u64 pairs`);
  return value.map(([first, last]) => [BigInt(first), BigInt(last)]);
}

function parseKnownKeyring(value, where, damaged) {
  if (value === undefined || value === null) return null;
  if (
    !isJsonObject(value) ||
    Object.keys(value).sort().join() !== 'document,seq' ||
    !isSeq(value, 'seq') ||
    typeof value.document !== 'string'
  ) {
    throw damaged(`${where}: keyring must be {'seq': u64, 'document': string}`);
  }
  let keyring;
  try {
    keyring = parseKeyring(utf8(value.document), `seen.json: ${where}: keyring`);
  } catch (error) {
    throw damaged(error.message);
  }
  return knownKeyring(BigInt(value.seq), keyring);
}

/** JSON as Python's json.dumps(indent=n, ensure_ascii=False) writes it, with u64 numbers
 * (BigInt) written exactly. Only what seen.json holds: objects, arrays, strings, integers. */
function encode(value, indent, depth = 0) {
  if (typeof value === 'bigint' || typeof value === 'number') return String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  const pad = (level) => '\n' + ' '.repeat(indent * level);
  if (Array.isArray(value)) {
    if (!value.length) return '[]';
    return '[' + value.map((item) => pad(depth + 1) + encode(item, indent, depth + 1)).join(',') + pad(depth) + ']';
  }
  const keys = Object.keys(value);
  if (!keys.length) return '{}';
  const members = keys.map((key) => pad(depth + 1) + JSON.stringify(key) + ': ' + encode(value[key], indent, depth + 1));
  return '{' + members.join(',') + pad(depth) + '}';
}
