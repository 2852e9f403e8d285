// First start: this browser has no keys yet. Make them here (they never leave it), or
// restore them from the 24 recovery words of an owner's paper key.

import { toHex } from '../bytes.js';
import { createPhone } from '../keystore.js';
import { deviceId, parseDeviceKey } from '../protocol/identity.js';
import { h, field, toast, explain } from '../ui/dom.js';

export function setupView(app) {
  const name = h('input', { type: 'text', value: 'web phone', maxlength: 64, autocomplete: 'off' });
  const words = h('textarea', { placeholder: 'word1 word2 … word24', autocomplete: 'off', spellcheck: 'false' });
  const device = h('input', { id: 'restore-device', type: 'text', placeholder: 'dbdev-ed25519-…', autocomplete: 'off', spellcheck: 'false' });
  const restoring = h('div', { hidden: true },
    field('Your 24 recovery words', words),
    field('The doorbell’s key (printed beside the words, and by “doorbell status”)', device));
  words.id = 'restore-words';
  const create = h('button', { class: 'primary', type: 'button', id: 'create-keys' }, 'Create this phone’s keys');
  const restore = h('button', { type: 'button', id: 'restore' }, 'Restore from recovery words');
  const status = h('p', { class: 'muted', role: 'status' });

  async function make(recoveryWords) {
    let pinned = null;
    try {
      if (recoveryWords !== undefined) pinned = parseDeviceKey(device.value);
    } catch (error) {
      toast(explain(error), { bad: true });
      return;
    }
    create.disabled = restore.disabled = true;
    status.textContent = 'Making keys in this browser…';
    try {
      app.phone = await createPhone({ name: name.value.trim(), recoveryWords });
      await app.load();
      if (pinned) {
        // The recovery key reads every clip sealed since it was made: pin its doorbell.
        const id = deviceId(pinned);
        await app.addDoorbell({ devicePublicKey: pinned, deviceId: id, deviceIdHex: toHex(id), prefix: 'doorbell', role: 'recovery' });
      }
      app.show(app.doorbells.length ? 'rings' : 'enrol');
    } catch (error) {
      status.textContent = '';
      toast(explain(error), { bad: true });
      create.disabled = restore.disabled = false;
    }
  }

  create.addEventListener('click', () => make(undefined));
  restore.addEventListener('click', () => {
    if (restoring.hidden) {
      restoring.hidden = false;
      words.focus();
      return;
    }
    make(words.value);
  });

  return h(
    'section',
    { class: 'setup' },
    h('h2', {}, 'Make this browser a Doorbell phone'),
    h(
      'p',
      {},
      'Your doorbell encrypts every ring, clip and live view for the phones you enrol. ',
      'This page makes a key pair here; the secret half cannot be copied out of this browser, ',
      'not even by this page.',
    ),
    h('div', { class: 'card' }, field('Name of this phone (shown to the doorbell’s other phones)', name), h('div', { class: 'row' }, create, restore), restoring, status),
  );
}
