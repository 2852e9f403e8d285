// Strict JSON (FORMAT §4), as every Doorbell reader parses meta, keyring documents and a
// phone's own files: UTF-8 without a byte-order mark, no duplicate key, no NaN or
// infinities, no number that is an infinity as a double, no unpaired surrogate.
//
// Integers (no fraction, no exponent) beyond Number.MAX_SAFE_INTEGER stay exact, as
// BigInt; every other number is a Number. A number written with a fraction or an
// exponent ("2.0", "1e3") is not an integer to the format's meta rules even when its
// value is whole, so the parser records, on each object and array, which members were
// written that way: `isJsonInteger(container, key)` answers from that record.

import { fromUtf8 } from '../bytes.js';

export class StrictJsonError extends Error {
  constructor(message) {
    super(message);
    this.name = 'StrictJsonError';
    this.code = 'malformed';
  }
}

/** Members (keys or indices) of an object or array written as fractions or exponents. */
export const FRACTIONAL = Symbol('doorbell.json.fractional');

const MAX_DEPTH = 512;
// The smallest magnitude that rounds to an infinity as a double: 2^1024 - 2^970.
const DOUBLE_OVERFLOW = (1n << 1024n) - (1n << 970n);
const ESCAPES = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const WHITESPACE = /[ \t\n\r]*/y;
const HEX4 = /^[0-9a-fA-F]{4}$/;

/**
 * The document in `raw` (bytes, or a string already decoded). Throws what
 * `fail(reason)` makes, by default a StrictJsonError naming the problem.
 */
export function parseStrictJson(raw, fail = (reason) => new StrictJsonError(reason)) {
  let text;
  if (typeof raw === 'string') {
    text = raw;
  } else {
    try {
      text = fromUtf8(raw);
    } catch {
      throw fail(`not UTF-8: ${firstInvalidUtf8(raw)}`);
    }
  }
  if (text.startsWith('\uFEFF')) throw fail('starts with a byte-order mark');
  const parser = new Parser(text, fail);
  parser.space();
  const value = parser.value(0);
  parser.space();
  if (parser.at < text.length) throw parser.error('extra data after the document');
  return value;
}

/** Whether `container[key]` is a JSON integer: a number written without fraction or exponent. */
export function isJsonInteger(container, key) {
  const value = container[key];
  if (typeof value === 'bigint') return true;
  if (typeof value !== 'number' || !Number.isInteger(value)) return false;
  return !container[FRACTIONAL]?.has(String(key));
}

/** Whether `value` is a plain JSON object (not an array, not null). */
export function isJsonObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Python's repr of a short string, as the reference implementation's messages show it. */
export function quote(text) {
  const q = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = '';
  for (const char of text) {
    if (char === '\\' || char === q) out += '\\' + char;
    else if (char === '\n') out += '\\n';
    else if (char === '\r') out += '\\r';
    else if (char === '\t') out += '\\t';
    else if (char < ' ' || char === '\x7f') out += '\\x' + char.charCodeAt(0).toString(16).padStart(2, '0');
    else out += char;
  }
  return q + out + q;
}

/** A value as JSON text for messages (BigInt as its digits). */
export function dumps(value) {
  return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? Number(v) : v)) ?? String(value);
}

/** Where the first invalid UTF-8 sequence starts (RFC 3629: shortest form, no surrogates). */
function firstInvalidUtf8(bytes) {
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    let need;
    let min;
    if (b < 0x80) {
      i++;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) [need, min] = [1, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [need, min] = [2, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [need, min] = [3, 0x10000];
    else return `byte ${i} cannot start a character`;
    let code = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined) return `byte ${i} starts a character cut short by the end`;
      if ((c & 0xc0) !== 0x80) return `byte ${i} starts a character cut short at byte ${i + k}`;
      code = (code << 6) | (c & 0x3f);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      return `byte ${i} starts an invalid sequence`;
    }
    i += need + 1;
  }
  return 'an invalid sequence';
}

class Parser {
  constructor(text, fail) {
    this.text = text;
    this.fail = fail;
    this.at = 0;
  }

  error(why) {
    return this.fail(`not JSON: ${why} at character ${this.at}`);
  }

  space() {
    WHITESPACE.lastIndex = this.at;
    WHITESPACE.exec(this.text);
    this.at = WHITESPACE.lastIndex;
  }

