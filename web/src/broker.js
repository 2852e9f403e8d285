// The page's link to the owner's MQTT broker, over WebSocket (the only way a browser
// speaks MQTT). It carries sealed objects and enrolment messages, which the page
// verifies itself: the broker is trusted with nothing but delivering bytes.

import mqtt from 'mqtt';

/** The largest message a doorbell sends (an event, padded: FORMAT §4), with room. */
export const MAX_MESSAGE = 8 * 1024 * 1024;

export class BrokerError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BrokerError';
  }
}

/** Whether `topic` matches the MQTT subscription `filter` (`+` and `#` wildcards). */
export function topicMatches(filter, topic) {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

export function checkBrokerUrl(text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new BrokerError(`"${text}" is not a URL: expected ws://host:port/ or wss://host:port/`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new BrokerError(
      `the broker URL must start with wss:// (or ws:// on your own network), not ${url.protocol}//`,
    );
  }
  return url.href;
}

export class BrokerLink {
  /**
   * @param {{url: string, username?: string, password?: string}} settings
   * @param {(state: 'on'|'off'|'bad', why?: string) => void} onState
   */
  constructor(settings, onState = () => {}) {
    this.settings = { ...settings, url: checkBrokerUrl(settings.url) };
    this.onState = onState;
    this.handlers = new Map(); // filter -> Set of handlers
    this.client = null;
  }

  /** Connect; resolves once connected, rejects with a reason a person can act on. */
  connect({ timeoutMs = 15000 } = {}) {
    const { url, username, password } = this.settings;
    const client = mqtt.connect(url, {
      protocolVersion: 5,
      username: username || undefined,
      password: password || undefined,
      clean: true,
      reconnectPeriod: 2000,
      connectTimeout: timeoutMs,
      properties: { maximumPacketSize: MAX_MESSAGE + 65536 },
      resubscribe: true,
      // The default runs keep-alive timers in a worker made from a blob: URL, which the
      // page's Content-Security-Policy (worker-src 'self') rightly refuses.
      timerVariant: 'native',
    });
    this.client = client;
    client.on('message', (topic, payload) => this.dispatch(topic, payload));
    client.on('connect', () => this.onState('on'));
    client.on('offline', () => this.onState('off', 'the broker is unreachable; retrying'));
    client.on('error', (error) => this.onState('bad', describe(error, url)));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new BrokerError(`the broker at ${url} did not answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const connected = () => {
        cleanup();
        resolve(this);
      };
      const failed = (error) => {
        cleanup();
        client.end(true);
        reject(new BrokerError(describe(error, url)));
      };
      const cleanup = () => {
        clearTimeout(timer);
        client.off('connect', connected);
        client.off('error', failed);
      };
      client.on('connect', connected);
      client.on('error', failed);
    });
  }

  dispatch(topic, payload) {
    if (payload.length > MAX_MESSAGE) return;
    const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    for (const [filter, handlers] of this.handlers) {
      if (!topicMatches(filter, topic)) continue;
      for (const handler of handlers) handler(topic, bytes);
    }
  }

  /** Subscribe `handler(topic, bytes)` to `filter`; resolves to an unsubscribe function. */
  async subscribe(filter, handler, { qos = 1 } = {}) {
    let handlers = this.handlers.get(filter);
    const fresh = !handlers;
    if (fresh) {
      handlers = new Set();
      this.handlers.set(filter, handlers);
    }
    handlers.add(handler);
    if (fresh) {
      const granted = await this.client.subscribeAsync(filter, { qos });
      const refused = granted.filter((g) => g.qos >= 0x80);
      if (refused.length) {
        this.handlers.delete(filter);
        throw new BrokerError(`the broker refused the subscription to ${filter} (check the user's ACL)`);
      }
    }
    return async () => {
      handlers.delete(handler);
      if (handlers.size === 0 && this.handlers.get(filter) === handlers) {
        this.handlers.delete(filter);
        if (this.client.connected) await this.client.unsubscribeAsync(filter);
      }
    };
  }

  async publish(topic, bytes, { qos = 1, retain = false } = {}) {
    await this.client.publishAsync(topic, bytes, { qos, retain });
  }

  close() {
    if (this.client) this.client.end(true);
    this.client = null;
    this.handlers.clear();
    this.onState('off');
  }
}

function describe(error, url) {
  const text = String(error?.message ?? error);
  if (/not authorized|bad user name or password|code 5|code 4|135|134/i.test(text)) {
    return `the broker at ${url} refused the user name or password`;
  }
  return `cannot reach the broker at ${url} (is its WebSocket listener on, and the address right?): ${text}`;
}
