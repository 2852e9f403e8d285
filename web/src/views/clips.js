// Clips: check everything in the bucket (or a folder), list the clips, play one, save it
// as MP4. Every problem the chain rules find is shown in words, with what it means.

import { bodies, bucketSource, FolderSource, survey } from '../library.js';
import { clipFile, playClip } from '../media/player.js';
import { h, field, replace, toast, explain, when, printable } from '../ui/dom.js';

/** What each finding means to a person; the finding's own message says which object. */
const HEADLINES = {
  forged: 'Altered after the doorbell signed it, or forged',
  malformed: 'Not a Doorbell object (damaged or cut short)',
  untrusted: 'Signed by a doorbell this phone does not know',
  unopenable: 'Signed by the doorbell, but it does not decrypt',
  rejected: 'Signed by the doorbell, but its contents break the format',
  unreadable: 'Could not be fetched',
  missing: 'Missing: deleted, or not uploaded yet',
};

export function clipsView(app, options = {}) {
  const s = app.bucket ?? {};
  const input = (id, value, attrs = {}) => h('input', { id, type: 'text', value: value ?? '', autocomplete: 'off', spellcheck: 'false', ...attrs });
  const endpoint = input('s3-endpoint', s.endpoint, { type: 'url', placeholder: 'https://s3.eu-west-1.amazonaws.com' });
  const region = input('s3-region', s.region ?? 'us-east-1');
  const bucket = input('s3-bucket', s.bucket);
  const prefix = input('s3-prefix', s.prefix ?? 'doorbells/');
  const keyId = input('s3-key-id', s.accessKeyId);
  const secret = input('s3-secret', s.secretAccessKey, { type: 'password' });
  const check = h('button', { class: 'primary', type: 'button', id: 'check-bucket' }, 'Check the bucket');
  const folder = h('input', { type: 'file', id: 'pick-folder', webkitdirectory: true, multiple: true, hidden: true });
  const pick = h('button', { type: 'button', id: 'open-folder' }, 'Open a folder…');
  const status = h('p', { class: 'muted', role: 'status', id: 'clips-status' });
  const results = h('div', { id: 'clips' });
  const player = h('div', { id: 'player' });

  const settings = h('details', { class: 'card', open: !app.bucket },
    h('summary', {}, 'Bucket (read-only key)'),
    field('Endpoint', endpoint), field('Region', region), field('Bucket', bucket), field('Prefix', prefix),
    field('Access key id', keyId), field('Secret access key', secret),
    h('p', { class: 'muted small' }, 'Use a key that can only list and read: the README shows the policy and the CORS rule the bucket needs.'));

  async function run(source, remember) {
    check.disabled = pick.disabled = true;
    status.textContent = 'Checking every object…';
    replace(results);
    replace(player);
    try {
      const found = await survey(app, source, {
        remember,
        onProgress: (done, total) => (status.textContent = `Checking every object… ${done} of ${total}`),
      });
      status.textContent = '';
      replace(results, report(app, found, player, options.clip));
    } catch (error) {
      status.textContent = '';
      replace(results, h('p', { class: 'bad', role: 'alert' }, explain(error)));
    } finally {
      check.disabled = pick.disabled = false;
    }
  }

  check.addEventListener('click', async () => {
    const values = {
      endpoint: endpoint.value.trim(), region: region.value.trim(), bucket: bucket.value.trim(),
      prefix: prefix.value.trim(), accessKeyId: keyId.value.trim(), secretAccessKey: secret.value,
    };
    let source;
    const strange = [];
    try {
      source = bucketSource(values, (name) => strange.push(name));
    } catch (error) {
      toast(explain(error), { bad: true });
      return;
    }
    await app.setBucket(values);
    settings.open = false;
    await run(source, true);
    if (strange.length) toast(`${strange.length} name(s) in the bucket are not Doorbell objects and were ignored`);
  });
  pick.addEventListener('click', () => folder.click());
  folder.addEventListener('change', () => {
    const strange = [];
    const source = new FolderSource(folder.files, (name) => strange.push(name));
    run(source, false);
    if (strange.length) toast(`${strange.length} file(s) in the folder are not Doorbell objects and were ignored`);
  });

  return h('section', {}, h('h2', {}, 'Clips'), settings, h('div', { class: 'row' }, check, pick, folder), status, player, results);
}

