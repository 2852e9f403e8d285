// What the web phone holds while it runs: its keys (keystore.js), the doorbells it
// pinned, its settings, its memory of each doorbell's chain (FORMAT §6.3), and the link
// to the broker. Settings and memory live in this browser's IndexedDB beside the keys.

import { BrokerLink } from './broker.js';
import { getRecord, putRecord } from './keystore.js';
import { Reader } from './format/object.js';
import { PhoneMemory } from './chain/memory.js';
import { Watcher } from './watch.js';

export class App {
  constructor({ show, linkState }) {
    this.show = show;
    this.linkState = linkState;
    this.phone = null;
    this.doorbells = [];
    this.broker = null; // {url, username, password}
    this.bucket = null; // S3 settings
    this.memory = new PhoneMemory();
    this.link = null;
    this.events = []; // newest first: decrypted events of this session, in memory only
    this.rejections = []; // what the watch refused, newest first
    this.listeners = new Set();
  }

  async load() {
    this.doorbells = (await getRecord('doorbells')) ?? [];
    this.broker = (await getRecord('broker')) ?? null;
    this.bucket = (await getRecord('bucket')) ?? null;
    const memory = await getRecord('memory');
    if (memory) this.memory = PhoneMemory.fromJSON(memory);
  }

  reader() {
    return new Reader({ devices: this.doorbells.map((d) => d.devicePublicKey), keys: [this.phone.holder] });
  }

  async saveMemory() {
    await putRecord('memory', this.memory.toJSON());
  }

  async addDoorbell(doorbell) {
    this.doorbells = [...this.doorbells.filter((d) => d.deviceIdHex !== doorbell.deviceIdHex), doorbell];
    await putRecord('doorbells', this.doorbells);
  }

  async setBroker(settings) {
    this.broker = settings;
    await putRecord('broker', settings);
  }

  async setBucket(settings) {
    this.bucket = settings;
    await putRecord('bucket', settings);
  }

  /** Connect to the broker and watch every pinned doorbell's events and keyrings. */
  async connect() {
    if (!this.broker) throw new Error('no broker set: enter its WebSocket address on the Phone screen');
    this.disconnect();
    const link = new BrokerLink(this.broker, this.linkState);
    await link.connect();
    this.link = link;
    this.watcher = new Watcher({
      reader: this.reader(),
      memory: this.memory,
      doorbells: this.doorbells,
      ownKey: this.phone.publicKey,
      onEvent: (event) => this.eventArrived(event),
      onKeyring: (device, keyring) => this.keyringArrived(device, keyring),
      onRejected: (rejection) => {
        this.rejections.unshift(rejection);
        this.rejections.length = Math.min(this.rejections.length, 50);
        this.notify('rejected', rejection);
      },
      onRemembered: () => this.saveMemory(),
    });
    const prefixes = [...new Set(this.doorbells.map((d) => d.prefix))];
    for (const prefix of prefixes) {
      await link.subscribe(`${prefix}/+/event`, (topic, bytes) => this.watcher.handle(prefix, topic, bytes));
      await link.subscribe(`${prefix}/+/keyring`, (topic, bytes) => this.watcher.handle(prefix, topic, bytes));
    }
    return link;
  }

  disconnect() {
    this.link?.close();
    this.link = null;
  }

  eventArrived(event) {
    this.events.unshift(event);
    if (this.events.length > 100) {
      const gone = this.events.pop();
      if (gone.snapshotUrl) URL.revokeObjectURL(gone.snapshotUrl);
    }
    this.notify('event', event);
    if (typeof Notification !== 'undefined' && Notification.permission === 'granted') {
      const label = event.type === 'ring' ? 'Someone rang the doorbell' : 'Motion at the door';
      try {
        new Notification(label, { body: event.doorbellName, tag: `doorbell-${event.seq}` });
      } catch {
        // Some browsers only notify from a service worker; the page still shows it.
      }
    }
  }

  async keyringArrived(deviceIdHex, keyring) {
    const doorbell = this.doorbells.find((d) => d.deviceIdHex === deviceIdHex);
    if (doorbell && (!doorbell.keyring || doorbell.keyring.epoch <= keyring.epoch)) {
      await this.addDoorbell({ ...doorbell, keyring });
    }
    this.notify('keyring', { deviceIdHex, keyring });
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  notify(kind, detail) {
    for (const listener of this.listeners) listener(kind, detail);
  }
}
