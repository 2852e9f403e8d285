// Joining a doorbell: the owner runs `doorbell enroll` (or invites from an owner's
// phone), which shows a link and its QR code. This screen takes the link, speaks the
// enrolment protocol over the owner's broker, and shows the code to compare.

import jsQR from 'jsqr';
import { BrokerLink, checkBrokerUrl } from '../broker.js';
import { parseLink } from '../protocol/link.js';
import { enrol } from '../protocol/enrol.js';
import { h, field, replace, toast, explain } from '../ui/dom.js';

export function enrolView(app) {
  const link = h('textarea', { id: 'enrol-link', placeholder: 'doorbell:enroll?v=1&k=…', autocomplete: 'off', spellcheck: 'false' });
  const url = h('input', { id: 'broker-url', type: 'url', placeholder: 'wss://broker.example:8084/', value: app.broker?.url ?? '', autocomplete: 'off' });
  const user = h('input', { id: 'broker-user', type: 'text', value: app.broker?.username ?? '', autocomplete: 'username' });
  const password = h('input', { id: 'broker-password', type: 'password', value: app.broker?.password ?? '', autocomplete: 'current-password' });
  const scan = h('button', { type: 'button', id: 'scan-qr' }, 'Scan the QR code');
  const join = h('button', { class: 'primary', type: 'button', id: 'join' }, 'Join the doorbell');
  const scanner = h('div', { class: 'scanner' });
  const progress = h('div', { id: 'enrol-progress' });

  link.addEventListener('input', () => {
    try {
      const parsed = parseLink(link.value.trim());
      if (!url.value) url.value = `wss://${parsed.host.includes(':') ? `[${parsed.host}]` : parsed.host}:8084/`;
    } catch {
      // Judged when the user presses the button.
    }
  });

  scan.addEventListener('click', () => scanQr(scanner, (text) => {
    link.value = text;
    link.dispatchEvent(new Event('input'));
  }));

  join.addEventListener('click', async () => {
    let parsed;
    let settings;
    try {
      parsed = parseLink(link.value.trim());
      settings = { url: checkBrokerUrl(url.value.trim()), username: user.value, password: password.value };
    } catch (error) {
      toast(explain(error), { bad: true });
      return;
    }
    join.disabled = true;
    replace(progress, h('p', { class: 'muted' }, 'Connecting to the broker…'));
    const brokerLink = new BrokerLink(settings, app.linkState);
    try {
      await brokerLink.connect();
      replace(progress, h('p', { class: 'muted' }, 'Asking the doorbell…'));
      const result = await enrol({
        link: parsed,
        identity: app.phone,
        name: app.phone.name,
        transport: brokerLink,
        onCode: (code) =>
          replace(
            progress,
            h('div', { class: 'card' },
              h('p', {}, 'Check that the doorbell shows the same code, then confirm there:'),
              h('p', { class: 'code', id: 'enrol-code' }, code),
              h('p', { class: 'muted small' }, 'If the codes differ, refuse at the doorbell: someone else is trying to join.')),
          ),
      });
      await app.addDoorbell({
        deviceKey: result.deviceKey,
        devicePublicKey: result.devicePublicKey,
        deviceId: result.deviceId,
        deviceIdHex: result.deviceIdHex,
        prefix: parsed.prefix,
        host: parsed.host,
        port: parsed.port,
        tls: parsed.tls,
        role: result.role,
        keyring: result.keyring,
        enrolledAt: new Date().toISOString(),
      });
      await app.setBroker(settings);
      brokerLink.close();
      const done = h('button', { class: 'primary', type: 'button', id: 'enrolled-done' }, 'Done');
      done.addEventListener('click', () => {
        app.show('rings');
        app.connect().catch((error) => toast(explain(error), { bad: true }));
      });
      replace(
        progress,
        h('div', { class: 'card', id: 'enrolled' },
          h('h3', { class: 'ok' }, `Enrolled as “${app.phone.name}” (${result.role})`),
          result.words
            ? [
                h('p', {}, 'This doorbell’s recovery key: write these 24 words on paper and keep them safe. ',
                  'With them an owner can restore access if every phone is lost. They are shown once.'),
                h('ol', { class: 'words', id: 'recovery-words' }, result.words.map((w) => h('li', {}, w))),
              ]
            : null,
          done),
      );
    } catch (error) {
      brokerLink.close();
      replace(progress, h('p', { class: 'bad', role: 'alert', id: 'enrol-refused' }, explain(error)));
      join.disabled = false;
    }
  });

  return h(
    'section',
    {},
    h('h2', {}, 'Join a doorbell'),
    h('p', { class: 'muted' }, 'At the doorbell run “doorbell enroll”, or invite this phone from an owner’s phone. Paste the link it shows, or scan its QR code.'),
    h('div', { class: 'card' },
      field('Enrolment link', link),
      h('div', { class: 'row' }, scan),
      scanner,
      field('Broker WebSocket address', url),
      field('Broker user (if it needs one)', user),
      field('Broker password', password),
      h('p', { class: 'muted small' }, 'The broker only passes messages along: it cannot read or forge them.'),
      join),
    progress,
  );
}

async function scanQr(container, found) {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
  } catch (error) {
    toast(`the camera is not available (${explain(error)}): paste the link instead`, { bad: true });
    return;
  }
  const video = h('video', { playsinline: true, muted: true });
  const stop = h('button', { type: 'button' }, 'Stop scanning');
  replace(container, video, stop);
  video.srcObject = stream;
  await video.play();
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d', { willReadFrequently: true });
  let running = true;
  const end = () => {
    running = false;
    for (const track of stream.getTracks()) track.stop();
    container.replaceChildren();
  };
  stop.addEventListener('click', end);
  const tick = () => {
    if (!running) return;
    if (video.videoWidth) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      context.drawImage(video, 0, 0);
      const image = context.getImageData(0, 0, canvas.width, canvas.height);
      const code = jsQR(image.data, image.width, image.height, { inversionAttempts: 'attemptBoth' });
      if (code?.data?.startsWith('doorbell:enroll?')) {
        end();
        found(code.data);
        return;
      }
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}