function report(app, found, player, wanted) {
  const { verification, clips } = found;
  const problems = verification.findings.filter((f) => f.problem);
  const notes = verification.findings.filter((f) => !f.problem);
  const summary = problems.length
    ? h('p', { class: 'bad', id: 'verdict' }, `${problems.length} problem(s): some footage was altered, removed or forged.`)
    : h('p', { class: 'ok', id: 'verdict' }, `All ${verification.entries.length} object(s) check out: signed by your doorbell, in an unbroken chain.`);
  return [
    summary,
    problems.map((f) => finding(f, true)),
    clips.length
      ? clips.map((clip) => clipRow(found, clip, player, clip.clip === wanted))
      : h('p', { class: 'muted' }, 'No clips here yet.'),
    notes.length ? h('details', {}, h('summary', {}, `${notes.length} note(s)`), notes.map((f) => finding(f, false))) : null,
  ];
}

function finding(f, problem) {
  const headline = HEADLINES[f.code] ?? null;
  return h('div', { class: `finding ${problem ? 'problem' : 'note'}`, dataset: { code: f.code } },
    headline ? h('strong', {}, headline) : null,
    h('div', { class: 'small' }, `${printable(f.where)}: ${printable(f.message)}`));
}

function clipRow(found, clip, player, autoplay) {
  const label = clip.type === 'ring' ? 'Ring' : clip.type === 'motion' ? 'Motion' : 'Recording';
  const play = h('button', { type: 'button', class: 'primary play' }, 'Play');
  const save = h('button', { type: 'button', class: 'save' }, 'Save MP4');
  const facts = [
    clip.timeUs !== undefined ? when(clip.timeUs) : null,
    clip.seconds !== undefined ? `${clip.seconds.toFixed(1)} s` : null,
    clip.interrupted ? 'interrupted' : null,
    clip.gaps?.length ? `${clip.gaps.length} gap(s)` : null,
  ].filter(Boolean).join(' · ');

  async function load() {
    if (!clip.init) throw new Error('this clip’s stream description (init segment) is missing: it cannot be played');
    const [init, ...segments] = await bodies(found, [clip.init, ...clip.segments]);
    return { init, segments };
  }

  play.addEventListener('click', async () => {
    play.disabled = true;
    try {
      const { init, segments } = await load();
      const video = h('video', { controls: true, playsinline: true, muted: true, id: 'clip-video' });
      replace(player, h('div', { class: 'card' }, h('div', { class: 'kind' }, `${label} · ${facts}`), video,
        clip.gaps?.length ? h('p', { class: 'warn small' }, `This clip has ${clip.gaps.length} gap(s): the missing seconds are skipped.`) : null));
      await playClip(video, init, segments);
      player.scrollIntoView({ block: 'nearest' });
    } catch (error) {
      toast(explain(error), { bad: true });
    } finally {
      play.disabled = false;
    }
  });
  save.addEventListener('click', async () => {
    try {
      const { init, segments } = await load();
      const url = URL.createObjectURL(clipFile(init, segments));
      const a = h('a', { href: url, download: `doorbell-${label.toLowerCase()}-${String(clip.clip ?? 'recording').slice(0, 8)}.mp4` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      toast(explain(error), { bad: true });
    }
  });
  const row = h('div', { class: 'card clip', dataset: { clip: clip.clip ?? '' } },
    h('div', { class: 'grow' }, h('div', { class: `kind ${clip.type}` }, label), h('div', { class: 'small muted' }, facts)),
    h('div', { class: 'row' }, play, save));
  if (autoplay) queueMicrotask(() => play.click());
  return row;
}
