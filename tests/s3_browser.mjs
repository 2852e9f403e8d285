// The web phone's bucket source (web/src/s3.js) in node, for tests/test_s3_browser.py.
// Reads one JSON request on stdin:
//   {"source": {endpoint, region, bucket, prefix, accessKeyId, secretAccessKey, maxKeys?},
//    "steps": [["names"], ["read", NAME], ...]}
// and prints one JSON line: {"strange": [escaped names], "results": [...]}, each result
// {"names": [...], "sizes": {name: size}}, {"read": LENGTH, "sha256": HEX}, or
// {"error": {"code": CODE, "message": TEXT}} for a step that failed.

import { createHash } from 'node:crypto';
import { S3Source } from '../web/src/s3.js';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const request = JSON.parse(input);
const strange = [];
const results = [];

async function step(source, [action, name]) {
  if (action === 'names') {
    const names = await source.names();
    return { names, sizes: Object.fromEntries(names.map((n) => [n, source.size(n)])) };
  }
  if (action === 'read') {
    const bytes = await source.read(name);
    return { read: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
  }
  throw new Error(`unknown step ${action}`);
}

try {
  const source = new S3Source({ ...request.source, onStrangeName: (name) => strange.push(name) });
  for (const action of request.steps) {
    try {
      results.push(await step(source, action));
    } catch (error) {
      if (error?.code === undefined) throw error;
      results.push({ error: { code: error.code, message: error.message } });
    }
  }
} catch (error) {
  if (error?.code === undefined) throw error;
  results.push({ error: { code: error.code, message: error.message } });
}
process.stdout.write(`${JSON.stringify({ strange, results })}\n`);
