// Which objects make which clip (doorbell/phone/export.py's planning, FORMAT §4.1): clips
// announced by events, from their first segment to the one their clip-end notice names,
// plus runs of segments that belong to no clip (continuous recording). Nothing here reads
// or writes a body: a plan names entries, and a player fetches, opens and plays them.

import { KIND } from './verify.js';
import { Intervals, bisectLeft, bisectRight, compareBig } from './intervals.js';

// Clip and stream ids name files and keys: only 32 lower-case hex digits are accepted.
const ID = /^[0-9a-f]{32}$/;
const isId = (value) => typeof value === 'string' && ID.test(value);
const isIndex = (value) => typeof value === 'bigint' || Number.isInteger(value);

/** The media segments present, per stream, sorted by index: a clip finds its own by
 * bisection instead of scanning every segment of every stream. */
class Segments {
  constructor(entries) {
    this.byKey = new Map(); // "stream:index" -> [stream, index, entry], the first of each
    for (const entry of entries) {
      const contents = entry.contents;
      if (contents === null || contents.kind !== KIND.SEGMENT) continue;
      const { stream, index } = contents.meta;
      if (!isId(stream) || !isIndex(index)) continue;
      const key = `${stream}:${index}`;
      if (!this.byKey.has(key)) this.byKey.set(key, [stream, BigInt(index), entry]);
    }
    this.byStream = new Map(); // stream -> [[index, entry], ...] by index
    for (const [stream, index, entry] of this.byKey.values()) {
      if (!this.byStream.has(stream)) this.byStream.set(stream, []);
      this.byStream.get(stream).push([index, entry]);
    }
    for (const listed of this.byStream.values()) listed.sort((a, b) => compareBig(a[0], b[0]));
  }

  /** The highest index of `stream` present, if it is at least `first`; else null. */
  newest(stream, first) {
    const top = this.byStream.get(stream)?.at(-1)?.[0];
    return top !== undefined && top >= first ? top : null;
  }

  /** [index, entry] of the segments of `stream` with an index in first..last. */
  between(stream, first, last) {
    const listed = this.byStream.get(stream) ?? [];
    const low = bisectLeft(listed, first, (item) => item[0]);
    const high = bisectRight(listed, last, (item) => item[0]);
    return high > low ? listed.slice(low, high) : [];
  }
}

