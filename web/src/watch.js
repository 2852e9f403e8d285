// Sealed events and keyrings live from the MQTT broker, opened here (doorbell/phone/watch.py,
// Watcher.handle). Every message is hostile input: the broker, and anyone who may publish on
// it, can send anything on any topic. A message is size-checked, then verified against the
// pinned doorbells and opened; whatever fails goes to onRejected naming the topic and the
// reason (`why`: the watcher's own short phrase, never text from the wire, so a flood of any
// variety can be summarised by kind).

import { equal, toHex } from './bytes.js';
import { KIND, KIND_NAMES, checkContents } from './format/object.js';
import { FORKED, PhoneMemory } from './chain/memory.js';

// The largest message a doorbell publishes is an event with a JPEG snapshot (watch.py says
// how big one can be); anything bigger is not from a doorbell.
export const MAX_MESSAGE = 8 * 1024 * 1024;
// (device, seq) pairs remembered for duplicate and fork detection.
export const MAX_REMEMBERED = 65536;
const EVENT_LEAF = 'event';
const KEYRING_LEAF = 'keyring';
const DEVICE = /^[0-9a-f]{16}$/;
const EVENT_TYPE = /^[a-z][a-z0-9_-]{0,31}$/;
const CLIP_ID = /^[0-9a-f]{32}$/;

// What a message that fails to open is, by the reader's error code.
const SEALING_REASONS = {
  malformed: 'not a well-formed sealed object',
  forged: 'a device signature that does not verify',
  untrusted: 'from a doorbell this phone does not trust',
  'not-for-us': 'not sealed for this phone',
  unopenable: 'does not decrypt',
};

/** `(device16, leaf)` of a topic under `prefix`, or null when it is not one of ours. */
export function splitTopic(prefix, topic) {
  const head = `${prefix}/`;
  if (!topic.startsWith(head)) return null;
  const parts = topic.slice(head.length).split('/');
  if (parts.length !== 2 || !DEVICE.test(parts[0])) return null;
  return parts;
}

const MAX_DATE_MS = 253402300799999; // 9999-12-31T23:59:59.999Z, the last date Python has
const MIN_DATE_MS = -62135596800000; // 0001-01-01T00:00:00Z

export class Watcher {
  /**
   * @param {object} options
   * @param options.reader the reader of format/object.js, trusting the pinned doorbells
   * @param options.memory a PhoneMemory (chain/memory.js); without one, it remembers for this run only
   * @param options.doorbells [{deviceIdHex, devicePublicKey, name?}]
   * @param options.ownKey this phone's public key (raw bytes), to tell its own keyring entry
   */
  constructor({ reader, memory = null, doorbells = [], ownKey = null, onEvent, onKeyring, onRejected, onRemembered }) {
    this.reader = reader;
    this.memory = memory ?? new PhoneMemory();
    this.names = new Map(doorbells.map((d) => [d.deviceIdHex, d.name ?? d.deviceIdHex.slice(0, 16)]));
    this.ownKey = ownKey;
    this.onEvent = onEvent ?? (() => {});
    this.onKeyring = onKeyring ?? (() => {});
    this.onRejected = onRejected ?? (() => {});
    this.onRemembered = onRemembered ?? (() => {});
    this.seen = new Map(); // "device:seq" -> chain hash, oldest first
    this.keyrings = new Map(); // deviceIdHex -> [seq, epoch] last shown
    this.events = 0;
    this.queue = Promise.resolve();
  }

  /** Check, open and report one message; calls are processed one at a time, in order. */
  handle(prefix, topic, bytes) {
    const done = this.queue.then(() => this.#handle(prefix, topic, bytes));
    this.queue = done.catch(() => {});
    return done;
  }

  #skip(topic, what, why) {
    this.onRejected({ why, what, topic });
  }

