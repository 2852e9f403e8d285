// Enrolling by the QR code: the page films the code `doorbell enroll` shows with the
// camera (Chromium's fake camera playing a video of it) and joins with what it read.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, PHONE } from './flows.mjs';
import { Rig } from './rig.mjs';

test('a phone joins by scanning the QR code with its camera', { timeout: 180_000 }, async (t) => {
  const rig = await Rig.start({ dist: process.env.DOORBELL_WEB_DIST });
  const profile = await mkdtemp(join(tmpdir(), 'doorbell-chromium-'));
  let context;
  t.after(async () => {
    await context?.close();
    await rig.stop();
    await rm(profile, { recursive: true, force: true });
  });
  const { link } = await rig.call({ op: 'enroll', args: ['--name', 'scanned'] });
  const { video } = await rig.call({ op: 'qr-video', text: link });
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: PHONE,
    args: [
      '--no-sandbox',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-video-capture=${video}`,
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(rig.info.app);
  await page.click('#create-keys');
  await page.click('#scan-qr');
  await page.waitForFunction(() => document.querySelector('#enrol-link').value.startsWith('doorbell:enroll?'), null, { timeout: 30_000 });
  assert.equal(await page.inputValue('#enrol-link'), link);
  await page.fill('#broker-url', rig.info.ws);
  await page.click('#join');
  const shown = await page.waitForSelector('#enrol-code', { timeout: 30_000 });
  const { code } = await rig.call({ op: 'enroll-code' });
  assert.equal((await shown.textContent()).replace(/\s/g, ''), code.replace(/\s/g, ''));
  assert.equal((await rig.call({ op: 'confirm' })).exit, 0);
  await page.waitForSelector('#enrolled', { timeout: 30_000 });
});