/** A meta number as seconds, or null when absent or not a finite double. */
function seconds(value) {
  if (typeof value !== 'number' && typeof value !== 'bigint') return null;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

/** The most important type of a clip's events: ring over motion. */
function labelOf(types) {
  if (types.includes('ring')) return 'ring';
  if (types.includes('motion')) return 'motion';
  return types.length ? 'event' : 'recording';
}

/** Capture time as export.py stamps its file names: YYYYMMDD-HHMMSS (UTC). */
function stamp(timeUs) {
  const floorMs = timeUs / 1000n - (timeUs % 1000n < 0n ? 1n : 0n);
  const when = new Date(Number(floorMs));
  if (Number.isNaN(when.getTime())) return 'undated';
  const iso = when.toISOString();
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}-${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}`;
}

/**
 * The clips of a verification (or of a list of entries), as export.py plans them, newest
 * first. Each:
 *
 *   { id (the clip id, or "<stream>-<index>" for a run of continuous recording),
 *     clip (the clip id, null for continuous recording),
 *     label / type ('ring' over 'motion', 'event' for other types, 'recording'),
 *     types (of its events, in order), stream, firstIndex, lastIndex (BigInt; lastIndex
 *     null when no clip-end notice is present), timeUs (of its first event, or of the
 *     first segment of a run), position (seconds, stream time of the trigger, or null),
 *     snapshots (its event entries: their bodies are JPEG snapshots, or empty),
 *     init (the stream's first init segment entry, or null), segments (the entries of its
 *     media segments present, in index order), gaps ([[first, last]] index runs missing
 *     inside it), interrupted (no end marker: it runs to the newest segment present),
 *     seconds (total duration of the segments present), preRollSeconds (how long before the
 *     trigger the clip starts, or null), name (export's file name without .mp4),
 *     notes (what export.py would report for it, in its words), playable }
 *
 * The segments present are walked, never every index a (signed) notice names: a clip-end
 * may claim index 2^63, and missing indexes are reported as runs.
 */
export function planClips(verification) {
  const entries = Array.isArray(verification) ? verification : verification.entries;
  const segments = new Segments(entries);
  const inits = new Map();
  for (const entry of entries) {
    if (entry.contents?.kind !== KIND.INIT) continue;
    const stream = entry.contents.meta.stream;
    if (typeof stream === 'string' && !inits.has(stream)) inits.set(stream, entry);
  }
  // Newest first, for a player's list: export's time order, reversed.
  return plan(entries, segments)
    .map((clip) => describe(clip, segments, inits.get(clip.stream) ?? null))
    .reverse();
}

function plan(entries, segments) {
  const clips = new Map();
  const ends = new Map();
  for (const entry of entries) {
    const contents = entry.contents;
    if (contents === null) continue;
    const meta = contents.meta;
    if (contents.kind === KIND.EVENT && isId(meta.clip) && isId(meta.stream)) {
      let clip = clips.get(meta.clip);
      if (clip === undefined) {
        if (!isIndex(meta.first_index)) continue;
        clip = newClip(meta.clip, meta.stream, BigInt(meta.first_index), null, contents.timeUs);
        clip.position = seconds(meta.position);
        clips.set(meta.clip, clip);
      }
      clip.types.push(String(meta.type ?? 'event'));
      clip.snapshots.push(entry);
    } else if (
      contents.kind === KIND.NOTICE &&
      meta.notice === 'clip-end' &&
      isId(meta.clip) &&
      isIndex(meta.last_index)
    ) {
      ends.set(meta.clip, BigInt(meta.last_index));
    }
  }
  const covered = new Map();
  for (const clip of clips.values()) {
    clip.lastIndex = ends.get(clip.id) ?? null;
    const last = clip.lastIndex ?? segments.newest(clip.stream, clip.firstIndex) ?? clip.firstIndex;
    // A range, not a set of indexes: a signed clip-end may name index 2^63.
    if (!covered.has(clip.stream)) covered.set(clip.stream, []);
    covered.get(clip.stream).push([clip.firstIndex, last]);
  }
  const inClips = new Map([...covered].map(([stream, ranges]) => [stream, new Intervals(ranges)]));
  const loose = [...segments.byKey.values()]
    .filter(([stream, index]) => !inClips.get(stream)?.has(index))
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : compareBig(a[1], b[1])));
  const runs = [];
  for (const [stream, index, entry] of loose) {
    const run = runs.at(-1);
    if (run !== undefined && run.stream === stream && run.lastIndex === index - 1n) {
      run.lastIndex = index;
    } else {
      runs.push(newClip(`${stream}-${index}`, stream, index, index, entry.contents.timeUs, false));
    }
  }
  // In time order; the sort is stable, so clips of one time keep their order.
  return [...clips.values(), ...runs].sort((a, b) => compareBig(a.timeUs, b.timeUs));
}

function newClip(id, stream, firstIndex, lastIndex, timeUs, announced = true) {
  return { id, announced, stream, firstIndex, lastIndex, timeUs, position: null, types: [], snapshots: [] };
}

function describe(clip, segments, init) {
  const label = labelOf(clip.types);
  const name = `${stamp(clip.timeUs)}-${label}-${clip.id.slice(0, 8)}`;
  const interrupted = clip.lastIndex === null;
  const last = clip.lastIndex ?? segments.newest(clip.stream, clip.firstIndex) ?? clip.firstIndex - 1n;
  const present = last >= clip.firstIndex ? segments.between(clip.stream, clip.firstIndex, last) : [];
  const notes = [];
  if (init === null) notes.push(`the init segment of stream ${clip.stream.slice(0, 8)} is missing`);
  else if (interrupted) notes.push('no end marker (recording interrupted); exported what exists');
  const gaps = [];
  let expected = clip.firstIndex;
  for (const index of [...present.map(([i]) => i), last + 1n]) {
    if (index > expected) gaps.push([expected, index - 1n]);
    expected = index + 1n;
  }
  if (init !== null) {
    for (const [first, end] of gaps) {
      const run = first === end ? `segment ${first} is` : `segments ${first}..${end} are`;
      notes.push(`${run} missing; the clip has a gap`);
    }
    if (!present.length) notes.push('no media segment could be exported');
  }
  let total = 0;
  let firstStart = null;
  for (const [, entry] of present) {
    const meta = entry.contents.meta;
    total += seconds(meta.duration) ?? 0;
    firstStart ??= seconds(meta.start);
  }
  return {
    id: clip.id,
    clip: clip.announced ? clip.id : null,
    label,
    type: label,
    types: clip.types,
    stream: clip.stream,
    firstIndex: clip.firstIndex,
    lastIndex: clip.lastIndex,
    timeUs: clip.timeUs,
    position: clip.position,
    snapshots: clip.snapshots,
    init,
    segments: present.map(([, entry]) => entry),
    gaps,
    interrupted,
    seconds: total,
    preRollSeconds: clip.position !== null && firstStart !== null ? clip.position - firstStart : null,
    name,
    notes,
    playable: init !== null && present.length > 0,
  };
}
