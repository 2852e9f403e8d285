// Talking to a doorbell with signed commands (PROTOCOL §7): each command is signed by
// this phone's key, and each answer is signed by the doorbell and sealed to this phone,
// so the broker can neither forge nor read either.

import { toHex, randomBytes } from './bytes.js';
import { openAnswer, signCommand } from './protocol/commands.js';

export const ANSWER_SECONDS = 10;

export class Refused extends Error {
  constructor(reason) {
    super(reason);
    this.name = 'Refused';
  }
}

export class Remote {
  /**
   * @param {object} options
   * @param {import('./broker.js').BrokerLink} options.link
   * @param {object} options.phone     this phone (keystore.js): sign(), holder
   * @param {object} options.doorbell  a pinned doorbell: {devicePublicKey, deviceId, deviceIdHex, prefix}
   */
  constructor({ link, phone, doorbell }) {
    this.link = link;
    this.phone = phone;
    this.doorbell = doorbell;
    this.prefix = `${doorbell.prefix}/${doorbell.deviceIdHex.slice(0, 16)}`;
  }

  /** Send command `name` with `args`; resolves to the doorbell's answer, or throws Refused. */
  async call(name, args = {}, { nonce = randomBytes(16), timeoutMs = ANSWER_SECONDS * 1000 } = {}) {
    const payload = await signCommand({
      sign: (message) => this.phone.sign(message),
      signingPublicKey: this.phone.signingPublicKey,
      deviceId: this.doorbell.deviceId,
      name,
      args,
      time: Date.now() / 1000,
      nonce,
    });
    const topic = `${this.prefix}/answer/${toHex(nonce)}`;
    let settle;
    const answered = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    const stop = await this.link.subscribe(topic, async (_topic, raw) => {
      try {
        const body = await openAnswer(raw, this.doorbell.devicePublicKey, nonce, this.phone.holder);
        if (!body.ok) settle.reject(new Refused(String(body.reason ?? 'refused').slice(0, 1000)));
        else settle.resolve(body);
      } catch {
        // Not the doorbell's answer: anyone can publish on a broker.
      }
    });
    const timer = setTimeout(
      () => settle.reject(new Error(`the doorbell did not answer within ${timeoutMs / 1000} s (is it running and connected to the broker?)`)),
      timeoutMs,
    );
    try {
      await this.link.publish(`${this.prefix}/command`, payload);
      return await answered;
    } finally {
      clearTimeout(timer);
      await stop();
    }
  }
}
