// The web phone end to end, in real headless Chromium, against the real daemon, a real
// Mosquitto behind a WebSocket listener and a moto S3 server with CORS: a person's
// path from an empty browser to watching a ring's clip and live view, and the attacks
// the page must show (an altered object) or withstand (reading its keys out).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rig } from './rig.mjs';
import { lumaSpread } from './png.mjs';
import { becomePhone, connected, launch } from './flows.mjs';

/** The verdict of a check of the clips, or the page's own words when none comes. */
async function verdict(page) {
  try {
    await page.waitForSelector('#verdict', { timeout: 60_000 });
  } catch {
    const said = await page.textContent('main');
    throw new Error(`no verdict on the clips; the page says: ${said}`);
  }
  return page.getAttribute('#verdict', 'class');
}

/** Every key this page keeps, tried with exportKey: each must refuse. */
async function exportAttempts(page) {
  return page.evaluate(async () => {
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open('doorbell-phone');
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    const keys = [];
    for (const store of db.objectStoreNames) {
      const values = await new Promise((resolve, reject) => {
        const request = db.transaction(store).objectStore(store).getAll();
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
      const walk = (value) => {
        if (value instanceof CryptoKey) keys.push(value);
        else if (value && typeof value === 'object' && !ArrayBuffer.isView(value)) Object.values(value).forEach(walk);
      };
      values.forEach(walk);
    }
    const results = [];
    for (const key of keys) {
      if (key.type === 'public') continue;
      let exported = false;
      for (const format of ['raw', 'pkcs8', 'jwk', 'raw-seed', 'raw-private']) {
        try {
          await crypto.subtle.exportKey(format, key);
          exported = true;
        } catch {
          // refused, as it must be
        }
      }
      results.push({ algorithm: key.algorithm.name, extractable: key.extractable, exported });
    }
    return results;
  });
}

test('a browser becomes a phone, sees a ring, plays its clip and live view, and spots an altered object', { timeout: 300_000 }, async (t) => {
  const rig = await Rig.start({ dist: process.env.DOORBELL_WEB_DIST });
  const profile = await mkdtemp(join(tmpdir(), 'doorbell-chromium-'));
  let context = await launch(profile);
  t.after(async () => {
    await context?.close();
    await rig.stop();
    await rm(profile, { recursive: true, force: true });
  });
  let page = context.pages()[0] ?? (await context.newPage());
  // The notifications the page raises, as the browser would show them.
  await page.addInitScript(() => {
    window.shownNotifications = [];
    window.Notification = class {
      static permission = 'granted';
      static requestPermission = async () => 'granted';
      constructor(title, options) {
        window.shownNotifications.push({ title, body: options?.body });
      }
    };
  });
  const errors = [];
  const watchPage = (p) => {
    p.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
    p.on('console', (message) => {
      if (message.type() === 'error' && /Content Security Policy|Refused to/.test(message.text())) errors.push(message.text());
    });
  };
  watchPage(page);
  await page.goto(rig.info.app);
  let words = [];

  await t.test('makes its keys and enrols with the link, comparing the code', async () => {
    await becomePhone(page, rig);
    words = await page.locator('#recovery-words li').allTextContents();
    assert.equal(words.length, 24, 'the first owner is shown its recovery words');
    await connected(page);
  });

  await t.test('no key can be exported from the page', async () => {
    const attempts = await exportAttempts(page);
    assert.ok(attempts.length >= 3, `expected the X25519, ML-KEM-768 and Ed25519 keys, got ${JSON.stringify(attempts)}`);
    for (const attempt of attempts) {
      assert.equal(attempt.extractable, false, JSON.stringify(attempt));
      assert.equal(attempt.exported, false, JSON.stringify(attempt));
    }
  });

  let ringSeq;
  await t.test('a ring shows its decrypted snapshot', async () => {
    await rig.call({ op: 'ring' });
    const card = await page.waitForSelector('#events article[data-type="ring"] img.snapshot', { timeout: 30_000 });
    await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, card);
    ringSeq = await page.getAttribute('#events article[data-type="ring"]', 'data-seq');
    assert.ok(Number(ringSeq) > 0);
    const shown = await page.evaluate(() => window.shownNotifications);
    assert.deepEqual(shown.map((n) => n.title), ['Someone rang the doorbell']);
  });

  await t.test('the clip from the bucket verifies and plays', async () => {
    await rig.call({ op: 'wait-clip' }, 120_000);
    await page.click('#tabs button[data-view="clips"]');
    const s3 = rig.info.s3;
    await page.fill('#s3-endpoint', s3.endpoint);
    await page.fill('#s3-region', s3.region);
    await page.fill('#s3-bucket', s3.bucket);
    await page.fill('#s3-prefix', s3.prefix);
    await page.fill('#s3-key-id', s3.accessKeyId);
    await page.fill('#s3-secret', s3.secretAccessKey);
    await page.click('#check-bucket');
    assert.equal(await verdict(page), 'ok', await page.textContent('#clips'));
    await page.click('.clip:has(.kind.ring) button.play');
    await page.waitForFunction(() => document.querySelector('#clip-video')?.currentTime > 0.5, null, { timeout: 30_000 });
    await page.evaluate(() => document.querySelector('#clip-video').pause());
    const shot = await page.locator('#clip-video').screenshot();
    assert.ok(lumaSpread(shot) > 10, 'the clip shows a picture, not a blank frame');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('.clip:has(.kind.ring) button.save')]);
    assert.match(download.suggestedFilename(), /^doorbell-ring-[0-9a-f]{8}\.mp4$/);
    const saved = await readFile(await download.path());
    assert.equal(saved.subarray(4, 8).toString('latin1'), 'ftyp', 'the saved clip is an MP4');
    assert.ok(saved.includes(Buffer.from('moof')) && saved.length > 50_000);
    await download.delete(); // decrypted video: not left behind by the test
  });

  await t.test('live view shows frames and its latency', async () => {
    await page.click('#tabs button[data-view="live"]');
    await page.click('#live-start');
    await page.waitForFunction(() => Number(document.querySelector('#live-latency')?.dataset.frames) >= 15, null, { timeout: 30_000 });
    await page.waitForFunction(() => document.querySelector('#live-video').currentTime > 0.2, null, { timeout: 30_000 });
    assert.match(await page.textContent('#live-latency'), /\d+ ms behind/);
    const shot = await page.locator('#live-video').screenshot();
    assert.ok(lumaSpread(shot) > 10, 'live view shows a picture');
    await page.click('#live-stop');
  });

  await t.test('an object altered in the bucket is shown as altered', async () => {
    const { name } = await rig.call({ op: 'tamper' });
    await page.click('#tabs button[data-view="clips"]');
    await page.click('#check-bucket');
    assert.equal(await verdict(page), 'bad');
    const finding = page.locator('.finding.problem[data-code="forged"]');
    assert.match(await finding.first().textContent(), /Altered after the doorbell signed it/);
    assert.match(await finding.first().textContent(), new RegExp(name.replace('.', '\\.')));
  });

  await t.test('a second browser restored from the recovery words opens a downloaded folder', async () => {
    const { folder } = await rig.call({ op: 'copy' });
    const other = await mkdtemp(join(tmpdir(), 'doorbell-chromium-'));
    const second = await launch(other);
    try {
      const tab = second.pages()[0] ?? (await second.newPage());
      watchPage(tab);
      await tab.goto(rig.info.app);
      await tab.click('#restore');
      await tab.fill('#restore-words', words.join(' '));
      await tab.fill('#restore-device', rig.info.device);
      await tab.click('#restore');
      await tab.waitForSelector('#tabs:not([hidden])');
      await tab.click('#tabs button[data-view="clips"]');
      await tab.setInputFiles('#pick-folder', folder);
      await verdict(tab);
      assert.match(await tab.locator('.finding.problem[data-code="forged"]').first().textContent(), /Altered/);
      await tab.click('.clip:has(.kind.ring) button.play');
      await tab.waitForFunction(() => document.querySelector('#clip-video')?.currentTime > 0.5, null, { timeout: 30_000 });
    } finally {
      await second.close();
      await rm(other, { recursive: true, force: true });
    }
  });

  await t.test('every screen fits a phone, and the phone screen shows who can see the footage', async () => {
    for (const view of ['rings', 'clips', 'live', 'phone']) {
      await page.click(`#tabs button[data-view="${view}"]`);
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 390, `the ${view} screen is ${width} px wide on a 390 px phone`);
    }
    const rows = await page.locator('#keyring tr[data-role]').evaluateAll((trs) => trs.map((tr) => [tr.dataset.role, tr.cells[0].textContent]));
    assert.deepEqual(rows.map(([role]) => role).sort(), ['owner', 'recovery']);
    assert.ok(rows.some(([role, name]) => role === 'owner' && name.includes('(this phone)')), JSON.stringify(rows));
    assert.match(await page.textContent('#fingerprint'), /^[0-9a-f]{4}(:[0-9a-f]{4}){7}$/);
  });

  await t.test('the keys survive a reload and a browser restart', async () => {
    await page.click('#tabs button[data-view="phone"]');
    const fingerprint = await page.textContent('#fingerprint');
    await page.reload();
    await page.waitForSelector('#events');
    await page.click('#tabs button[data-view="phone"]');
    assert.equal(await page.textContent('#fingerprint'), fingerprint);
    await context.close();
    context = await launch(profile);
    page = context.pages()[0] ?? (await context.newPage());
    watchPage(page);
    await page.goto(rig.info.app);
    await page.click('#tabs button[data-view="phone"]');
    assert.equal(await page.textContent('#fingerprint'), fingerprint);
    const attempts = await exportAttempts(page);
    assert.ok(attempts.every((a) => !a.exported && !a.extractable));
  });

  assert.deepEqual(errors, [], 'no page errors and no Content-Security-Policy violations');
});
