// Live view: what the camera sees now, sealed to this phone alone, with the delay from
// the camera to this screen shown as it plays.

import { LiveView } from '../live.js';
import { LivePlayer } from '../media/player.js';
import { h, replace, toast, explain } from '../ui/dom.js';

export function liveView(app) {
  const doorbell = app.doorbells[0];
  const video = h('video', { id: 'live-video', playsinline: true, muted: true, autoplay: true });
  const start = h('button', { class: 'primary', type: 'button', id: 'live-start' }, 'Watch live');
  const stop = h('button', { type: 'button', id: 'live-stop', disabled: true }, 'Stop');
  const latency = h('span', { id: 'live-latency', class: 'pill' }, 'not watching');
  const info = h('p', { class: 'muted small', id: 'live-info' });
  let view = null;
  let player = null;

  const end = (reason) => {
    start.disabled = false;
    stop.disabled = true;
    latency.textContent = 'not watching';
    info.textContent = reason;
    player?.close();
  };

  start.addEventListener('click', async () => {
    if (!app.link) {
      toast('Not connected to the broker: live view goes through it.', { bad: true });
      return;
    }
    start.disabled = true;
    info.textContent = 'Asking the doorbell…';
    player = new LivePlayer(video);
    view = new LiveView({
      link: app.link,
      phone: app.phone,
      doorbell,
      onInit: (init) => player.start(init),
      onFrame: (chunk) => player.push(chunk),
      onStats: (stats) => {
        if (stats.latencyMs !== null) latency.textContent = `${stats.latencyMs} ms behind`;
        latency.dataset.frames = String(stats.frames);
        info.textContent = `${stats.frames} frames${stats.dropped ? `, ${stats.dropped} lost` : ''}${stats.rejected ? `, ${stats.rejected} refused` : ''}`;
      },
      onEnd: end,
    });
    try {
      const details = await view.start();
      stop.disabled = false;
      info.textContent = `${details.width}×${details.height} at ${details.fps} fps, sealed to ${(details.viewers ?? []).join(', ') || 'this phone'}`;
    } catch (error) {
      end('');
      toast(explain(error), { bad: true });
    }
  });
  stop.addEventListener('click', () => view?.stop());
  app.leaving = () => view?.stop();

  if (!doorbell) return h('p', {}, 'Join a doorbell first.');
  return h('section', {}, h('div', { class: 'row' }, h('h2', { class: 'grow' }, 'Live'), latency), video, h('div', { class: 'row' }, start, stop), info);
}
