// Checks a set of sealed objects as a whole: signatures, then each device's chain
// (FORMAT §4.1, §6 and §7; doorbell/phone/chain.py, rule by rule, with the same finding
// codes and words). Everything a bucket operator could do to footage without the device
// key shows up here: altered or forged objects, deleted ones (gaps), reordered, replaced or
// renamed ones, duplicates, forks, objects replayed from another device. Notices signed by
// the device are held to the device's own behaviour, so that even a stolen device key
// cannot explain a deletion away.
//
// Announced ranges are handled as ranges (bisection over the objects present), never number
// by number: a notice claiming 2^63 numbers costs what a notice claiming one costs.

import { equal, fromHex, toHex, ZERO32 } from '../bytes.js';
import { checkContents, objectName } from '../format/object.js';
import { GapIndex, Intervals, bisectLeft, bisectRight, compareBig, firstIn, minBig, seqsAsRuns, without } from './intervals.js';
import { NOTHING, knownKeyring, seenIn } from './memory.js';
import { announcedAs, discardReasonProblem, epochRollback, isDiscardReason, sameKeyring, stanzaMismatch } from './rules.js';

/** What kind of finding: stable names for programs and test vectors (Python's `Code`). */
export const Code = Object.freeze({
  UNREADABLE: 'unreadable',
  MALFORMED: 'malformed',
  UNTRUSTED: 'untrusted',
  FORGED: 'forged',
  UNOPENABLE: 'unopenable',
  REJECTED: 'rejected', // authentic and opened, but breaks a payload, meta or keyring rule
  NOT_FOR_US: 'not-sealed-to-this-phone',
  RENAMED: 'renamed',
  DUPLICATE: 'duplicate',
  FORK: 'fork',
  REORDERED: 'reordered',
  REPLACED: 'replaced',
  BAD_START: 'bad-start',
  RESTART: 'restart-mismatch',
  HIDES: 'notice-hides-delivered',
  DISCARD: 'bad-discard',
  OVERLAP: 'overlapping-notices',
  EVICTION_ORDER: 'eviction-order',
  EVICTED_PRESENT: 'evicted-but-present',
  MISSING: 'missing',
  UNCONFIRMED: 'unconfirmed-gap',
  UNPUBLISHED: 'unpublished-keyring',
  ANNOUNCED: 'announced-gap',
  KEYRING: 'keyring',
  ROLLBACK: 'keyring-rollback',
  STANZAS: 'stanzas',
  CLIP: 'clip',
  NEWEST_MISSING: 'newest-missing',
  DELETED: 'deleted-from-bucket',
  OVERLAP_NOTE: 're-announced',
});

/** Payload kinds (FORMAT §4). */
export const KIND = Object.freeze({ INIT: 1, SEGMENT: 2, EVENT: 3, KEYRING: 4, NOTICE: 5 });

/** At most this many numbers a restart may skip (FORMAT §6). */
export const RESERVATION_BLOCK = 1024n;

/** A u64 of checked meta (an integer, as the strict JSON reader gives it), as a BigInt. */
const big = (value) => BigInt(value);

/** What a verification found: entries (one small record per authentic object), findings,
 * and per device what this set would add to the phone's memory (`seen`). */
export class Verification {
  constructor() {
    this.entries = [];
    this.findings = [];
    this.seen = new Map(); // deviceIdHex -> Remembered
  }

  get ok() {
    return !this.findings.some((f) => f.problem);
  }

  get problems() {
    return this.findings.filter((f) => f.problem);
  }

  add(where, message, { problem = true, code = '' } = {}) {
    this.findings.push({ where, message, problem, code });
  }
}

/**
 * Verify and open every object in `source` ({names(), read(name)}), one at a time, and
 * keep a small record of each (an entry), never its bytes.
 *
 * `remembered` (Map deviceIdHex -> Remembered, PhoneMemory.remembered()) is what this
 * phone saw of each device before: objects it saw count as delivered even when absent
 * here, and its newest keyring is known. Nothing is written to it here: callers decide
 * what to remember (PhoneMemory.remember).
 *
 * `keeper(entry, body)` is handed the body of every object that opened and passed the
 * per-object rules, in the order of `entries`. With `sync`, the rule only a sync applies
 * is added: the bucket must hold the newest object of each device this phone has seen.
 * `onProgress(done, total)` is called after each object.
 */
export async function verifySource(source, reader, remembered = new Map(), keeper = null, { sync = false, onProgress } = {}) {
  const result = new Verification();
  const names = await source.names();
  let done = 0;
  for (const name of names) {
    const entry = await readEntry(source, reader, name, result, keeper);
    if (entry !== null) result.entries.push(entry);
    onProgress?.(++done, names.length);
  }
  const unreadable = result.entries.filter((e) => e.contents === null && !e.rejected).length;
  if (unreadable) {
    result.add(
      'keys',
      `${unreadable} authentic object(s) are not sealed to this phone ` +
        '(sealed before it was enrolled or after it was revoked)',
      { problem: false, code: Code.NOT_FOR_US },
    );
  }
  const memory = remembered ?? new Map();
  for (const [id, entries] of byDevice(result.entries)) {
    new DeviceChain(entries, result, memory.get(id) ?? NOTHING).check();
  }
  if (sync) newestMissing(result, new Set(names), memory);
  return result;
}

/**
 * The chain rules over one device's entries, given what the phone remembers of it
 * (`remembered`: a Remembered, or NOTHING). Returns a Verification holding only the
 * findings of the chain (and `seen`, what it would remember); reads nothing.
 */
