// The enrolment link (PROTOCOL §1), as text pasted or read from its QR code:
//   doorbell:enroll?v=1&k=<device>&h=<host>&p=<port>&tls=<0|1>&t=<prefix>&s=<secret>&e=<expires>
// Every field is checked, the way the reference phone (doorbell/sealing/enrolment.py)
// checks it, and a refusal names the field. Only `s` is secret.

import { checkDeviceKey, deviceId } from './identity.js';

export const LINK_SCHEME = 'doorbell:enroll';
export const LINK_VERSION = 1;
export const MAX_LINK = 600;
export const SECRET_LEN = 16;
const FIELDS = ['v', 'k', 'h', 'p', 'tls', 't', 's', 'e'];
const B32_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const HOST = /^[A-Za-z0-9.:[\]-]{1,253}$/;
// What Python's str.strip() removes: the link is trimmed exactly as the reference does.
const SPACE = '[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
const EDGES = new RegExp(`^${SPACE}+|${SPACE}+$`, 'g');

export class LinkError extends Error {
  /** `code` says what is wrong, `field` names the link's field when one is at fault. */
  constructor(message, code, field = null) {
    super(message);
    this.name = 'LinkError';
    this.code = code;
    this.field = field;
  }
}

/**
 * Parse an enrolment link (pasted, or the text of its QR code).
 * Returns {device, deviceId, host, port, tls, prefix, secret, expires}: `device` the
 * doorbell's 32-byte public key, `secret` the 16-byte one-time secret, `expires` Unix
 * seconds. Refuses, with a LinkError naming the problem, anything the reference phone
 * refuses, and a link whose expiry has passed at `now` (Unix seconds; `null` skips it).
 */
export function parseLink(text, { now = Date.now() / 1000 } = {}) {
  text = String(text).replace(EDGES, '');
  const length = [...text].length;
  if (length > MAX_LINK) {
    throw new LinkError(`not an enrolment link: ${length} characters, limit ${MAX_LINK}`, 'too-long');
  }
  const mark = text.indexOf('?');
  const scheme = mark < 0 ? text : text.slice(0, mark);
  if (scheme !== LINK_SCHEME) {
    throw new LinkError(`not an enrolment link: it must start with ${LINK_SCHEME}?`, 'scheme');
  }
  const pairs = parseQuery(mark < 0 ? '' : text.slice(mark + 1));
  const fields = new Map(pairs);
  if (fields.size !== pairs.length) {
    throw new LinkError('the enrolment link repeats a field', 'repeated');
  }
  const missing = FIELDS.filter((name) => !fields.has(name));
  if (missing.length) {
    throw new LinkError(`the enrolment link lacks ${missing.join(', ')}: it is cut short`, 'missing', missing[0]);
  }
  const version = fields.get('v');
  if (version !== String(LINK_VERSION)) {
    throw new LinkError(
      `enrolment link version "${version}"; this phone reads ${LINK_VERSION}`,
      'version',
      'v',
    );
  }
  const device = unbase32(fields.get('k'), 32, 'device key', 'k');
  try {
    checkDeviceKey(device);
  } catch (error) {
    throw new LinkError(`the link's device key: ${error.message}`, 'device-key', 'k');
  }
  const host = fields.get('h');
  if (!HOST.test(host)) {
    throw new LinkError("the link's broker host is not a host name or address", 'host', 'h');
  }
  const port = number(fields.get('p'), 'broker port', 1, 65535, 'p');
  const tls = fields.get('tls');
  if (tls !== '0' && tls !== '1') {
    throw new LinkError("the link's tls field must be 0 or 1", 'tls', 'tls');
  }
  const prefix = fields.get('t');
  if (
    !prefix ||
    [...prefix].length > 128 ||
    /[#+\0]/.test(prefix) ||
    prefix.startsWith('/') ||
    prefix.endsWith('/')
  ) {
    throw new LinkError("the link's topic prefix is not a valid MQTT topic prefix", 'prefix', 't');
  }
  const secret = unbase32(fields.get('s'), SECRET_LEN, 'one-time secret', 's');
  const expires = number(fields.get('e'), 'expiry', 0, 2 ** 40, 'e');
  if (now !== null && expires <= now) {
    throw new LinkError('the link expired; ask for a new one', 'expired', 'e');
  }
  return { device, deviceId: deviceId(device), host, port, tls: tls === '1', prefix, secret, expires };
}

/**
 * The `name=value` pairs of a query, decoded as Python's
 * parse_qsl(keep_blank_values=True, strict_parsing=True) decodes them: `&` separates,
 * every pair has an `=`, `+` is a space, and a `%` not followed by two hex digits stays.
 */
function parseQuery(query) {
  if (query === '') return [];
  return query.split('&').map((pair) => {
    const equals = pair.indexOf('=');
    if (equals < 0) throw new LinkError("the enrolment link's fields are garbled", 'garbled');
    return [unquote(pair.slice(0, equals)), unquote(pair.slice(equals + 1))];
  });
}

function unquote(text) {
  text = text.replaceAll('+', ' ');
  if (!text.includes('%')) return text;
  // Runs of %XX are bytes, decoded as UTF-8 with replacement, as urllib.parse.unquote does.
  return text.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    const bytes = Uint8Array.from(run.match(/%../g), (escape) => parseInt(escape.slice(1), 16));
    return new TextDecoder('utf-8').decode(bytes);
  });
}

function unbase32(text, length, what, field) {
  const chars = Math.ceil((length * 8) / 5);
  if (text.length !== chars || ![...text].every((c) => B32_ALPHABET.includes(c))) {
    throw new LinkError(`the link's ${what} is not ${length} bytes of base32`, 'base32', field);
  }
  const out = new Uint8Array(length);
  let buffer = 0;
  let bits = 0;
  let index = 0;
  for (const char of text) {
    buffer = (buffer << 5) | B32_ALPHABET.indexOf(char);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[index++] = (buffer >>> bits) & 0xff;
      buffer &= (1 << bits) - 1;
    }
  }
  if (buffer !== 0) {
    throw new LinkError(`the link's ${what} is not canonical base32`, 'base32', field);
  }
  return out;
}

function number(text, what, low, high, field) {
  if (!/^[0-9]{1,16}$/.test(text) || (text.startsWith('0') && text !== '0')) {
    throw new LinkError(`the link's ${what} is not a number`, 'number', field);
  }
  const value = Number(text);
  if (value < low || value > high) {
    throw new LinkError(`the link's ${what} ${value} is outside ${low}..${high}`, 'number', field);
  }
  return value;
}
