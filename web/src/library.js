// Where clips come from: the owner's bucket (read-only key, S3 signed in this page) or a
// folder the user picks. Both are hostile: every object is verified against the pinned
// doorbells before any of it is used, and names that are not FORMAT §8 names are never read.

import { equal } from './bytes.js';
import { parseObjectName } from './format/object.js';
import { verifySource } from './chain/verify.js';
import { planClips } from './chain/clips.js';
import { S3Source } from './s3.js';

/** Objects from files the user picked (a folder, or any selection of .sealed files). */
export class FolderSource {
  constructor(files, onStrangeName = () => {}) {
    this.files = new Map();
    for (const file of files) {
      const name = file.name;
      if (!parseObjectName(name)) {
        onStrangeName(name);
        continue;
      }
      this.files.set(name, file);
    }
  }

  async names() {
    return [...this.files.keys()].sort();
  }

  async read(name) {
    const file = this.files.get(name);
    if (!file) throw new Error(`${name} is not in the folder any more`);
    return new Uint8Array(await file.arrayBuffer());
  }

  describe(name) {
    return name;
  }
}

export function bucketSource(settings, onStrangeName) {
  return new S3Source({ ...settings, onStrangeName });
}

/**
 * Verify everything in `source` and plan its clips. With `remember` (the bucket: the
 * device's own record), the phone's memory is held against it and then updated;
 * a folder is only checked against it (FORMAT §6.3).
 */
export async function survey(app, source, { remember = false, onProgress } = {}) {
  const reader = app.reader();
  const verification = await verifySource(source, reader, app.memory.remembered(), undefined, {
    sync: remember,
    onProgress,
  });
  if (remember) {
    app.memory.remember(verification);
    await app.saveMemory();
  }
  const clips = planClips(verification);
  return { verification, clips, source, reader };
}

/** The decrypted bodies of `entries`, read again from the source and verified again. */
export async function bodies(survey, entries) {
  const out = [];
  for (const entry of entries) {
    const envelope = await survey.reader.verify(await survey.source.read(entry.name));
    // The source may have changed since it was verified: only the same object will do.
    if (!equal(envelope.chainHash, entry.chainHash)) {
      throw new Error(`${entry.name} changed in the source since it was checked: check again`);
    }
    out.push((await survey.reader.openEnvelope(envelope)).body);
  }
  return out;
}