export function checkDeviceChain(entries, remembered = NOTHING) {
  const result = new Verification();
  result.entries = entries;
  if (entries.length) new DeviceChain(entries, result, remembered ?? NOTHING).check();
  return result;
}

function byDevice(entries) {
  const out = new Map();
  for (const entry of entries) {
    if (!out.has(entry.deviceIdHex)) out.set(entry.deviceIdHex, []);
    out.get(entry.deviceIdHex).push(entry);
  }
  return out;
}

async function readEntry(source, reader, name, result, keeper) {
  let bytes;
  try {
    bytes = await source.read(name);
  } catch (error) {
    result.add(name, `unreadable: ${error.message}`, { code: Code.UNREADABLE });
    return null;
  }
  let envelope;
  try {
    envelope = await reader.verify(bytes);
  } catch (error) {
    if (error?.code === undefined) throw error; // a bug, not a bad object
    if (error.code === 'malformed') {
      result.add(name, `malformed: ${error.message}`, { code: Code.MALFORMED });
    } else if (error.code === 'untrusted') {
      result.add(name, `not from a trusted doorbell: ${error.message} (foreign or replayed object)`, {
        code: Code.UNTRUSTED,
      });
    } else {
      result.add(name, `tampered or forged: ${error.message}`, { code: Code.FORGED });
    }
    return null;
  }
  const record = (contents, rejected = false) => ({
    name,
    deviceId: envelope.deviceId,
    deviceIdHex: envelope.deviceIdHex ?? toHex(envelope.deviceId),
    seq: envelope.seq,
    prev: envelope.prev,
    chainHash: envelope.chainHash,
    stanzas: envelope.stanzas.map(({ suite, tag }) => ({ suite, tag })),
    contents,
    rejected,
  });
  let opened;
  try {
    opened = await reader.openEnvelope(envelope);
  } catch (error) {
    if (error?.code === undefined) throw error;
    if (error.code === 'not-for-us') return record(null);
    // Signed by the device, so its place in the chain is authentic; its payload is not usable.
    if (error.code === 'rejected') result.add(name, `rejected: ${error.message}`, { code: Code.REJECTED });
    else result.add(name, `signed but does not open: ${error.message}`, { code: Code.UNOPENABLE });
    return record(null, true);
  }
  let keyring = null;
  try {
    const checked = checkContents(opened);
    if (opened.kind === KIND.KEYRING) keyring = checked ?? opened.keyring;
  } catch (error) {
    if (error?.code === undefined) throw error;
    result.add(name, `rejected: ${error.message}`, { code: Code.REJECTED });
    return record(null, true);
  }
  const entry = record({ kind: opened.kind, timeUs: opened.timeUs, epoch: opened.epoch, meta: opened.meta, keyring });
  if (keeper) await keeper(entry, opened.body);
  return entry;
}

/**
 * The bucket must hold the newest object of each device that this phone has seen
 * (doorbell/phone/sync.py). Objects alone cannot show that the newest ones were deleted; a
 * phone that saw a higher seq (live, or in another copy) can. The bucket may only be
 * behind (the doorbell uploads after it notifies), so the words say both. Only devices
 * with objects here are checked: one phone may follow doorbells of different buckets.
 */
export function newestMissing(verification, listed, remembered) {
  const newest = new Map();
  const fetched = new Set();
  for (const entry of verification.entries) {
    const device = entry.deviceIdHex;
    if (!newest.has(device)) newest.set(device, -1n);
    fetched.add(`${device}:${entry.seq}`);
    if (listed.has(entry.name) && entry.seq > newest.get(device)) newest.set(device, entry.seq);
  }
  for (const [device, bucketMax] of newest) {
    const head = (remembered.get(device) ?? NOTHING).head;
    if (head === null || head.seq <= bucketMax || fetched.has(`${device}:${head.seq}`)) continue;
    const ends = bucketMax >= 0n ? `ends at seq ${bucketMax}` : 'holds none of its objects';
    verification.add(
      `device ${device.slice(0, 16)}`,
      'newest objects not in the bucket yet, or deleted: this phone has seen seq ' +
        `${head.seq} (live, or in another copy), but the bucket ${ends}; sync again once ` +
        'the doorbell has uploaded: still missing then, they were deleted',
      { code: Code.NEWEST_MISSING },
    );
  }
}

const isNotice = (contents, notice) => contents.kind === KIND.NOTICE && contents.meta.notice === notice;

/** Authentic, but this phone cannot see what it is (not sealed to it). */
const unknown = (entry) => entry.contents === null && !entry.rejected;

/** Numbers announced as never to appear: a restart's skip, a quota or damaged range. */
function gap(first, last, reason, notice, bridge = null, confirmed = true) {
  // reason: "restart", "quota" or "damaged"; notice: seq of the object that announced it;
  // bridge: chain hash of object `last`, for discarded ranges; confirmed: false when
  // implied by an object this phone cannot open.
  return { first, last, reason, notice, bridge, confirmed };
}

const byTuple = (a, b) => compareBig(a[0], b[0]) || compareBig(a[1], b[1]);

