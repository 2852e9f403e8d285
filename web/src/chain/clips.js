// Plans playable clips from verified objects (doorbell/phone/export.py's planning): clips
// announced by events, plus runs of segments that belong to no clip (continuous recording).
// Nothing here reads a body: a player fetches and opens `init` and `segments` itself.

import { KIND } from './verify.js';
import { Intervals, bisectLeft, bisectRight, compareBig } from './intervals.js';
import { big, isInteger } from './numbers.js';

const ID = /^[0-9a-f]{32}$/;
// Clip and stream ids name files and keys: only 32 lower-case hex digits are accepted.
const isId = (value) => typeof value === 'string' && ID.test(value);

/** The media segments present, per stream, sorted by index. */
class Segments {
  constructor(entries) {
    this.byKey = new Map(); // "stream:index" -> [stream, index, entry]
    for (const entry of entries) {
      const contents = entry.contents;
      if (contents === null || contents.kind !== KIND.SEGMENT) continue;
      const { stream, index } = contents.meta;
      if (!isId(stream) || !isInteger(index)) continue;
      const key = `${stream}:${big(index)}`;
      if (!this.byKey.has(key)) this.byKey.set(key, [stream, big(index), entry]);
    }
    this.byStream = new Map();
    for (const [stream, index, entry] of this.byKey.values()) {
      if (!this.byStream.has(stream)) this.byStream.set(stream, []);
      this.byStream.get(stream).push([index, entry]);
    }
    for (const listed of this.byStream.values()) listed.sort((a, b) => compareBig(a[0], b[0]));
  }

  /** The highest index of `stream` present, if it is at least `first`. */
  newest(stream, first) {
    const listed = this.byStream.get(stream);
    if (!listed || !listed.length) return null;
    const top = listed[listed.length - 1][0];
    return top >= first ? top : null;
  }

  /** [index, entry] of the segments of `stream` with an index in first..last. */
  between(stream, first, last) {
    const listed = this.byStream.get(stream) ?? [];
    const low = bisectLeft(listed, first, (x) => x[0]);
    const high = bisectRight(listed, last, (x) => x[0]);
    return high > low ? listed.slice(low, high) : [];
  }
}

/** A meta number as seconds, or null when absent or not finite. */
function seconds(value) {
  if (typeof value === 'bigint') return Number(value);
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function label(types) {
  if (types.includes('ring')) return 'ring';
  if (types.includes('motion')) return 'motion';
  return types.length ? 'event' : 'recording';
}

/**
 * Clips for a player, newest first: {clip (id, or null for continuous recording), type
 * ('ring', 'motion', 'event' for another event type, 'recording'), stream, timeUs (of the
 * first event, or the first segment), seconds, init (entry or null), segments (entries in
 * index order), gaps ([[first, last]] indexes missing inside the clip), interrupted (no
 * clip-end), preRollSeconds (how long before the first trigger the clip starts, or null),
 * events (the clip's event entries, whose bodies are snapshots)}.
 */
export function planClips(verification) {
  const entries = verification.entries;
  const segments = new Segments(entries);
  const inits = new Map();
  for (const entry of entries) {
    if (entry.contents?.kind === KIND.INIT) {
      const stream = entry.contents.meta.stream;
      if (typeof stream === 'string' && !inits.has(stream)) inits.set(stream, entry);
    }
  }
  const clips = new Map();
  const ends = new Map();
  for (const entry of entries) {
    const contents = entry.contents;
    if (contents === null) continue;
    const meta = contents.meta;
    if (contents.kind === KIND.EVENT && isId(meta.clip) && isId(meta.stream)) {
      let clip = clips.get(meta.clip);
      if (clip === undefined) {
        if (!isInteger(meta.first_index)) continue;
        clip = {
          id: meta.clip,
          stream: meta.stream,
          firstIndex: big(meta.first_index),
          lastIndex: null,
          timeUs: contents.timeUs,
          position: seconds(meta.position),
          types: [],
          events: [],
        };
        clips.set(meta.clip, clip);
      }
      clip.types.push(String(meta.type ?? 'event'));
      clip.events.push(entry);
    } else if (
      contents.kind === KIND.NOTICE &&
      meta.notice === 'clip-end' &&
      isId(meta.clip) &&
      isInteger(meta.last_index)
    ) {
      ends.set(meta.clip, big(meta.last_index));
    }
  }
  const covered = new Map();
  for (const clip of clips.values()) {
    clip.lastIndex = ends.get(clip.id) ?? null;
    let last = clip.lastIndex;
    if (last === null) last = segments.newest(clip.stream, clip.firstIndex) ?? clip.firstIndex;
    // A range, not a set of indexes: a signed clip-end may name index 2^63.
    if (!covered.has(clip.stream)) covered.set(clip.stream, []);
    covered.get(clip.stream).push([clip.firstIndex, last]);
  }
  const inClips = new Map([...covered].map(([stream, ranges]) => [stream, new Intervals(ranges)]));
  const loose = [...segments.byKey.values()]
    .filter(([stream, index]) => !inClips.has(stream) || !inClips.get(stream).has(index))
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : compareBig(a[1], b[1])));
  const runs = [];
  for (const [stream, index, entry] of loose) {
    const run = runs[runs.length - 1];
    if (run && run.stream === stream && run.lastIndex === index - 1n) {
      run.lastIndex = index;
    } else {
      runs.push({ id: null, stream, firstIndex: index, lastIndex: index, timeUs: entry.contents.timeUs, position: null, types: [], events: [] });
    }
  }
  const planned = [...clips.values(), ...runs].map((clip) => describe(clip, segments, inits));
  // Newest first; the sort is stable, so clips of one time keep export's order, reversed.
  return planned.reverse().sort((a, b) => compareBig(b.timeUs, a.timeUs));
}

function describe(clip, segments, inits) {
  const interrupted = clip.lastIndex === null;
  let last = clip.lastIndex;
  if (last === null) {
    const newest = segments.newest(clip.stream, clip.firstIndex);
    last = newest === null ? clip.firstIndex - 1n : newest;
  }
  const present = last >= clip.firstIndex ? segments.between(clip.stream, clip.firstIndex, last) : [];
  // The segments present, not every index a (signed) notice names: missing runs as runs.
  const gaps = [];
  let expected = clip.firstIndex;
  for (const index of [...present.map(([i]) => i), last + 1n]) {
    if (index > expected) gaps.push([expected, index - 1n]);
    expected = index + 1n;
  }
  let total = 0;
  let firstStart = null;
  for (const [, entry] of present) {
    const meta = entry.contents.meta;
    total += seconds(meta.duration) ?? 0;
    if (firstStart === null) firstStart = seconds(meta.start);
  }
  const preRoll = clip.position !== null && firstStart !== null ? clip.position - firstStart : null;
  return {
    clip: clip.id,
    type: label(clip.types),
    stream: clip.stream,
    timeUs: clip.timeUs,
    seconds: total,
    init: inits.get(clip.stream) ?? null,
    segments: present.map(([, entry]) => entry),
    gaps,
    interrupted: clip.id !== null && interrupted,
    preRollSeconds: preRoll,
    events: clip.events,
  };
}
