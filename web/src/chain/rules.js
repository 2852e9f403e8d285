// The rules every object a phone uses must pass, whether it came in a folder or live
// (doorbell/phone/rules.py): chain/verify.js applies them to a set of objects, watch.js
// and PhoneMemory.liveProblem to each message from the broker. One implementation of
// FORMAT §4.1 and §7 for both.

import { equal, toHex } from '../bytes.js';
import { recipientTag } from '../format/object.js';
import { pyRepr } from '../format/strictjson.js';

// FORMAT §4.1: why a `discarded` notice may let numbers go, and how a phone reports the
// numbers of its ranges. "quota": evicted to stay within the spool's quota; "damaged": the
// spooled file was found damaged, so it never reached this copy.
export const DISCARD_REASONS = Object.freeze({
  quota: 'announced as quota',
  damaged: 'announced: damaged on the doorbell',
});

export const isDiscardReason = (reason) => typeof reason === 'string' && Object.hasOwn(DISCARD_REASONS, reason);

// Messages quote names as the Python phone's do.
export { pyRepr };

/** A keyring recipient's suite byte (1 or 2), however the keyring reader spells it. */
export const suiteOf = (recipient) => (typeof recipient.suite === 'number' ? recipient.suite : recipient.suiteByte);

/** Why a `discarded` notice's `reason` is not one a device gives, or null. */
export function discardReasonProblem(reason) {
  if (isDiscardReason(reason)) return null;
  const known = Object.keys(DISCARD_REASONS).map(pyRepr).join(' and ');
  return `reason ${pyRepr(String(reason))}; only ${known} discards exist`;
}

/** How a phone reports a range announced for `reason` (a discard, or a restart). */
export function announcedAs(reason) {
  return isDiscardReason(reason) ? DISCARD_REASONS[reason] : `announced as ${reason}`;
}

/**
 * Why the object's stanzas are not exactly one per recipient of `keyring`, or null.
 * `envelope` is an envelope or an entry: {deviceId, seq, stanzas: [{suite, tag}]}.
 *
 * Every phone has every recipient's public key, so it can compute every recipient's tag
 * for this object (FORMAT §3.2) and compare (suite, tag) sets.
 */
export function stanzaMismatch(envelope, keyring) {
  const expected = new Map(); // "suite:tag" -> recipient name
  for (const recipient of keyring.recipients) {
    const suite = suiteOf(recipient);
    const tag = recipientTag(envelope.deviceId, envelope.seq, suite, recipient.publicKey);
    expected.set(`${suite}:${toHex(tag)}`, recipient.name);
  }
  const actual = envelope.stanzas.map((stanza) => `${stanza.suite}:${toHex(stanza.tag)}`);
  const reasons = [];
  const strangers = actual.filter((pair) => !expected.has(pair)).length;
  if (strangers) reasons.push(`${strangers} stanza(s) for keys not in the keyring`);
  if (new Set(actual).size !== actual.length) reasons.push('the same recipient has two stanzas');
  const absent = [...expected].filter(([pair]) => !actual.includes(pair)).map(([, name]) => name);
  if (absent.length) {
    const listed = absent.slice(0, 5).map(pyRepr).join(', ');
    const more = absent.length > 5 ? ` and ${absent.length - 5} more` : '';
    reasons.push(`no stanza for ${listed}${more}, listed in the keyring`);
  }
  if (!reasons.length) return null;
  return `seq ${envelope.seq}: stanzas are not exactly the keyring: ` + reasons.join('; ');
}

/**
 * Why sealing `seq` under `epoch` is a keyring rollback, or null.
 *
 * `newest` is [seq, epoch] of the highest epoch among earlier objects; `remembered` the
 * newest keyring object this phone saw before ({seq, epoch}). Epochs never go back along seq.
 */
export function epochRollback(seq, epoch, newest, remembered) {
  if (newest != null && seq > newest[0] && epoch < newest[1]) {
    return (
      `keyring rollback: seq ${seq} is sealed under epoch ${epoch}, but seq ${newest[0]} ` +
      `was already sealed under epoch ${newest[1]}`
    );
  }
  if (remembered != null && seq > remembered.seq && epoch < remembered.epoch) {
    return (
      `keyring rollback: seq ${seq} is sealed under epoch ${epoch}, but this phone has ` +
      `already seen keyring epoch ${remembered.epoch} (seq ${remembered.seq})`
    );
  }
  return null;
}

/**
 * Whether two parsed keyrings (format/keyring.js) are the same keyring: the same epoch and
 * the same recipients, field by field, as Python's Keyring compares. Not the document's
 * spelling: its version, member order, whitespace or the case of a key string.
 */
export function sameKeyring(a, b) {
  if (a === b) return true;
  if (a.epoch !== b.epoch || a.recipients.length !== b.recipients.length) return false;
  return a.recipients.every((r, i) => sameRecipient(r, b.recipients[i]));
}

function sameRecipient(a, b) {
  const sameBytes = (x, y) => (x == null || y == null ? x == null && y == null : equal(x, y));
  const sameTime = (x, y) => (x == null || y == null ? x == null && y == null : x.getTime() === y.getTime());
  return (
    a.name === b.name &&
    a.role === b.role &&
    suiteOf(a) === suiteOf(b) &&
    equal(a.publicKey, b.publicKey) &&
    sameBytes(a.signingKey, b.signingKey) &&
    sameTime(a.added, b.added) &&
    sameTime(a.expires, b.expires)
  );
}