/** The chain rules for one device's objects (FORMAT §6 and §7). */
class DeviceChain {
  constructor(entries, result, memory) {
    this.result = result;
    this.memory = { head: memory.head ?? null, keyring: memory.keyring ?? null, seen: memory.seen ?? [], kept: memory.kept ?? [] };
    this.head = this.memory.head;
    this.deviceIdHex = entries[0].deviceIdHex;
    this.device = `device ${this.deviceIdHex.slice(0, 16)}`;
    this.entries = entries;
    this.unique = new Map(); // seq -> the first entry with it
    this.present = []; // sorted seqs
    this.gaps = [];
    this.restarts = new Map(); // restart notices this phone read: seq -> meta
    this.forked = new Set();
    // Objects this phone cannot open although every keyring they can have been sealed
    // under lists it: they cannot be a notice sealed to others (FORMAT §7).
    this.withheld = new Set();
    // Remembered runs minus the objects present, computed once: every range a notice
    // announces is then one bisection, however many there are.
    this.absentSeen = null;
    this.absentKept = null;
  }

  add(where, message, code, { problem = true } = {}) {
    this.result.add(where, message, { problem, code });
  }

  at(seq) {
    return this.unique.get(seq);
  }

  check() {
    this.namesAndForks();
    this.keyrings();
    this.notices();
    this.links();
    this.overlaps();
    this.missing();
    this.evictionOrder();
    this.clips();
    this.remember();
  }

  // -- names, duplicates, forks --------------------------------------------------------------

  namesAndForks() {
    const bySeq = new Map();
    for (const entry of this.entries) {
      const expected = objectName(this.deviceIdHex, entry.seq);
      if (entry.name !== expected) {
        this.add(
          entry.name,
          `holds seq ${entry.seq} of ${this.device}, whose name is ${expected} (renamed or reordered)`,
          Code.RENAMED,
        );
      }
      if (!bySeq.has(entry.seq)) bySeq.set(entry.seq, []);
      bySeq.get(entry.seq).push(entry);
    }
    for (const seq of [...bySeq.keys()].sort(compareBig)) {
      const [first, ...others] = bySeq.get(seq);
      for (const other of others) {
        // Both signatures verified under one key, and Ed25519 signs deterministically:
        // one chain hash (the hash of the signature) means the same bytes.
        if (equal(other.chainHash, first.chainHash)) {
          this.add(other.name, `duplicate of ${first.name} (seq ${seq})`, Code.DUPLICATE);
        } else {
          this.forked.add(seq);
          this.add(
            other.name,
            `fork: a different object than ${first.name} with the same seq ${seq} ` +
              '(device state rolled back or device key compromised)',
            Code.FORK,
          );
        }
      }
      this.unique.set(seq, first);
    }
    this.present = [...this.unique.keys()].sort(compareBig);
    const head = this.head;
    if (head !== null && this.unique.has(head.seq)) {
      const entry = this.at(head.seq);
      if (!equal(entry.chainHash, head.hash)) {
        this.forked.add(head.seq);
        this.add(
          entry.name,
          `fork: seq ${head.seq} differs from the object with that seq this phone ` +
            'verified before (device state rolled back or device key compromised)',
          Code.FORK,
        );
      }
    }
  }

  // -- keyrings, epochs, stanzas (FORMAT §7) -------------------------------------------------

  /** Every keyring this phone knows, by epoch: [lowest seq that carries it, keyring]. Each
   * was opened from a keyring object sealed to that keyring, so each lists this phone. */
  knownKeyrings() {
    const known = new Map();
    const remembered = this.memory.keyring;
    if (remembered !== null) known.set(remembered.epoch, [remembered.seq, remembered.keyring]);
    for (const seq of this.present) {
      const keyring = this.at(seq).contents?.keyring ?? null;
      if (keyring === null) continue;
      if (!known.has(keyring.epoch)) known.set(keyring.epoch, [seq, keyring]);
      const earlier = known.get(keyring.epoch);
      if (!sameKeyring(earlier[1], keyring)) {
        this.add(
          this.at(seq).name,
          `keyring epoch ${keyring.epoch} differs from the keyring of the same epoch ` +
            `in seq ${earlier[0]}: one epoch, two keyrings`,
          Code.KEYRING,
        );
      } else if (seq < earlier[0]) {
        known.set(keyring.epoch, [seq, keyring]);
      }
    }
    return known;
  }

  keyrings() {
    const known = this.knownKeyrings();
    const remembered = this.memory.keyring;
    let newest = null; // [seq, epoch] of the highest epoch so far
    const opened = this.present.filter((seq) => this.at(seq).contents !== null);
    for (const seq of opened) {
      const { contents } = this.at(seq);
      const rollback = epochRollback(seq, contents.epoch, newest, remembered);
      if (rollback !== null) this.add(this.at(seq).name, rollback, Code.ROLLBACK);
      if (newest === null || contents.epoch > newest[1]) newest = [seq, contents.epoch];
    }
    this.published(opened, known);
    for (const [seq, epoch, inferred] of this.epochs(opened, known)) {
      const sealedUnder = known.get(epoch);
      if (sealedUnder === undefined) continue; // an opened one is reported by published(); an inferred one cannot be
      const entry = this.at(seq);
      const mismatch = stanzaMismatch(entry, sealedUnder[1]);
      if (mismatch !== null) {
        if (inferred) this.withheld.add(seq);
        const how = inferred ? ' (the objects around it were sealed under it)' : '';
        this.add(entry.name, `keyring epoch ${epoch}${how}: ${mismatch}`, Code.STANZAS);
      }
    }
  }

