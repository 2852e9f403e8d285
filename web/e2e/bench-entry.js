// The page side of scripts/bench's web_open_vs_python: the web phone's own reader,
// with keys imported as the app keeps them (non-extractable WebCrypto keys), verifying
// and opening objects already in memory.

import { fromHex } from '../src/bytes.js';
import { Reader } from '../src/format/object.js';
import { cryptoKeyHolder } from '../src/crypto/kem.js';
import { expandXwingSeed } from '../src/crypto/xwing.js';

const PKCS8_X25519 = fromHex('302e020100300506032b656e04220420');

async function holder(seed, publicKey) {
  const { mlkemSeed, x25519Secret } = expandXwingSeed(seed);
  const pkcs8 = new Uint8Array([...PKCS8_X25519, ...x25519Secret]);
  const x25519Key = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'X25519' }, false, ['deriveBits']);
  const mlkemKey = await crypto.subtle.importKey('raw-seed', mlkemSeed, { name: 'ML-KEM-768' }, false, ['decapsulateBits']);
  return cryptoKeyHolder({ suite: 2, publicKey, x25519Key, mlkemKey });
}

window.bench = async ({ device, seed, publicKey, names, runs }) => {
  const reader = new Reader({ devices: [fromHex(device)], keys: [await holder(fromHex(seed), fromHex(publicKey))] });
  const objects = [];
  for (const name of names) objects.push(new Uint8Array(await (await fetch(`../objects/${name}`)).arrayBuffer()));
  const times = [];
  let bytes = 0;
  for (let run = 0; run < runs; run++) {
    const start = performance.now();
    bytes = 0;
    for (const object of objects) {
      const opened = await reader.open(object);
      bytes += opened.body.length;
    }
    times.push((performance.now() - start) / 1000);
  }
  return { times, bytes, objects: objects.length };
};