  async #handle(prefix, topic, bytes) {
    if (bytes.length > MAX_MESSAGE) {
      const what = `${bytes.length} bytes, more than the ${MAX_MESSAGE} a doorbell sends`;
      this.#skip(topic, what, 'larger than a doorbell sends');
      return;
    }
    const parts = splitTopic(prefix, topic);
    if (parts === null || (parts[1] !== EVENT_LEAF && parts[1] !== KEYRING_LEAF)) {
      const what = `not a ${prefix}/<device>/event or /keyring topic`;
      this.#skip(topic, what, what);
      return;
    }
    const [device, leaf] = parts;
    let envelope;
    let opened;
    try {
      envelope = await this.reader.verify(bytes);
      opened = await this.reader.openEnvelope(envelope);
    } catch (error) {
      if (error?.code === undefined) throw error;
      if (error.code !== 'rejected' || envelope === undefined) {
        this.#skip(topic, error.message, SEALING_REASONS[error.code] ?? 'not a valid sealed object');
        return;
      }
      // The reader holds what it opens to the content rules (checkContents) itself: the
      // rules that come before them in watch.py are applied to what the envelope shows.
      this.#rejectedContents(topic, device, envelope, error);
      return;
    }
    const seq = envelope.seq;
    const deviceIdHex = envelope.deviceIdHex ?? toHex(envelope.deviceId);
    const ms = Number(opened.timeUs / 1000n) + (opened.timeUs % 1000n < 0n ? -1 : 0);
    if (!(ms >= MIN_DATE_MS && ms <= MAX_DATE_MS)) {
      this.#skip(topic, `object ${seq}: time ${opened.timeUs} µs is not a date`, 'a time that is not a date');
      return;
    }
    if (deviceIdHex.slice(0, 16) !== device) {
      this.#skip(topic, `object signed by device ${deviceIdHex.slice(0, 16)}`, 'signed by another doorbell than its topic names');
      return;
    }
    const expected = leaf === EVENT_LEAF ? KIND.EVENT : KIND.KEYRING;
    if (opened.kind !== expected) {
      const what = `object ${seq} is of kind ${KIND_NAMES[opened.kind].toUpperCase()}`;
      this.#skip(topic, `${what}; this topic carries ${leaf} objects`, 'on the wrong topic');
      return;
    }
    if (!this.#firstSighting(topic, deviceIdHex, envelope)) return;
    let keyring = null;
    try {
      const checked = checkContents(opened);
      if (opened.kind === KIND.KEYRING) keyring = checked ?? opened.keyring ?? null;
    } catch (error) {
      if (error?.code === undefined) throw error;
      this.#skip(topic, `object ${seq}: ${error.message}`, 'contents a doorbell never seals');
      return;
    }
    if (keyring !== null && this.memory.isKnownKeyring(deviceIdHex, seq, keyring)) return; // retained, or late
    // Replays, forks, rollbacks, keyrings never published, stanzas against the keyring.
    const problem = this.memory.liveProblem(envelope, opened, keyring);
    if (problem !== null) {
      this.#skip(topic, problem.what, problem.why);
      return;
    }
    if (keyring === null) this.#event(deviceIdHex, envelope, opened);
    else this.#keyring(deviceIdHex, seq, keyring);
    // After reporting: a ring shown twice after a crash beats a ring never shown.
    if (this.memory.rememberLive(envelope, keyring)) this.onRemembered();
  }

  #rejectedContents(topic, device, envelope, error) {
    const deviceIdHex = envelope.deviceIdHex ?? toHex(envelope.deviceId);
    if (deviceIdHex.slice(0, 16) !== device) {
      this.#skip(topic, `object signed by device ${deviceIdHex.slice(0, 16)}`, 'signed by another doorbell than its topic names');
      return;
    }
    if (!this.#firstSighting(topic, deviceIdHex, envelope)) return;
    this.#skip(topic, `object ${envelope.seq}: ${error.message}`, 'contents a doorbell never seals');
  }

  /** QoS 1 may deliver twice and retained keyrings come back on every subscribe; the same
   * (device, seq) with other content is a forked chain. */
  #firstSighting(topic, deviceIdHex, envelope) {
    const key = `${deviceIdHex}:${envelope.seq}`;
    const known = this.seen.get(key);
    if (known !== undefined && equal(known, envelope.chainHash)) return false;
    if (known !== undefined) {
      const what =
        `FORK: object ${envelope.seq} arrived again with different content ` +
        '(a copied or restored doorbell state, or a stolen device key)';
      this.#skip(topic, what, FORKED);
      return false;
    }
    this.seen.set(key, envelope.chainHash);
    if (this.seen.size > MAX_REMEMBERED) this.seen.delete(this.seen.keys().next().value);
    return true;
  }

  #event(deviceIdHex, envelope, opened) {
    const meta = opened.meta;
    const type = typeof meta.type === 'string' && EVENT_TYPE.test(meta.type) ? meta.type : 'event';
    const clip = typeof meta.clip === 'string' && CLIP_ID.test(meta.clip) ? meta.clip : null;
    const body = opened.body;
    const jpeg = body && body.length >= 2 && body[0] === 0xff && body[1] === 0xd8;
    const snapshot = jpeg ? Uint8Array.from(body) : null;
    const snapshotUrl =
      snapshot !== null && typeof URL.createObjectURL === 'function'
        ? URL.createObjectURL(new Blob([snapshot], { type: 'image/jpeg' }))
        : null;
    this.events += 1;
    this.onEvent({
      deviceIdHex,
      doorbellName: this.names.get(deviceIdHex) ?? deviceIdHex.slice(0, 16),
      seq: Number(envelope.seq),
      type,
      clip,
      timeUs: opened.timeUs,
      snapshotUrl,
      snapshot,
      receivedAt: new Date(),
    });
  }

  #keyring(deviceIdHex, seq, keyring) {
    const shown = this.keyrings.get(deviceIdHex);
    this.keyrings.set(deviceIdHex, [seq, keyring.epoch]);
    if (shown !== undefined && keyring.epoch === shown[1]) return;
    // Which entry is this phone's: watch.py marks it "(this phone)".
    const own = this.ownKey;
    const mine = own ? (keyring.recipients.find((r) => equal(r.publicKey, own))?.name ?? null) : null;
    this.onKeyring(deviceIdHex, keyring, mine);
  }
}