  /** Every opened object's epoch has a keyring object at or below its seq.
   *
   * The device seals a keyring object before the first object under a changed keyring
   * and never evicts one. Only a restart notice comes first: it is sealed before the
   * keyring object of its run, which must then follow it at once. */
  published(opened, known) {
    for (const seq of opened) {
      const { contents } = this.at(seq);
      const published = known.get(contents.epoch);
      if (published !== undefined && published[0] <= seq) continue;
      if (isNotice(contents, 'restart') && this.keyringEpoch(seq + 1n) === contents.epoch) continue;
      this.add(
        this.at(seq).name,
        `seq ${seq} is sealed under keyring epoch ${contents.epoch}, but no keyring ` +
          `object of epoch ${contents.epoch} comes before it (present or remembered): ` +
          'a keyring never published',
        Code.UNPUBLISHED,
      );
    }
  }

  keyringEpoch(seq) {
    const keyring = this.unique.get(seq)?.contents?.keyring ?? null;
    return keyring === null ? null : keyring.epoch;
  }

  /** [seq, epoch, inferred] for every object whose keyring epoch is known.
   *
   * An object this phone cannot open has an unknown epoch, unless the nearest objects it
   * can open before and after it carry the same epoch: epochs never go back, and a keyring
   * change bumps the epoch, so it was sealed under that epoch too. When they carry
   * different epochs and this phone knows the keyring of every epoch from one to the
   * other, it was sealed under one of them, each listing this phone: it is withheld (it
   * lacks this phone's stanza). */
  epochs(opened, known) {
    const out = [];
    const epochs = [...known.keys()].sort((a, b) => a - b);
    for (const seq of this.present) {
      const entry = this.at(seq);
      if (entry.rejected) continue;
      if (entry.contents !== null) {
        out.push([seq, entry.contents.epoch, false]);
        continue;
      }
      const [before, after] = this.openedAround(seq, opened);
      if (before === null || after === null) continue; // sealed before this phone was enrolled, or after it was revoked?
      if (before === after) {
        out.push([seq, before, true]);
      } else if (allKnown(epochs, before, after)) {
        this.withheld.add(seq);
        this.add(
          entry.name,
          `seq ${seq} lacks this phone's stanza, but lies between objects sealed ` +
            `under keyring epochs ${before} and ${after}, and every keyring from ` +
            'one to the other lists this phone (withheld from it, or forged)',
          Code.STANZAS,
        );
      }
    }
    return out;
  }

  /** The epochs of the nearest objects this phone opened before and after `seq`: in this
   * set, or the keyring it remembers (opened earlier, live or in a copy). */
  openedAround(seq, opened) {
    const at = bisectLeft(opened, seq);
    const below = at > 0 ? [[opened[at - 1], this.at(opened[at - 1]).contents.epoch]] : [];
    const above = at < opened.length ? [[opened[at], this.at(opened[at]).contents.epoch]] : [];
    const remembered = this.memory.keyring;
    if (remembered !== null && remembered.seq !== seq) {
      (remembered.seq < seq ? below : above).push([remembered.seq, remembered.epoch]);
    }
    const order = (a, b) => compareBig(a[0], b[0]) || a[1] - b[1];
    const before = below.sort(order).at(-1);
    const after = above.sort(order)[0];
    return [before === undefined ? null : before[1], after === undefined ? null : after[1]];
  }

  // -- notices (FORMAT §6) -------------------------------------------------------------------

  notices() {
    for (const seq of this.present) {
      const { contents } = this.at(seq);
      if (contents === null || contents.kind !== KIND.NOTICE) continue;
      if (contents.meta.notice === 'restart') this.restart(seq, contents.meta);
      else if (contents.meta.notice === 'discarded') this.discarded(seq, contents.meta);
    }
  }

  /** [seq, where] of an object with a seq in first..last that this phone has seen, or null. */
  knownIn(first, last) {
    const at = bisectLeft(this.present, first);
    if (at < this.present.length && this.present[at] <= last) return [this.present[at], 'in this set'];
    const remembered = seenIn(this.memory, first, last);
    if (remembered !== null) return [remembered, 'earlier (remembered)'];
    return null;
  }

  olderKnown(seq) {
    const known = [this.present[0], ...(this.memory.seen.length ? [this.memory.seen[0][0]] : [])];
    const below = known.filter((s) => s < seq);
    return below.length ? below.reduce(minBig) : null;
  }

  /** The lowest seq in first..last that this phone remembers and that is absent here
   * (with `kept`: only one it opened and that the device never evicts). */
  rememberedAbsent(first, last, kept = false) {
    if (kept) {
      this.absentKept ??= without(this.memory.kept, this.present);
      return firstIn(this.absentKept, first, last);
    }
    this.absentSeen ??= without(this.memory.seen, this.present);
    return firstIn(this.absentSeen, first, last);
  }

