// The doorbell side of the end-to-end tests: tests/web_rig.py runs a real daemon, a
// real Mosquitto behind a WebSocket listener, a moto S3 server with CORS and
// `doorbell-phone web`, and takes one JSON command per line on stdin.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const python = process.env.DOORBELL_PYTHON ?? join(root, '.venv', 'bin', 'python');

export class Rig {
  static async start(options = {}) {
    const rig = new Rig(options);
    rig.info = await rig.next(120_000);
    if (rig.info.error) throw new Error(`the rig did not start: ${rig.info.error}`);
    return rig;
  }

  constructor(options) {
    this.process = spawn(python, [join(root, 'tests', 'web_rig.py'), JSON.stringify(options)], {
      cwd: root,
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.lines = [];
    this.waiting = [];
    createInterface({ input: this.process.stdout }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      const message = JSON.parse(line);
      const waiter = this.waiting.shift();
      if (waiter) waiter(message);
      else this.lines.push(message);
    });
    this.exited = new Promise((resolve) => this.process.on('exit', resolve));
  }

  next(timeoutMs = 60_000) {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the rig said nothing for ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push((message) => {
        clearTimeout(timer);
        resolve(message);
      });
      this.exited.then((code) => reject(new Error(`the rig exited with ${code}`)));
    });
  }

  /** Send one command; resolves to its answer, or throws the rig's error. */
  async call(command, timeoutMs = 60_000) {
    this.process.stdin.write(`${JSON.stringify(command)}\n`);
    const answer = await this.next(timeoutMs);
    if (answer.error) throw new Error(`rig ${command.op}: ${answer.error}`);
    return answer;
  }

  async stop() {
    if (this.process.exitCode !== null) return;
    this.process.stdin.end();
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 30_000);
    await this.exited;
    clearTimeout(timer);
  }
}
