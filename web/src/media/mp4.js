// Just enough ISO-BMFF to hand a stream to Media Source Extensions: the codec string of
// an init segment (from its avcC box). The bytes are authentic (signed by the doorbell),
// but a reader still never reads past a box.

const CONTAINERS = new Set(['moov', 'trak', 'mdia', 'minf', 'stbl', 'stsd', 'avc1', 'avc3']);

function* boxes(bytes, start, end) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = start;
  while (offset + 8 <= end) {
    let size = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    let header = 8;
    if (size === 1) {
      if (offset + 16 > end) return;
      size = Number(view.getBigUint64(offset + 8));
      header = 16;
    } else if (size === 0) {
      size = end - offset;
    }
    if (size < header || offset + size > end) return;
    yield { type, start: offset + header, end: offset + size };
    offset += size;
  }
}

function find(bytes, start, end, path) {
  for (const box of boxes(bytes, start, end)) {
    if (box.type !== path[0]) continue;
    if (path.length === 1) return box;
    let inner = box.start;
    if (box.type === 'stsd') inner += 8; // version, flags, entry count
    if (box.type === 'avc1' || box.type === 'avc3') inner += 78; // visual sample entry
    if (CONTAINERS.has(box.type)) {
      const found = find(bytes, inner, box.end, path.slice(1));
      if (found) return found;
    }
  }
  return null;
}

/** `avc1.PPCCLL` for an H.264 init segment, or null when it has no avcC. */
export function codecString(init) {
  for (const entry of ['avc1', 'avc3']) {
    const avcC = find(init, 0, init.length, ['moov', 'trak', 'mdia', 'minf', 'stbl', 'stsd', entry, 'avcC']);
    if (avcC && avcC.end - avcC.start >= 4) {
      const hex = (b) => b.toString(16).padStart(2, '0');
      const [, profile, compatibility, level] = init.subarray(avcC.start, avcC.start + 4);
      return `${entry}.${hex(profile)}${hex(compatibility)}${hex(level)}`;
    }
  }
  return null;
}

export function mimeType(init) {
  const codec = codecString(init);
  if (!codec) throw new Error('this clip has no H.264 stream description; it cannot be played here');
  return `video/mp4; codecs="${codec}"`;
}