  restart(seq, meta) {
    const entry = this.at(seq);
    this.restarts.set(seq, meta);
    const previous = meta.previous;
    const first = big(meta.skipped.first);
    const last = big(meta.skipped.last);
    const broken = [];
    let expectPrev;
    let expectFirst;
    if (previous === null) {
      expectPrev = ZERO32;
      expectFirst = 0n;
      const older = this.olderKnown(seq);
      if (older !== null) {
        broken.push(
          'says no chain head was recorded (previous: null), but this phone ' + `knows seq ${older} of this device`,
        );
      }
    } else {
      const previousSeq = big(previous.seq);
      expectPrev = fromHex(previous.hash);
      expectFirst = previousSeq + 1n;
      if (previousSeq >= seq) broken.push(`previous.seq ${previousSeq} is not below its own seq`);
      const headHash = this.hashOf(previousSeq);
      if (headHash !== null && !equal(headHash, expectPrev)) {
        broken.push(
          `previous.hash is not the chain hash of seq ${previousSeq} ` +
            '(the object at that seq was replaced, or the notice lies)',
        );
      }
    }
    if (!equal(entry.prev, expectPrev)) {
      broken.push(`its prev is not ${previous === null ? '32 zero bytes' : 'previous.hash'}`);
    }
    if (first !== expectFirst || last !== seq - 1n) {
      broken.push(
        `skipped is ${first}..${last}, must be ${expectFirst}..${seq - 1n} ` +
          '(from the number after previous.seq to the number before the notice)',
      );
    }
    const span = last - first + 1n;
    if (span > RESERVATION_BLOCK) {
      broken.push(`skipped covers ${span} numbers, more than one reservation block (${RESERVATION_BLOCK})`);
    }
    for (const reason of broken) this.add(entry.name, `restart notice seq ${seq}: ${reason}`, Code.RESTART);
    if (first <= last) {
      const hidden = this.knownIn(first, last);
      if (hidden !== null) {
        this.add(
          entry.name,
          `restart notice seq ${seq} skips ${first}..${last}, but seq ${hidden[0]} was ` +
            `delivered (${hidden[1]}): notice hides a delivered object`,
          Code.HIDES,
        );
      } else if (!broken.length) {
        this.gaps.push(gap(first, last, 'restart', seq));
      }
    }
  }

  hashOf(seq) {
    const entry = this.unique.get(seq);
    if (entry !== undefined) return entry.chainHash;
    if (this.head !== null && this.head.seq === seq) return this.head.hash;
    return null;
  }

  discarded(seq, meta) {
    const entry = this.at(seq);
    const reason = meta.reason;
    const problem = discardReasonProblem(reason);
    if (problem !== null) {
      this.add(entry.name, `discarded notice seq ${seq}: ${problem}`, Code.DISCARD);
      return;
    }
    const ranges = meta.ranges.map((item) => [big(item.first), big(item.last)]).sort(byTuple);
    for (let i = 0; i + 1 < ranges.length; i++) {
      const [first, last] = ranges[i];
      const [after, end] = ranges[i + 1];
      if (after <= last) {
        this.add(
          entry.name,
          `discarded notice seq ${seq}: its ranges ${first}..${last} and ${after}..${end} overlap`,
          Code.OVERLAP,
        );
      }
    }
    for (const item of meta.ranges) {
      const first = big(item.first);
      const last = big(item.last);
      const bridge = fromHex(item.last_hash);
      if (!(first <= last && last < seq)) {
        this.add(
          entry.name,
          `discarded notice seq ${seq}: range ${first}..${last} is not first <= last < the notice's seq`,
          Code.DISCARD,
        );
        continue;
      }
      const lastHash = this.hashOf(last);
      if (lastHash !== null && !equal(lastHash, bridge)) {
        this.add(
          entry.name,
          `discarded notice seq ${seq}: last_hash of range ${first}..${last} is not the chain hash of seq ${last}`,
          Code.DISCARD,
        );
      }
      // A damaged file can be of any kind, and a faster sink may hold it.
      if (reason === 'quota') this.evictedButKnown(entry, seq, first, last);
      this.gaps.push(gap(first, last, reason, seq, bridge));
    }
  }

  evictedButKnown(entry, seq, first, last) {
    const low = bisectLeft(this.present, first);
    const high = bisectRight(this.present, last);
    if (high > low) {
      // The device evicts from every sink's queue at once; a faster sink (the local
      // folder) may have taken the object already. Not a deletion: a note.
      this.add(
        this.device,
        `${high - low} object(s) in ${first}..${last} (first seq ${this.present[low]}) ` +
          `are here although notice seq ${seq} announces them evicted by quota ` +
          '(a sink took them before the eviction)',
        Code.EVICTED_PRESENT,
        { problem: false },
      );
    }
    // A media segment this phone saw in one sink may rightly be evicted from another
    // sink's queue; any other kind is never evicted at all.
    const hidden = this.rememberedAbsent(first, last, true);
    if (hidden !== null) {
      this.add(
        entry.name,
        `discarded notice seq ${seq} announces ${first}..${last} evicted, but this phone ` +
          `saw seq ${hidden} earlier, of a kind the device never evicts, and it is absent: ` +
          'notice hides a delivered object',
        Code.HIDES,
      );
    }
  }

  // -- links (FORMAT §6) ---------------------------------------------------------------------