  value(depth) {
    if (depth > MAX_DEPTH) throw this.fail('nested too deeply');
    const char = this.text[this.at];
    if (char === '{') return this.object(depth);
    if (char === '[') return this.array(depth);
    if (char === '"') return this.string();
    if (char === 't' && this.text.startsWith('true', this.at)) return (this.at += 4), true;
    if (char === 'f' && this.text.startsWith('false', this.at)) return (this.at += 5), false;
    if (char === 'n' && this.text.startsWith('null', this.at)) return (this.at += 4), null;
    for (const word of ['NaN', 'Infinity', '-Infinity']) {
      if (this.text.startsWith(word, this.at)) throw this.fail(`${word} is not a JSON number`);
    }
    if (char === '-' || (char >= '0' && char <= '9')) return this.number();
    throw this.error('expected a value');
  }

  object(depth) {
    const out = {};
    const keys = new Set();
    let fractional = null;
    this.at++;
    this.space();
    if (this.text[this.at] === '}') {
      this.at++;
      return out;
    }
    for (;;) {
      if (this.text[this.at] !== '"') throw this.error('expected a key in double quotes');
      const key = this.string();
      if (keys.has(key)) throw this.fail(`duplicate key ${quote(key.slice(0, 64))}`);
      keys.add(key);
      this.space();
      if (this.text[this.at] !== ':') throw this.error("expected ':'");
      this.at++;
      this.space();
      const value = this.value(depth + 1);
      if (this.lastFractional) {
        (fractional ??= new Set()).add(key);
        this.lastFractional = false;
      }
      // defineProperty: a key "__proto__" is a member like any other, not the prototype.
      Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      this.space();
      const next = this.text[this.at++];
      if (next === '}') break;
      if (next !== ',') throw this.error("expected ',' or '}'");
      this.space();
    }
    if (fractional) Object.defineProperty(out, FRACTIONAL, { value: fractional });
    return out;
  }

  array(depth) {
    const out = [];
    let fractional = null;
    this.at++;
    this.space();
    if (this.text[this.at] === ']') {
      this.at++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      if (this.lastFractional) {
        (fractional ??= new Set()).add(String(out.length - 1));
        this.lastFractional = false;
      }
      this.space();
      const next = this.text[this.at++];
      if (next === ']') break;
      if (next !== ',') throw this.error("expected ',' or ']'");
      this.space();
    }
    if (fractional) Object.defineProperty(out, FRACTIONAL, { value: fractional });
    return out;
  }

  string() {
    let out = '';
    let start = ++this.at;
    const text = this.text;
    for (;;) {
      const code = text.charCodeAt(this.at);
      if (Number.isNaN(code)) throw this.error('unterminated string');
      if (code === 0x22) break;
      if (code < 0x20) throw this.error('a control character in a string');
      if (code !== 0x5c) {
        this.at++;
        continue;
      }
      out += text.slice(start, this.at);
      const escape = text[this.at + 1];
      if (escape === 'u') {
        const hex = text.slice(this.at + 2, this.at + 6);
        if (!HEX4.test(hex)) throw this.error('a bad \\u escape');
        out += String.fromCharCode(parseInt(hex, 16));
        this.at += 6;
      } else if (escape in ESCAPES) {
        out += ESCAPES[escape];
        this.at += 2;
      } else {
        throw this.error('a bad escape');
      }
      start = this.at;
    }
    out += text.slice(start, this.at);
    this.at++;
    if (!out.isWellFormed()) {
      throw this.fail(`string ${quote(out.slice(0, 40))} holds an unpaired surrogate`);
    }
    return out;
  }

  number() {
    NUMBER.lastIndex = this.at;
    const match = NUMBER.exec(this.text);
    if (!match) throw this.error('a bad number');
    const text = match[0];
    this.at = NUMBER.lastIndex;
    if (match[1] === undefined && match[2] === undefined) {
      if (text.length < 16) return Number(text) || 0; // "-0" is the integer 0
      const value = BigInt(text);
      if ((value < 0n ? -value : value) >= DOUBLE_OVERFLOW) {
        throw this.fail(`an integer of ${text.length} digits does not fit a double`);
      }
      return Number.isSafeInteger(Number(value)) ? Number(value) : value;
    }
    const value = Number(text);
    if (!Number.isFinite(value)) throw this.fail(`number ${text.slice(0, 40)} does not fit a double`);
    this.lastFractional = true;
    return value;
  }
}

