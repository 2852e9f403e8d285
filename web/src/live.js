// Live view (FORMAT §11, PROTOCOL §7): ask the doorbell for a session, check and decrypt
// each fragment as it arrives, and hand the frames to the player. A lost fragment costs
// the frames until the next keyframe, never the session.

import { fromBase64, randomBytes, toHex } from './bytes.js';
import { LiveFragments, openLiveSession } from './format/live.js';
import { Remote } from './remote.js';

export const RENEW_EVERY_MS = 2000;

export class LiveView {
  /**
   * @param {object} options  link, phone, doorbell (as for Remote), and
   *   onInit(init, details), onFrame(chunk, frame), onStats(stats), onEnd(reason)
   */
  constructor(options) {
    this.options = options;
    this.remote = new Remote(options);
    this.stats = { frames: 0, dropped: 0, rejected: 0, skipped: 0, latencyMs: null, latencies: [] };
    this.ended = false;
  }

  async start() {
    const { link, doorbell, phone } = this.options;
    const nonce = randomBytes(16);
    const topic = `${this.remote.prefix}/live/${toHex(nonce)}`;
    const early = [];
    // Subscribed before asking: the first fragments come at once.
    this.unsubscribe = await link.subscribe(topic, (_t, raw) => (this.fragments ? this.receive(raw) : early.push(raw)), { qos: 0 });
    let answer;
    try {
      answer = await this.remote.call('live', {}, { nonce });
    } catch (error) {
      await this.unsubscribe();
      throw error;
    }
    const session = await openLiveSession(fromBase64(answer.session_object), {
      devicePublicKey: doorbell.devicePublicKey,
      keys: [phone.holder],
    });
    this.session = session;
    this.startedUs = BigInt(session.details.started_us ?? 0);
    this.fragments = new LiveFragments(session, doorbell.devicePublicKey);
    this.keyframed = false;
    await this.options.onInit(fromBase64(session.details.init), session.details);
    this.renewal = setInterval(() => this.renew(), RENEW_EVERY_MS);
    for (const raw of early.splice(0)) this.receive(raw);
    return session.details;
  }

  receive(raw) {
    this.queue = (this.queue ?? Promise.resolve()).then(() => this.openOne(raw));
  }

  async openOne(raw) {
    if (this.ended) return;
    const before = this.fragments.last ?? 0n;
    let fragment;
    try {
      fragment = await this.fragments.open(raw);
    } catch {
      this.stats.rejected += 1;
      this.options.onStats?.(this.stats);
      return;
    }
    const lost = Number(fragment.counter - before - 1n);
    if (lost > 0) {
      this.stats.dropped += lost;
      this.keyframed = false; // frames after a lost one would decode into garbage
    }
    if (fragment.end) {
      this.finish('the doorbell ended the session');
      return;
    }
    if (!this.keyframed && !fragment.keyframe) {
      this.stats.skipped += 1;
      return;
    }
    this.keyframed = true;
    this.stats.frames += 1;
    if (fragment.captureUs >= this.startedUs) {
      const latency = Date.now() - Number(fragment.captureUs / 1000n);
      this.stats.latencyMs = latency;
      this.stats.latencies.push(latency);
      if (this.stats.latencies.length > 300) this.stats.latencies.shift();
    }
    this.options.onFrame(fragment.chunk, fragment);
    this.options.onStats?.(this.stats);
  }

  async renew() {
    try {
      await this.remote.call('live-renew', { session: toHex(this.session.sessionId) });
    } catch (error) {
      this.finish(`the doorbell refused to go on: ${error.message}`);
    }
  }

  finish(reason) {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.renewal);
    this.unsubscribe?.();
    this.options.onEnd?.(reason);
  }

  async stop() {
    if (this.ended) return;
    this.finish('stopped');
    if (this.session) {
      try {
        await this.remote.call('live-stop', { session: toHex(this.session.sessionId) });
      } catch {
        // Without renewals it ends by itself anyway.
      }
    }
  }
}