  links() {
    const bridges = new Map(); // last seq of a discarded range -> its gap
    for (const g of this.gaps) if (g.bridge !== null) bridges.set(g.last, g);
    const byHash = new Map(); // chain hash (hex) -> seq
    for (const seq of this.present) byHash.set(toHex(this.at(seq).chainHash), seq);
    const head = this.head;
    if (head !== null && !byHash.has(toHex(head.hash))) byHash.set(toHex(head.hash), head.seq);
    for (const seq of this.present) {
      if (this.restarts.has(seq)) {
        // Its prev is held to previous.hash by the restart rules; right after a quota
        // range, previous must be that range's last object.
        const g = bridges.get(seq - 1n);
        const previous = this.restarts.get(seq).previous;
        if (
          g !== undefined &&
          (previous === null || big(previous.seq) !== g.last || !equal(fromHex(previous.hash), g.bridge))
        ) {
          this.add(
            this.at(seq).name,
            `chain: restart notice seq ${seq} does not follow the gap notice seq ` +
              `${g.notice} announced (its previous is not seq ${g.last} with the ` +
              "range's last_hash)",
            Code.REPLACED,
          );
        }
        continue;
      }
      const entry = this.at(seq);
      const prev = entry.prev;
      if (seq === 0n) {
        if (!equal(prev, ZERO32)) this.add(entry.name, 'chain: seq 0 must start the chain (prev all zero)', Code.BAD_START);
        continue;
      }
      if (equal(prev, ZERO32)) {
        this.newChain(entry);
        continue;
      }
      const before = this.hashOf(seq - 1n);
      if (before !== null && equal(before, prev)) continue;
      const linked = byHash.get(toHex(prev));
      if (linked !== undefined && linked < seq - 1n && before === null && unknown(entry)) {
        this.unreadableRestart(entry, linked);
      } else if (linked !== undefined) {
        this.add(
          entry.name,
          `chain: seq ${seq} names seq ${linked} as its predecessor, not seq ${seq - 1n} (reordered or spliced)`,
          Code.REORDERED,
        );
      } else if (before !== null) {
        const earlier = this.unique.has(seq - 1n) ? '' : ' this phone verified earlier';
        this.add(entry.name, `chain: seq ${seq} does not follow seq ${seq - 1n}${earlier} (one was replaced)`, Code.REPLACED);
      } else {
        const g = bridges.get(seq - 1n);
        if (g !== undefined && !equal(g.bridge, prev)) {
          this.add(
            entry.name,
            `chain: seq ${seq} does not follow the gap notice seq ${g.notice} ` +
              "announced (its prev is not the range's last_hash)",
            Code.REPLACED,
          );
        }
      }
    }
  }

  newChain(entry) {
    const seq = entry.seq;
    const older = this.olderKnown(seq);
    if (unknown(entry) && older === null) {
      // Only a restart after a lost chain head does this, and its notice is not sealed
      // to this phone: it can neither confirm nor refute it.
      this.add(entry.name, `seq ${seq} restarts the chain; its notice is not sealed to this phone`, Code.UNCONFIRMED, {
        problem: false,
      });
    } else if (unknown(entry)) {
      this.add(
        entry.name,
        `chain: seq ${seq} starts a new chain (prev all zero) although this phone knows seq ${older} of this device`,
        Code.BAD_START,
      );
    } else {
      this.add(
        entry.name,
        `chain: seq ${seq} claims to start the chain but is not seq 0 (and not a restart notice)`,
        Code.BAD_START,
      );
    }
  }

  /** An object this phone cannot open names an older object as its predecessor.
   *
   * Only a restart notice does that; this phone cannot read it, so the same limits apply
   * to what the signed link itself says: at most one reservation block skipped, and
   * nothing this phone has seen inside it. */
  unreadableRestart(entry, linked) {
    const seq = entry.seq;
    const first = linked + 1n;
    const last = seq - 1n;
    const span = last - first + 1n;
    const hidden = this.knownIn(first, last);
    if (span > RESERVATION_BLOCK) {
      this.add(
        entry.name,
        `chain: seq ${seq} names seq ${linked} as its predecessor, skipping ${span} ` +
          `numbers: more than a restart may skip (${RESERVATION_BLOCK})`,
        Code.REORDERED,
      );
    } else if (hidden !== null) {
      this.add(
        entry.name,
        `chain: seq ${seq} names seq ${linked} as its predecessor, skipping seq ` +
          `${hidden[0]}, which was delivered (${hidden[1]}): notice hides a delivered object`,
        Code.HIDES,
      );
    } else {
      this.gaps.push(gap(first, last, 'restart', seq, null, false));
    }
  }

  // -- ranges --------------------------------------------------------------------------------

  /** Announced ranges never share a number, but for discarded ranges of two notices.
   *
   * A device that stops between spooling a discarded notice and deleting what it let go
   * announces the same objects again after the restart: a note. Each range was held to
   * its own rules already. */
  overlaps() {
    const ordered = [...this.gaps].sort((a, b) => compareBig(a.first, b.first) || compareBig(a.last, b.last));
    let widest = null; // of all ranges so far, the one reaching furthest
    let widestOther = null; // the same, among ranges that may not overlap at all
    for (const g of ordered) {
      const strict = !isDiscardReason(g.reason);
      for (const earlier of [widestOther, widest]) {
        if (earlier === null || g.first > earlier.last) continue;
        const again = !strict && isDiscardReason(earlier.reason);
        if (again && earlier.notice === g.notice) break; // one notice's own ranges: discarded() reports those
        this.add(
          this.device,
          `range ${g.first}..${g.last} announced by seq ${g.notice} overlaps ` +
            `range ${earlier.first}..${earlier.last} announced by seq ${earlier.notice}` +
            (again ? ' (evicted again after a restart)' : ''),
          again ? Code.OVERLAP_NOTE : Code.OVERLAP,
          { problem: !again },
        );
        break;
      }
      if (widest === null || g.last > widest.last) widest = g;
      if (strict && (widestOther === null || g.last > widestOther.last)) widestOther = g;
    }
  }

