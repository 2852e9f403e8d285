// Signed commands from an enrolled phone and the doorbell's signed answers (PROTOCOL §7),
// the phone's share: building and signing a command, and opening the answer, which must
// be signed by the pinned device key, for this request, and (for an enrolled phone)
// sealed to it with HPKE: an invitation's link carries a secret the broker must not see.

import { concat, fromBase64, toBase64, toHex, utf8 } from '../bytes.js';
import { verifyStrict } from '../crypto/ed25519.js';
import { openBase } from '../crypto/hpke.js';
import { identityString, signingKeyString } from './identity.js';
import { parseStrictJson } from '../format/strictjson.js';

export const VERSION = 1;
export const COMMAND_CONTEXT = utf8('doorbell command v1\0');
export const ANSWER_CONTEXT = utf8('doorbell answer v1\0');
export const NONCE_LEN = 16;
export const MAX_COMMAND = 16 * 1024; // what a doorbell reads
export const MAX_ANSWER = 64 * 1024; // what a phone reads
const ROLES = ['member', 'guest', 'owner'];
const MAX_WINDOW_SECONDS = 3600;

export class CommandError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'CommandError';
    this.code = code;
  }
}

/**
 * The payload to publish on `<prefix>/<D>/command`: {"body", "signature"} with the body
 * signed by `sign` (this phone's Ed25519 key, whose public half is `signingPublicKey`).
 * `time` is Unix seconds, `nonce` 16 random bytes: the answer comes on
 * `<prefix>/<D>/answer/<nonce hex>`.
 */
export async function signCommand({ sign, signingPublicKey, deviceId, name, args = {}, time, nonce }) {
  if (nonce?.length !== NONCE_LEN) throw new TypeError(`a command's nonce is ${NONCE_LEN} bytes`);
  const body = utf8(
    JSON.stringify({
      v: VERSION,
      device: toHex(deviceId),
      signer: signingKeyString(signingPublicKey),
      time: Math.floor(time),
      nonce: toBase64(nonce),
      command: name,
      args,
    }),
  );
  const signature = await sign(concat(COMMAND_CONTEXT, body));
  if (!(signature instanceof Uint8Array) || signature.length !== 64) {
    throw new TypeError('the signer must return a 64-byte Ed25519 signature');
  }
  const payload = utf8(JSON.stringify({ body: toBase64(body), signature: toBase64(signature) }));
  if (payload.length > MAX_COMMAND) {
    throw new CommandError(`a ${payload.length}-byte command, limit ${MAX_COMMAND}`, 'too-large');
  }
  return payload;
}

/**
 * The doorbell's answer to our command `nonce`: signed by `devicePublicKey` (the pinned
 * doorbell), for this request, opened with `holder` when sealed to this phone. Returns
 * the answer's body ({"v", "device", "request", "ok", "reason" | …}); a refusal is a body
 * with `ok` false. Throws CommandError for anything that is not that answer: on a broker
 * anyone can publish on the answer topic, and such messages are to be ignored.
 */
export async function openAnswer(payload, devicePublicKey, nonce, holder) {
  if (payload.length > MAX_ANSWER) {
    throw new CommandError(`a ${payload.length}-byte answer, limit ${MAX_ANSWER}`, 'too-large');
  }
  const outer = object(payload, 'the answer');
  const to = outer.to;
  let data = unbase64(outer.data, 'data');
  const signature = unbase64(outer.signature, 'signature');
  if (to !== 'clear' && to !== 'sealed') {
    throw new CommandError('the answer is neither clear nor sealed', 'garbled');
  }
  const deviceId = new Uint8Array(await crypto.subtle.digest('SHA-256', devicePublicKey));
  if (signature.length !== 64) throw new CommandError('the answer is not signed', 'unsigned');
  const signed = concat(ANSWER_CONTEXT, deviceId, nonce, utf8(to), Uint8Array.of(0), data);
  try {
    await verifyStrict(devicePublicKey, signed, signature);
  } catch {
    throw new CommandError('the answer is not signed by this doorbell', 'bad-signature');
  }
  if (to === 'sealed') {
    try {
      data = await openBase(holder, data, concat(ANSWER_CONTEXT, deviceId, nonce), new Uint8Array(0));
    } catch {
      throw new CommandError('the answer is not sealed to this phone', 'not-for-us');
    }
  }
  const body = object(data, "the answer's body");
  if (body.request !== toBase64(nonce) || body.device !== toHex(deviceId)) {
    throw new CommandError('the answer is to another request', 'another-request');
  }
  return body;
}

// The commands an owner's phone gives (PROTOCOL §7), each as [name, args] for
// remote.js's Remote.call(...). Members may give the live ones only.

/**
 * Open an enrolment window this phone confirms. `role` member, guest or owner; `name`
 * the new phone's (default: the name it gives); `expires` a guest's seconds of reading;
 * `seconds` how long the link works (default 600 at the doorbell, at most 3600).
 */
export function invite({ role = 'member', name, expires, seconds } = {}) {
  if (!ROLES.includes(role)) {
    throw new CommandError(`invite a member, a guest or an owner, not "${role}"`, 'role');
  }
  const args = { role };
  if (seconds !== undefined) {
    if (!Number.isFinite(seconds) || seconds < 1 || seconds > MAX_WINDOW_SECONDS) {
      throw new CommandError(`the link lasts 1 to ${MAX_WINDOW_SECONDS} seconds`, 'seconds');
    }
    args.seconds = seconds;
  }
  if (role === 'guest') {
    if (!Number.isFinite(expires) || expires <= 0) {
      throw new CommandError('a guest needs an expiry: how long it may read footage', 'expires');
    }
    args.expires = expires;
  } else if (expires !== undefined) {
    throw new CommandError('only a guest has an expiry', 'expires');
  }
  if (name !== undefined && name !== '') args.name = name;
  return ['invite', args];
}

/** How the window an invite opened is going: waiting, confirming (with the code), … */
export function windowState(window) {
  return ['window-state', { window }];
}

/** Confirm the window's new phone: `code` must be the code the doorbell computed. */
export function windowConfirm(window, code) {
  return ['window-confirm', { window, code }];
}

export function windowCancel(window) {
  return ['window-cancel', { window }];
}

/** Remove the phone called `name` from the keyring (not the only owner). */
export function revoke(name) {
  return ['revoke', { name }];
}

/** Make `identity` ({suite, publicKey, signingPublicKey} or its dbid- string) the recovery key. */
export function setRecovery(identity) {
  return ['set-recovery', { identity: typeof identity === 'string' ? identity : identityString(identity) }];
}

/** Start live view; send it with the nonce whose live topic this phone subscribed to. */
export function live() {
  return ['live', {}];
}

/** Keep live session `session` (its id, bytes or hex) going for 5 more seconds. */
export function liveRenew(session) {
  return ['live-renew', { session: typeof session === 'string' ? session : toHex(session) }];
}

export function liveStop(session) {
  return ['live-stop', { session: typeof session === 'string' ? session : toHex(session) }];
}

function object(raw, what) {
  const value = parseStrictJson(raw, (why) => new CommandError(`${what} is not strict JSON: ${why}`, 'garbled'));
  if (!isObject(value)) {
    throw new CommandError(`${what} is not a JSON object`, 'garbled');
  }
  return value;
}

function unbase64(value, what) {
  if (typeof value !== 'string') throw new CommandError(`${what} must be a base64 string`, 'garbled');
  try {
    return fromBase64(value);
  } catch {
    throw new CommandError(`${what} is not valid base64`, 'garbled');
  }
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
