// Plays decrypted video in a <video> element through Media Source Extensions: a clip
// (init segment and media segments, all in memory) or a live session (fragments as
// they arrive). Decrypted video never touches storage: it goes from the reader to the
// SourceBuffer, and into a file only when the user asks for a download.

import { mimeType } from './mp4.js';

function opened(video) {
  const source = new MediaSource();
  const url = URL.createObjectURL(source);
  video.src = url;
  return new Promise((resolve, reject) => {
    source.addEventListener('sourceopen', () => resolve({ source, url }), { once: true });
    video.addEventListener(
      'error',
      () => reject(new Error(`this browser cannot play the video: ${video.error?.message || 'unknown media error'}`)),
      { once: true },
    );
  });
}

function appended(buffer, bytes) {
  return new Promise((resolve, reject) => {
    const done = () => {
      buffer.removeEventListener('error', failed);
      resolve();
    };
    const failed = () => {
      buffer.removeEventListener('updateend', done);
      reject(new Error('the browser refused a piece of this video'));
    };
    buffer.addEventListener('updateend', done, { once: true });
    buffer.addEventListener('error', failed, { once: true });
    buffer.appendBuffer(bytes);
  });
}

/**
 * Play `init` and `segments` (Uint8Arrays, in index order) in `video`. Gaps between
 * segments are spliced (sequence mode): the page lists them beside the player.
 */
export async function playClip(video, init, segments) {
  const { source, url } = await opened(video);
  const buffer = source.addSourceBuffer(mimeType(init));
  buffer.mode = 'sequence';
  await appended(buffer, init);
  for (const segment of segments) await appended(buffer, segment);
  source.endOfStream();
  video.addEventListener('emptied', () => URL.revokeObjectURL(url), { once: true });
  return video.play().catch(() => {});
}

/** A downloadable MP4 of the clip: the init segment and its segments, concatenated. */
export function clipFile(init, segments) {
  return new Blob([init, ...segments], { type: 'video/mp4' });
}

/** A live session's player: the init segment, then one chunk per frame. */
export class LivePlayer {
  constructor(video) {
    this.video = video;
    this.queue = [];
    this.buffer = null;
    this.busy = false;
    this.closed = false;
  }

  async start(init) {
    const { source, url } = await opened(this.video);
    this.source = source;
    this.url = url;
    this.buffer = source.addSourceBuffer(mimeType(init));
    this.buffer.mode = 'sequence';
    this.buffer.addEventListener('updateend', () => this.pump());
    this.queue.push(init);
    this.pump();
    this.video.play().catch(() => {});
  }

  push(chunk) {
    if (this.closed) return;
    this.queue.push(chunk);
    this.pump();
  }

  pump() {
    if (!this.buffer || this.buffer.updating || this.closed) return;
    const next = this.queue.shift();
    if (next) {
      try {
        this.buffer.appendBuffer(next);
      } catch {
        this.queue.length = 0; // the buffer is full or closed: drop what is late
      }
      return;
    }
    this.keepUp();
  }

  /** Live video shows now, not a growing backlog: jump to the newest buffered frame. */
  keepUp() {
    const ranges = this.buffer.buffered;
    if (!ranges.length) return;
    const end = ranges.end(ranges.length - 1);
    if (end - this.video.currentTime > 0.5) this.video.currentTime = Math.max(0, end - 0.1);
    if (this.video.paused) this.video.play().catch(() => {});
  }

  close() {
    this.closed = true;
    if (this.source && this.source.readyState === 'open') {
      try {
        this.source.endOfStream();
      } catch {
        // already ended
      }
    }
    if (this.url) URL.revokeObjectURL(this.url);
  }
}
