// The web phone's entry point: loads this browser's keys, then shows one of four
// screens (rings, clips, live view, this phone). Everything it decrypts stays in this
// page's memory; keys stay in this browser, non-extractable.

import { loadPhone } from './keystore.js';
import { h, replace, toast, explain } from './ui/dom.js';
import { App } from './state.js';
import { setupView } from './views/setup.js';
import { enrolView } from './views/enrol.js';
import { ringsView } from './views/rings.js';
import { clipsView } from './views/clips.js';
import { liveView } from './views/live.js';
import { phoneView } from './views/phone.js';

const VIEWS = { rings: ringsView, clips: clipsView, live: liveView, phone: phoneView, enrol: enrolView };

async function main() {
  const app = new App({
    show: (name, options) => show(app, name, options),
    linkState: (state, why) => {
      const pill = document.getElementById('link-state');
      pill.dataset.state = state;
      pill.textContent = state === 'on' ? 'connected' : state === 'bad' ? 'broker problem' : 'offline';
      pill.title = why ?? '';
    },
  });
  window.doorbell = app; // for the end-to-end tests and the curious: holds no key bytes
  if ('serviceWorker' in navigator && location.protocol !== 'file:') {
    navigator.serviceWorker.register('sw.js').catch(() => {});
  }
  for (const button of document.querySelectorAll('#tabs button')) {
    button.addEventListener('click', () => show(app, button.dataset.view));
  }
  app.phone = await loadPhone();
  if (!app.phone) {
    replace(document.getElementById('view'), setupView(app));
    return;
  }
  await app.load();
  if (app.doorbells.length === 0) show(app, 'enrol');
  else {
    show(app, 'rings');
    if (app.broker) app.connect().catch((error) => toast(explain(error), { bad: true }));
  }
}

function show(app, name, options = {}) {
  const view = VIEWS[name] ?? ringsView;
  app.leaving?.();
  app.leaving = null;
  const tabs = document.getElementById('tabs');
  tabs.hidden = !app.phone || app.doorbells.length === 0;
  for (const button of tabs.querySelectorAll('button')) {
    if (button.dataset.view === name) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
  }
  const main = document.getElementById('view');
  replace(main, view(app, options));
  main.dataset.view = name;
  main.focus({ preventScroll: true });
}

main().catch((error) => {
  replace(
    document.getElementById('view'),
    h('div', { class: 'card' }, h('h2', {}, 'This phone could not start'), h('p', {}, explain(error))),
  );
});
