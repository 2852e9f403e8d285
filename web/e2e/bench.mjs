// The browser side of scripts/bench (benchmarks/web.py runs it and reads one JSON line):
//   node e2e/bench.mjs open DIR RUNS   time the page's reader over DIR/objects (DIR/keys.json)
//   node e2e/bench.mjs ring RINGS      ring the rig's doorbell and time each ring to the screen

import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { becomePhone, connected, launch } from './flows.mjs';
import { Rig } from './rig.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const [mode, ...args] = process.argv.slice(2);

function serve(root) {
  const types = { '.html': 'text/html', '.js': 'text/javascript' };
  const server = createServer(async (request, response) => {
    const path = normalize(join(root, decodeURIComponent(new URL(request.url, 'http://x').pathname)));
    if (!path.startsWith(root)) return response.writeHead(403).end();
    try {
      const file = path.endsWith('/') ? join(path, 'index.html') : path;
      const body = await readFile(file);
      response.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function openBench(dir, runs) {
  const page = join(dir, 'page');
  await esbuild.build({ entryPoints: [join(here, 'bench-entry.js')], bundle: true, format: 'esm', outfile: join(page, 'bench.js'), logLevel: 'warning' });
  await writeFile(join(page, 'index.html'), '<!doctype html><meta charset="utf-8"><script type="module" src="bench.js"></script>');
  const keys = JSON.parse(await readFile(join(dir, 'keys.json'), 'utf8'));
  const names = (await readdir(join(dir, 'objects'))).filter((n) => n.endsWith('.sealed')).sort();
  const server = await serve(dir);
  const profile = await mkdtemp(join(tmpdir(), 'doorbell-bench-'));
  const context = await launch(profile);
  try {
    const tab = context.pages()[0] ?? (await context.newPage());
    await tab.goto(`http://127.0.0.1:${server.address().port}/page/`);
    await tab.waitForFunction(() => typeof window.bench === 'function');
    const result = await tab.evaluate(
      (options) => window.bench(options),
      { ...keys, names, runs },
    );
    return result;
  } finally {
    await context.close();
    server.close();
    await rm(profile, { recursive: true, force: true });
  }
}

async function ringBench(rings) {
  const rig = await Rig.start({ dist: process.env.DOORBELL_WEB_DIST });
  const profile = await mkdtemp(join(tmpdir(), 'doorbell-bench-'));
  const context = await launch(profile);
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(rig.info.app);
    await becomePhone(page, rig);
    await connected(page);
    const times = [];
    let last = 0;
    for (let i = 0; i < rings; i++) {
      const start = performance.timeOrigin + performance.now();
      await rig.call({ op: 'ring' });
      const handle = await page.waitForFunction(
        (after) => {
          const card = document.querySelector('#events article[data-shown]');
          return card && Number(card.dataset.seq) > after ? [Number(card.dataset.seq), Number(card.dataset.shown)] : null;
        },
        last,
        { timeout: 30_000 },
      );
      const [seq, shown] = await handle.jsonValue();
      last = seq;
      times.push(shown - start);
    }
    return { times };
  } finally {
    await context.close();
    await rig.stop();
    await rm(profile, { recursive: true, force: true });
  }
}

const result = mode === 'open' ? await openBench(args[0], Number(args[1] ?? 3)) : await ringBench(Number(args[0] ?? 20));
console.log(JSON.stringify(result));
