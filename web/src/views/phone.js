// This phone: its fingerprint and identity (what the doorbell's owner compares), the
// doorbells it joined, and who else can see their footage (the signed keyring).

import { checkBrokerUrl } from '../broker.js';
import { h, field, toast, explain, printable } from '../ui/dom.js';

export function phoneView(app) {
  const phone = app.phone;
  const url = h('input', { id: 'settings-broker-url', type: 'url', value: app.broker?.url ?? '' });
  const user = h('input', { type: 'text', value: app.broker?.username ?? '' });
  const password = h('input', { type: 'password', value: app.broker?.password ?? '' });
  const save = h('button', { type: 'button', class: 'primary' }, 'Save and reconnect');
  save.addEventListener('click', async () => {
    try {
      await app.setBroker({ url: checkBrokerUrl(url.value.trim()), username: user.value, password: password.value });
      await app.connect();
      toast('Connected to the broker.');
    } catch (error) {
      toast(explain(error), { bad: true });
    }
  });
  const join = h('button', { type: 'button' }, 'Join another doorbell');
  join.addEventListener('click', () => app.show('enrol'));
  const copy = h('button', { type: 'button' }, 'Copy identity');
  copy.addEventListener('click', () => navigator.clipboard?.writeText(phone.identityString).then(() => toast('Copied.')).catch(() => toast('Copying is not allowed here.', { bad: true })));

  return h(
    'section',
    {},
    h('h2', {}, `This phone: ${printable(phone.name)}`),
    h('div', { class: 'card' },
      h('div', { class: 'muted small' }, 'Fingerprint'),
      h('div', { class: 'mono', id: 'fingerprint' }, phone.fingerprint),
      h('p', { class: 'small muted' }, phone.suite === 2
        ? 'Post-quantum keys (ML-KEM-768 + X25519). The secret keys cannot leave this browser.'
        : 'Classical keys (X25519). The secret keys cannot leave this browser.'),
      copy),
    app.doorbells.map((d) => doorbellCard(app, d)),
    h('details', { class: 'card' }, h('summary', {}, 'Broker'), field('WebSocket address', url), field('User', user), field('Password', password), save),
    join,
  );
}

function doorbellCard(app, doorbell) {
  const keyring = doorbell.keyring;
  const mine = app.phone.publicKey;
  const now = Date.now();
  const rows = (keyring?.recipients ?? []).map((r) => {
    const expires = r.expires ? new Date(r.expires).getTime() : null;
    const until = r.expires ? new Date(r.expires).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '';
    const isMe = sameBytes(r.publicKey, mine);
    const allHybrid = r.suite === 'mlkem768-x25519';
    return h('tr', { dataset: { role: r.role } },
      h('td', {}, printable(r.name), isMe ? h('span', { class: 'muted' }, ' (this phone)') : null),
      h('td', {}, r.role),
      h('td', { class: 'small' },
        r.expires ? (expires < now ? h('span', { class: 'bad' }, `expired ${until}`) : `until ${until}`) : '',
        allHybrid ? '' : h('div', { class: 'warn' }, 'not post-quantum')));
  });
  return h('div', { class: 'card doorbell', dataset: { device: doorbell.deviceIdHex.slice(0, 16) } },
    h('h3', {}, `Doorbell ${doorbell.deviceIdHex.slice(0, 16)}`),
    h('p', { class: 'small muted' }, `Topics under “${printable(doorbell.prefix)}”; this phone is ${doorbell.role ?? 'enrolled'}.`),
    keyring
      ? [h('p', {}, `Who can see the footage (keyring epoch ${keyring.epoch}, signed by the doorbell):`),
         h('table', { id: 'keyring' }, h('tr', {}, h('th', {}, 'Phone'), h('th', {}, 'Role'), h('th', {}, '')), rows)]
      : h('p', { class: 'muted' }, 'The keyring has not arrived yet.'));
}

function sameBytes(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
