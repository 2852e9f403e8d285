// The rules every object a phone uses must pass, whether it came in a folder or live
// (doorbell/phone/rules.py): chain/verify.js applies them to a set of objects, watch.js
// to each message from the broker. One implementation of FORMAT §4.1 and §7 for both.

import { toHex } from '../bytes.js';
import { recipientTag } from '../format/object.js';

// FORMAT §4.1: why a `discarded` notice may let numbers go, and how a phone reports the
// numbers of its ranges.
export const DISCARD_REASONS = Object.freeze({
  quota: 'announced as quota',
  damaged: 'announced: damaged on the doorbell',
});

/** A string as Python's repr() shows it, so messages read as the Python phone's do. */
export function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const escaped = text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
  return quote + (quote === "'" ? escaped.replace(/'/g, "\\'") : escaped) + quote;
}

/** Why a `discarded` notice's `reason` is not one a device gives, or null. */
export function discardReasonProblem(reason) {
  if (Object.hasOwn(DISCARD_REASONS, reason)) return null;
  const known = Object.keys(DISCARD_REASONS).map(pyRepr).join(' and ');
  return `reason ${typeof reason === 'string' ? pyRepr(reason) : String(reason)}; only ${known} discards exist`;
}

/** How a phone reports a range announced for `reason` (a discard, or a restart). */
export function announcedAs(reason) {
  return Object.hasOwn(DISCARD_REASONS, reason) ? DISCARD_REASONS[reason] : `announced as ${reason}`;
}

/** A keyring recipient's suite and raw public key, whichever shape the reader gives. */
export function recipientKey(recipient) {
  const key = recipient.key ?? recipient;
  return { suite: key.suite, raw: key.raw ?? key.publicKey ?? key.publicRaw };
}

/** Why the object's stanzas are not exactly one per recipient of `keyring`, or null.
 * Every phone has every recipient's public key, so it can compute every recipient's tag
 * for this object (FORMAT §3.2) and compare (suite, tag) sets. */
export async function stanzaMismatch(envelope, keyring) {
  const expected = new Map(); // "suite:tag" -> name
  for (const recipient of keyring.recipients) {
    const { suite, raw } = recipientKey(recipient);
    const tag = await recipientTag(envelope.deviceId, envelope.seq, suite, raw);
    const pair = `${suiteNumber(suite)}:${toHex(tag)}`;
    if (!expected.has(pair)) expected.set(pair, recipient.name);
  }
  const actual = envelope.stanzas.map((s) => `${suiteNumber(s.suite)}:${toHex(s.tag)}`);
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

const SUITE_NAMES = { x25519: 1, xwing: 2, 'x-wing': 2 };
function suiteNumber(suite) {
  if (typeof suite === 'number') return suite;
  if (typeof suite === 'string' && suite in SUITE_NAMES) return SUITE_NAMES[suite];
  return suite?.id ?? suite?.value ?? String(suite);
}

/** Why sealing `seq` under `epoch` is a keyring rollback, or null. `newest` is [seq, epoch]
 * of the highest epoch among earlier objects; `remembered` the newest keyring object this
 * phone saw before ({seq, epoch}). Epochs never go back along seq. */
export function epochRollback(seq, epoch, newest, remembered) {
  if (newest !== null && seq > newest[0] && epoch < newest[1]) {
    return (
      `keyring rollback: seq ${seq} is sealed under epoch ${epoch}, but seq ${newest[0]} ` +
      `was already sealed under epoch ${newest[1]}`
    );
  }
  if (remembered && seq > remembered.seq && epoch < remembered.epoch) {
    return (
      `keyring rollback: seq ${seq} is sealed under epoch ${epoch}, but this phone has ` +
      `already seen keyring epoch ${remembered.epoch} (seq ${remembered.seq})`
    );
  }
  return null;
}

/** Whether two keyrings are the same document: every field alike. */
export function sameKeyring(a, b) {
  return a === b || deepEqual(a, b);
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i]);
  }
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date && a.getTime() === b.getTime();
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a).filter((k) => typeof a[k] !== 'function');
  const other = Object.keys(b).filter((k) => typeof b[k] !== 'function');
  if (keys.length !== other.length) return false;
  return keys.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
}
