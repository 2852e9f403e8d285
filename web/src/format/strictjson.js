// Strict JSON (FORMAT §4), the one parser of every JSON document of the format (meta, the
// keyring document, live details), accepting exactly what doorbell/sealing/format.py's
// loads_strict accepts: UTF-8 without a byte-order mark; no duplicate key in any object;
// no NaN, Infinity or -Infinity; no number, fraction or integer, whose double is an
// infinity (magnitude at least 2^1024 - 2^970); no \u escape that leaves an unpaired
// surrogate; JSON's own grammar (RFC 8259) otherwise.
//
// Numbers keep the distinction Python's json makes, and nothing is rounded:
//   - a literal without fraction or exponent ("42", "-1", "18446744073709551615") is a
//     BigInt, always, whatever its size: 42n;
//   - a literal with a fraction or an exponent ("2.0", "1e3", "0.5") is a Number.
// So `typeof value === 'bigint'` is "a JSON integer" (2, not 2.0, not true), exactly the
// test FORMAT §4.1 makes of meta keys, and u64 values (seq, index, first, last) arrive
// exact. Use Number(value) where a count meets arithmetic on doubles.
// Objects are plain objects; a key "__proto__" is a member like any other.

import { fromUtf8 } from '../bytes.js';

// Deeper nesting is refused. Python's limit is its recursion limit (about 990 here); no
// document of the format nests more than four deep.
export const MAX_DEPTH = 512;
// The smallest magnitude whose double is an infinity: 2^1024 - 2^970 rounds up (ties to even).
const DOUBLE_OVERFLOW = (1n << 1024n) - (1n << 970n);
// 2^1024 has 309 digits: an integer literal with more cannot fit, whatever its digits.
const MAX_INTEGER_DIGITS = 309;
const ESCAPES = { 0x22: '"', 0x5c: '\\', 0x2f: '/', 0x62: '\b', 0x66: '\f', 0x6e: '\n', 0x72: '\r', 0x74: '\t' };
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const HEX4 = /^[0-9a-fA-F]{4}$/;

/** A document that is not strict JSON; `code` is 'malformed'. */
export class StrictJsonError extends Error {
  constructor(message) {
    super(message);
    this.name = 'StrictJsonError';
    this.code = 'malformed';
  }
}

/** How Python's repr shows a string in a message: quoted, anything unprintable escaped. */
export function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const char of text) {
    const code = char.codePointAt(0);
    if (char === '\\' || char === quote) out += '\\' + char;
    else if (char === '\n') out += '\\n';
    else if (char === '\r') out += '\\r';
    else if (char === '\t') out += '\\t';
    else if (char !== ' ' && /[\p{C}\p{Z}]/u.test(char)) out += escapeCode(code);
    else out += char;
  }
  return out + quote;
}

function escapeCode(code) {
  if (code < 0x100) return `\\x${code.toString(16).padStart(2, '0')}`;
  if (code < 0x10000) return `\\u${code.toString(16).padStart(4, '0')}`;
  return `\\U${code.toString(16).padStart(8, '0')}`;
}

/**
 * Parse strict JSON from bytes (Uint8Array, UTF-8) or a string. Throws `fail(reason)`,
 * a StrictJsonError by default, naming the first problem found.
 */
export function parseStrictJson(input, fail = (reason) => new StrictJsonError(reason)) {
  let text;
  if (typeof input === 'string') {
    if (!input.isWellFormed()) throw fail('not UTF-8: the text holds an unpaired surrogate');
    text = input;
  } else {
    try {
      text = fromUtf8(input);
    } catch {
      throw fail('not UTF-8');
    }
  }
  if (text.charCodeAt(0) === 0xfeff) throw fail('starts with a byte-order mark');
  const parser = new Parser(text, fail);
  parser.space();
  const value = parser.value(0);
  parser.space();
  if (parser.at < text.length) throw parser.syntax('extra data after the document');
  return value;
}

class Parser {
  constructor(text, fail) {
    this.text = text;
    this.fail = fail;
    this.at = 0;
  }

  syntax(why) {
    return this.fail(`not JSON: ${why} at character ${this.at}`);
  }

  space() {
    const text = this.text;
    let at = this.at;
    for (;;) {
      const code = text.charCodeAt(at);
      if (code !== 0x20 && code !== 0x0a && code !== 0x0d && code !== 0x09) break;
      at++;
    }
    this.at = at;
  }