  missing() {
    // A gap followed by an object this phone cannot open (sealed before it was enrolled,
    // or after it was revoked) may have been announced in a notice it cannot read either:
    // it cannot be confirmed. Not when that object should have been sealed to this phone
    // (withheld), nor when the gap holds an object this phone saw and that the device
    // never evicts (no notice may hide that). See FORMAT §6.2, "unconfirmed".
    const unreadable = this.present.filter((seq) => unknown(this.at(seq)) && !this.withheld.has(seq));
    const unreadableUntil = unreadable.length ? unreadable.at(-1) : -1n;
    const gaps = new GapIndex(this.gaps);
    let expected = 0n;
    for (const seq of this.present) {
      for (const [first, last, g] of gaps.split(expected, seq - 1n)) {
        const span = first === last ? `seq ${first}` : `seq ${first}..${last}`;
        // Only an object the device never evicts excuses nothing: a media segment this
        // phone saw in another sink's copy may be evicted from this one's queue.
        const kept = g === null ? this.rememberedAbsent(first, last, true) : null;
        if (g === null && kept === null && last < unreadableUntil) {
          this.add(
            this.device,
            `${span} absent, followed by objects not sealed to this phone (seq ` +
              `${unreadableUntil} the newest): cannot confirm whether a notice ` +
              'among them announced it',
            Code.UNCONFIRMED,
            { problem: false },
          );
        } else if (g === null) {
          const seen = kept !== null ? kept : this.rememberedAbsent(first, last);
          const saw = seen === null ? '' : `; this phone saw seq ${seen} earlier`;
          this.add(this.device, `missing ${span} (deleted or never delivered${saw})`, Code.MISSING);
        } else if (!g.confirmed) {
          this.add(
            this.device,
            `${span} skipped by a restart whose notice (seq ${g.notice}) is not ` +
              'sealed to this phone: cannot be confirmed',
            Code.UNCONFIRMED,
            { problem: false },
          );
        } else {
          this.add(this.device, `${span} ${announcedAs(g.reason)}`, Code.ANNOUNCED, { problem: false });
        }
      }
      expected = seq + 1n;
    }
  }

  // -- clips and eviction order (FORMAT §4.1 and §6) -----------------------------------------

  /** Clips by id ({clipId, stream, firstIndex, lastIndex, eventSeq}), and each stream's
   * segments as sorted [index, seq]. */
  clipPlan() {
    const events = new Map();
    const ends = new Map();
    const segments = new Map();
    for (const seq of this.present) {
      const { contents } = this.at(seq);
      if (contents === null) continue;
      const meta = contents.meta;
      if (contents.kind === KIND.EVENT && meta.stream) {
        if (!events.has(meta.clip)) {
          events.set(meta.clip, { clipId: meta.clip, stream: meta.stream, firstIndex: big(meta.first_index), eventSeq: seq });
        }
      } else if (isNotice(contents, 'clip-end')) {
        if (!ends.has(meta.clip)) ends.set(meta.clip, big(meta.last_index));
      } else if (contents.kind === KIND.SEGMENT) {
        if (!segments.has(meta.stream)) segments.set(meta.stream, []);
        segments.get(meta.stream).push([big(meta.index), seq]);
      }
    }
    for (const listed of segments.values()) listed.sort(byTuple);
    for (const [id, clip] of events) clip.lastIndex = ends.get(id) ?? null;
    return [events, segments];
  }

  /** Events of one clip agree on its stream and first segment; a clip ends once, on the
   * stream of its events. */
  clips() {
    const firstEvent = new Map(); // clip -> [seq, stream, first index]
    const ends = new Map(); // clip -> [[seq, stream], ...]
    const short = (text) => text.slice(0, 8) || '(none)';
    for (const seq of this.present) {
      const { contents } = this.at(seq);
      if (contents === null) continue;
      const meta = contents.meta;
      if (isNotice(contents, 'clip-end')) {
        if (!ends.has(meta.clip)) ends.set(meta.clip, []);
        ends.get(meta.clip).push([seq, meta.stream]);
        const earlierEnd = ends.get(meta.clip)[0];
        if (earlierEnd[0] !== seq) {
          this.add(
            this.at(seq).name,
            `clip-end notice seq ${seq} ends clip ${meta.clip.slice(0, 8)}, which the ` +
              `clip-end notice seq ${earlierEnd[0]} already ended`,
            Code.CLIP,
          );
        }
      }
      if (contents.kind !== KIND.EVENT) continue;
      const claim = [seq, meta.stream, big(meta.first_index)];
      if (!firstEvent.has(meta.clip)) firstEvent.set(meta.clip, claim);
      const earlier = firstEvent.get(meta.clip);
      if (earlier[1] !== claim[1] || earlier[2] !== claim[2]) {
        this.add(
          this.at(seq).name,
          `event seq ${seq} of clip ${meta.clip.slice(0, 8)} names stream ` +
            `${short(meta.stream)} from index ${claim[2]}, but ` +
            `event seq ${earlier[0]} of the same clip names stream ` +
            `${short(earlier[1])} from index ${earlier[2]}`,
          Code.CLIP,
        );
      }
    }
    for (const [clipId, listed] of ends) {
      for (const [seq, stream] of listed) {
        const event = firstEvent.get(clipId);
        if (event !== undefined && event[1] !== stream) {
          this.add(
            this.at(seq).name,
            `clip-end notice seq ${seq} names stream ${short(stream)} for clip ` +
              `${clipId.slice(0, 8)}, whose event seq ${event[0]} names stream ${short(event[1])}`,
            Code.CLIP,
          );
        }
      }
    }
  }

