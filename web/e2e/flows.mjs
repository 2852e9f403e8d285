// Steps the end-to-end tests and the benchmark share: a browser, and a page that makes
// its keys and joins the rig's doorbell as a person would.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.DOORBELL_CHROMIUM ?? '/usr/bin/chromium';
export const PHONE = { width: 390, height: 844 };

export function launch(profile) {
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: PHONE,
    deviceScaleFactor: 1,
    args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'],
  });
}

/** Make keys in the page and join the rig's doorbell with its link; returns the rig's lines. */
export async function becomePhone(page, rig) {
  await page.click('#create-keys');
  await page.waitForSelector('#enrol-link');
  const { link } = await rig.call({ op: 'enroll', args: ['--name', 'web'] });
  await page.fill('#enrol-link', link);
  await page.fill('#broker-url', rig.info.ws);
  await page.click('#join');
  const shown = await page.waitForSelector('#enrol-code', { timeout: 30_000 });
  const { code } = await rig.call({ op: 'enroll-code' });
  assert.equal((await shown.textContent()).replace(/\s/g, ''), code.replace(/\s/g, ''));
  const done = await rig.call({ op: 'confirm' });
  assert.equal(done.exit, 0, JSON.stringify(done));
  await page.waitForSelector('#enrolled', { timeout: 30_000 });
  return done;
}

export async function connected(page) {
  await page.click('#enrolled-done');
  await page.waitForSelector('#link-state[data-state="on"]', { timeout: 30_000 });
}
