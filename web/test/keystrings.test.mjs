import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decodeKeyString, encodeKeyString, PREFIX } from '../src/keystrings.js';
import { toHex } from '../src/bytes.js';

const vectors = JSON.parse(readFileSync(new URL('../../tests/vectors/v1.json', import.meta.url)));

test('the device and phone key strings of the vectors decode to their raw bytes and back', () => {
  const device = decodeKeyString(vectors.device.public, [PREFIX.device]);
  assert.equal(toHex(device.raw), vectors.device.public_raw);
  assert.equal(encodeKeyString(device.prefix, device.raw), vectors.device.public);
  for (const phone of vectors.phones) {
    const pub = decodeKeyString(phone.public, [PREFIX.public[1], PREFIX.public[2]]);
    assert.equal(toHex(pub.raw), phone.public_raw);
    assert.equal(encodeKeyString(pub.prefix, pub.raw), phone.public);
  }
});

test('a wrapped, upper-case key string is the same key', () => {
  const text = vectors.device.public.toUpperCase().replace(/(.{20})/g, '$1\n  ');
  assert.equal(toHex(decodeKeyString(text, [PREFIX.device]).raw), vectors.device.public_raw);
});

test('each malformed key string is refused naming its problem', () => {
  const good = vectors.device.public;
  const cases = [
    ['', /empty/],
    ['nonsense', /not a Doorbell key string/],
    [vectors.phones[0].public, /expected a doorbell device public key/],
    [good.slice(0, -1), /truncated/],
    [good + 'a', /too long/],
    [good.slice(0, 20) + '1' + good.slice(21), /invalid character "1"/],
    [good.slice(0, 20) + (good[20] === 'a' ? 'b' : 'a') + good.slice(21), /checksum/],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(() => decodeKeyString(text, [PREFIX.device]), pattern, text);
  }
});
