// Rings and motion as they happen: each event verified and decrypted in this page, its
// snapshot shown, and anything the watch refused (replays, forks, forgeries) said plainly.

import { h, replace, when, printable, toast, explain } from '../ui/dom.js';


export function ringsView(app) {
  const list = h('div', { id: 'events' });
  const refused = h('div', { id: 'rejections' });
  const allow = h('button', { type: 'button', id: 'allow-notifications' }, 'Notify me of rings');
  const reconnect = h('button', { type: 'button' }, 'Reconnect');

  const render = () => {
    replace(
      list,
      app.events.length
        ? app.events.map((event, i) => eventCard(app, event, i === 0))
        : h('p', { class: 'muted' }, 'No rings since this page opened. Rings and motion appear here the moment the doorbell sends them.'),
    );
    replace(
      refused,
      app.rejections.length
        ? [
            h('h3', {}, 'Messages refused'),
            app.rejections.slice(0, 10).map((r) =>
              h('div', { class: 'finding problem' }, h('strong', {}, r.why), h('div', { class: 'small' }, printable(r.what)))),
          ]
        : null,
    );
  };

  if (typeof Notification === 'undefined' || Notification.permission !== 'default') allow.hidden = true;
  allow.addEventListener('click', async () => {
    const answer = await Notification.requestPermission();
    allow.hidden = true;
    if (answer !== 'granted') toast('Notifications are off: rings still show here while the page is open.');
  });
  reconnect.addEventListener('click', () => app.connect().then(() => toast('Connected to the broker.')).catch((error) => toast(explain(error), { bad: true })));

  app.leaving = app.on((kind) => {
    if (kind === 'event' || kind === 'rejected') render();
  });
  render();
  return h('section', {}, h('div', { class: 'row' }, h('h2', { class: 'grow' }, 'Rings'), allow, reconnect), list, refused);
}

function eventCard(app, event, newest) {
  const label = event.type === 'ring' ? 'Ring' : event.type === 'motion' ? 'Motion' : 'Event';
  const image = event.snapshotUrl
    ? h('img', { src: event.snapshotUrl, alt: `snapshot of the ${label.toLowerCase()}`, class: 'snapshot' })
    : h('div', { class: 'noimg' });
  // When the snapshot is on screen, for the benchmark of ring to screen.
  image.addEventListener('load', () => {
    event.shownAt ??= performance.timeOrigin + performance.now();
    image.closest('article')?.setAttribute('data-shown', String(event.shownAt));
  }, { once: true });
  const open = h('button', { type: 'button' }, 'Find the clip');
  open.addEventListener('click', () => app.show('clips', { clip: event.clip }));
  return h(
    'article',
    { class: `card event${newest ? ' big' : ''}`, dataset: { seq: String(event.seq), type: event.type, shown: event.shownAt } },
    image,
    h('div', {},
      h('div', { class: `kind ${event.type}` }, label),
      h('div', {}, when(event.timeUs)),
      h('div', { class: 'muted small' }, `${printable(event.doorbellName)} · object ${event.seq}`),
      event.clip ? open : null),
  );
}