  /** A quota eviction may not take clip segments while continuous recording survives.
   *
   * See FORMAT §6, "Eviction order", for the rule and why it is exact. */
  evictionOrder() {
    const quota = this.gaps.filter((g) => g.reason === 'quota').sort((a, b) => compareBig(a.first, b.first));
    if (!quota.length) return;
    const evicted = new Intervals(quota.map((g) => [g.first, g.last]));
    const ranges = new GapIndex(quota);
    const [clips, segments] = this.clipPlan();
    const continuous = this.continuous(clips, segments, evicted);
    for (const clip of clips.values()) {
      const listed = segments.get(clip.stream) ?? [];
      for (const [low, high, indexes] of this.evictedRuns(clip, listed, evicted)) {
        const survivor = this.survivor(low, high, ranges, continuous);
        if (survivor !== null) {
          const [notice, kept] = survivor;
          this.add(
            this.at(notice).name,
            `quota notice seq ${notice} evicted segment(s) ${indexes} of clip ` +
              `${clip.clipId.slice(0, 8)} while continuous recording seq ${kept}, sealed ` +
              'after them and before the eviction, survived: eviction order violated ' +
              '(continuous recording goes first)',
            Code.EVICTION_ORDER,
          );
          break;
        }
      }
    }
  }

  /** Seqs of present segments in no clip's index range and in no quota range. */
  continuous(clips, segments, evicted) {
    const ranges = new Map();
    for (const clip of clips.values()) {
      const listed = segments.get(clip.stream) ?? [];
      let last = clip.lastIndex;
      if (last === null) {
        // A clip with no clip-end notice runs to the newest segment of its stream.
        last = listed.length ? listed.at(-1)[0] : clip.firstIndex;
      }
      if (!ranges.has(clip.stream)) ranges.set(clip.stream, []);
      ranges.get(clip.stream).push([clip.firstIndex, last]);
    }
    const out = [];
    for (const [stream, listed] of segments) {
      const inClips = new Intervals(ranges.get(stream) ?? []);
      for (const [index, seq] of listed) if (!inClips.has(index) && !evicted.has(seq)) out.push(seq);
    }
    return out.sort(compareBig);
  }

  /** Runs of the clip's missing segments whose seqs can only lie in quota ranges.
   *
   * A missing index lies between the seqs of the stream's nearest present segments below
   * and above it (a stream's segments are sealed in index order). If every absent number
   * in that interval is inside a quota range, the segment was evicted. Returns
   * [low seq, high seq, "i..j"] per run; runs are found between present segments, so
   * their number is bounded by the segments present. */
  evictedRuns(clip, listed, evicted) {
    if (clip.lastIndex === null || clip.lastIndex < clip.firstIndex) return [];
    const indexes = listed.map(([index]) => index);
    const out = [];
    let want = clip.firstIndex;
    let at = bisectLeft(indexes, clip.firstIndex);
    while (want <= clip.lastIndex) {
      if (at < indexes.length && indexes[at] === want) {
        want += 1n;
        at += 1;
        continue;
      }
      const upto = minBig(clip.lastIndex, at < indexes.length ? indexes[at] - 1n : clip.lastIndex);
      const below = at > 0 ? listed[at - 1][1] : -1n;
      const above = at < indexes.length ? listed[at][1] : null;
      if (above !== null && this.onlyEvictedBetween(below, above, evicted)) {
        out.push([below, above, upto > want ? `${want}..${upto}` : `${want}`]);
      }
      want = upto + 1n;
    }
    return out;
  }

  /** Every absent number strictly between `below` and `above` is in a quota range, and
   * there is at least one. */
  onlyEvictedBetween(below, above, evicted) {
    const low = bisectRight(this.present, below);
    const high = bisectLeft(this.present, above);
    const edges = [below, ...this.present.slice(low, high), above];
    let absent = false;
    for (let i = 0; i + 1 < edges.length; i++) {
      const [left, right] = [edges[i], edges[i + 1]];
      if (right - left > 1n) {
        absent = true;
        if (!evicted.covers(left + 1n, right - 1n)) return false;
      }
    }
    return absent;
  }

  /** [notice, continuous seq] proving the order was violated, whichever quota range
   * between `below` and `above` the evicted segment was in; null if any leaves doubt. */
  survivor(below, above, quota, continuous) {
    let proof = null;
    for (const g of quota.overlapping(below + 1n, above - 1n)) {
      // The object whose spooling forced the eviction is sealed just before the notice
      // (keyring objects may come between) and was never evictable itself.
      const forcing = this.forcing(g.notice);
      const at = bisectRight(continuous, g.last);
      if (at < continuous.length && continuous[at] < forcing) proof ??= [g.notice, continuous[at]];
      else return null;
    }
    return proof;
  }

  forcing(notice) {
    let at = bisectLeft(this.present, notice) - 1;
    while (at >= 0) {
      const { contents } = this.at(this.present[at]);
      if (contents === null || contents.kind !== KIND.KEYRING) return this.present[at];
      at -= 1;
    }
    return -1n;
  }

  // -- memory --------------------------------------------------------------------------------

  remember() {
    const newestFirst = [...this.present].reverse();
    const headSeq = newestFirst.find((seq) => !this.forked.has(seq));
    const head = headSeq === undefined ? null : { seq: headSeq, hash: this.at(headSeq).chainHash };
    const keyringSeq = newestFirst.find((seq) => this.at(seq).contents?.keyring);
    const keyring = keyringSeq === undefined ? null : knownKeyring(keyringSeq, this.at(keyringSeq).contents.keyring);
    const kept = this.present.filter((seq) => {
      const { contents } = this.at(seq);
      return contents !== null && contents.kind !== KIND.SEGMENT;
    });
    this.result.seen.set(this.deviceIdHex, { head, keyring, seen: seqsAsRuns(this.present), kept: seqsAsRuns(kept) });
  }
}

/** Whether the sorted `epochs` hold every epoch of first..last. */
function allKnown(epochs, first, last) {
  if (last < first) return false;
  const low = bisectLeft(epochs, first);
  const high = bisectRight(epochs, last);
  return high - low === last - first + 1;
}
