// Builds the web phone into dist/: one bundled module, the static shell and a service
// worker that caches exactly these files. The same sources give the same bytes (no
// timestamps, no absolute paths), so anyone can rebuild and compare what a host serves.

import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, 'dist');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

await esbuild.build({
  entryPoints: [join(here, 'src', 'app.js')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome120', 'firefox121', 'safari17'],
  minify: true,
  legalComments: 'linked',
  sourcemap: false,
  outfile: join(out, 'app.js'),
  logLevel: 'warning',
});

for (const name of await readdir(join(here, 'static'))) {
  await copyFile(join(here, 'static', name), join(out, name));
}

// The service worker's cache is named by the hash of everything it serves, so a new
// build replaces the old files at once and never mixes the two.
const files = (await readdir(out)).filter((name) => name !== 'sw.js').sort();
const digest = createHash('sha256');
for (const name of files) {
  digest.update(name + '\0');
  digest.update(await readFile(join(out, name)));
}
const version = digest.digest('hex').slice(0, 16);
const worker = (await readFile(join(here, 'src', 'sw.js'), 'utf8'))
  .replace('__VERSION__', version)
  .replace('__FILES__', JSON.stringify(['./', ...files.filter((n) => n !== 'index.html')]));
await writeFile(join(out, 'sw.js'), worker);
console.log(`web phone built into ${out} (build ${version})`);