  value(depth) {
    const code = this.text.charCodeAt(this.at);
    if (code === 0x7b /* { */ || code === 0x5b /* [ */) {
      if (depth >= MAX_DEPTH) throw this.fail(`not JSON: nested more than ${MAX_DEPTH} deep`);
      return code === 0x7b ? this.object(depth + 1) : this.array(depth + 1);
    }
    if (code === 0x22) return this.string();
    if (code === 0x2d || (code >= 0x30 && code <= 0x39)) {
      if (this.text.startsWith('-Infinity', this.at)) throw this.fail('-Infinity is not a JSON number');
      return this.number();
    }
    for (const [word, value] of [['true', true], ['false', false], ['null', null]]) {
      if (this.text.startsWith(word, this.at)) {
        this.at += word.length;
        return value;
      }
    }
    for (const word of ['NaN', 'Infinity']) {
      if (this.text.startsWith(word, this.at)) throw this.fail(`${word} is not a JSON number`);
    }
    throw this.syntax(this.at < this.text.length ? 'expecting a value' : 'the document ends where a value should be');
  }

  object(depth) {
    const out = {};
    const keys = new Set();
    this.at++;
    this.space();
    if (this.text.charCodeAt(this.at) === 0x7d) {
      this.at++;
      return out;
    }
    for (;;) {
      if (this.text.charCodeAt(this.at) !== 0x22) throw this.syntax('expecting a key in double quotes');
      const key = this.string();
      if (keys.has(key)) throw this.fail(`duplicate key ${pyRepr(key.slice(0, 64))}`);
      keys.add(key);
      this.space();
      if (this.text.charCodeAt(this.at) !== 0x3a) throw this.syntax("expecting ':'");
      this.at++;
      this.space();
      Object.defineProperty(out, key, { value: this.value(depth), enumerable: true, writable: true, configurable: true });
      this.space();
      const next = this.text.charCodeAt(this.at++);
      if (next === 0x7d) return out;
      if (next !== 0x2c) {
        this.at--;
        throw this.syntax("expecting ',' or '}'");
      }
      this.space();
    }
  }

  array(depth) {
    const out = [];
    this.at++;
    this.space();
    if (this.text.charCodeAt(this.at) === 0x5d) {
      this.at++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth));
      this.space();
      const next = this.text.charCodeAt(this.at++);
      if (next === 0x5d) return out;
      if (next !== 0x2c) {
        this.at--;
        throw this.syntax("expecting ',' or ']'");
      }
      this.space();
    }
  }

  string() {
    const text = this.text;
    let out = '';
    let start = ++this.at;
    let escaped = false;
    for (;;) {
      const code = text.charCodeAt(this.at);
      if (Number.isNaN(code)) throw this.syntax('unterminated string');
      if (code === 0x22) break;
      if (code < 0x20) throw this.syntax('a control character in a string');
      if (code !== 0x5c) {
        this.at++;
        continue;
      }
      escaped = true;
      out += text.slice(start, this.at);
      const escape = text.charCodeAt(this.at + 1);
      if (escape === 0x75 /* u */) {
        const hex = text.slice(this.at + 2, this.at + 6);
        if (!HEX4.test(hex)) throw this.syntax('a bad \\u escape');
        out += String.fromCharCode(parseInt(hex, 16));
        this.at += 6;
      } else if (ESCAPES[escape] !== undefined) {
        out += ESCAPES[escape];
        this.at += 2;
      } else {
        throw this.syntax('a bad escape');
      }
      start = this.at;
    }
    out += text.slice(start, this.at);
    this.at++;
    // Only a \u escape can make a surrogate unpaired: the text itself is well-formed.
    if (escaped && !out.isWellFormed()) {
      throw this.fail(`string ${pyRepr(out.slice(0, 40))} holds an unpaired surrogate`);
    }
    return out;
  }

  number() {
    NUMBER.lastIndex = this.at;
    const match = NUMBER.exec(this.text);
    if (match === null) throw this.syntax('expecting a value');
    const literal = match[0];
    this.at = NUMBER.lastIndex;
    if (match[1] === undefined && match[2] === undefined) {
      const digits = literal.length - (literal.charCodeAt(0) === 0x2d ? 1 : 0);
      const value = digits > MAX_INTEGER_DIGITS ? DOUBLE_OVERFLOW : BigInt(literal);
      if ((value < 0n ? -value : value) >= DOUBLE_OVERFLOW) {
        throw this.fail(`an integer of ${literal.length} digits does not fit a double`);
      }
      return value;
    }
    const value = Number(literal);
    if (!Number.isFinite(value)) throw this.fail(`number ${literal.slice(0, 40)} does not fit a double`);
    return value;
  }
}
