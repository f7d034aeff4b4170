// Starts a benchmark server as its own process (pinned to a CPU when asked) and talks to it over
// its control channel (bench/servers/control.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

import type { Ready, Snapshot } from '../servers/control.js';
import { root, serversDir, standaloneEchoPath } from './paths.js';

export interface ServerSpec {
  /** Short stable name: `net`, `epoll/reactor`, `io_uring/native`, … */
  id: string;
  /** `node` (Node's own `net`), or the twinloop backend. */
  backend: string;
  /**
   * Echo: `net` (on Node: node:net; on twinloop: its net layer) | `reactor` | `proactor` |
   * `native` (the backend echoing from C++ on Node's loop) | `standalone` (the same C++ echo on a
   * loop of its own, no Node). HTTP: `node:http` | `minimal` (bench/servers/http-server.ts).
   */
  api: string;
  /** Worker threads, each with its own loop on the same port (SO_REUSEPORT); default 1. */
  workers?: number;
}

export const isHttp = (spec: ServerSpec): boolean => spec.api === 'node:http' || spec.api === 'minimal';

// The command line of a server: a Node script (with `nodeFlags`), or the standalone echo's
// executable. The scripts run as bench/tsup.config.ts compiled them (`npm run bench` does first).
function command(spec: ServerSpec, nodeFlags: string[]): string[] {
  if (spec.api === 'standalone') return [standaloneEchoPath, '--backend', spec.backend];
  const [name, ...args] = script(spec);
  const file = path.join(serversDir, `${name}.js`);
  if (!existsSync(file)) throw new Error(`no ${path.relative(root, file)}: build the servers with \`npx tsup --config bench/tsup.config.ts\` (npm run bench does)`);
  return [process.execPath, '--expose-gc', ...nodeFlags, file, ...args];
}

function script(spec: ServerSpec): string[] {
  const workers = spec.workers === undefined || spec.workers === 1 ? [] : ['--workers', String(spec.workers)];
  if (isHttp(spec)) return ['http-server', '--api', spec.api, '--backend', spec.backend, ...workers];
  if (spec.backend === 'node') return ['net-server'];
  return ['twinloop-server', '--backend', spec.backend, '--api', spec.api, ...workers];
}

export class ServerProcess {
  readonly spec: ServerSpec;
  readonly ready: Ready;
  readonly #child: ChildProcess;
  readonly #replies: ((line: string) => void)[];

  private constructor(spec: ServerSpec, child: ChildProcess, ready: Ready, replies: ((line: string) => void)[]) {
    this.spec = spec;
    this.#child = child;
    this.ready = ready;
    this.#replies = replies;
  }

  /** `wrapper`: a program the server runs under, with its arguments (valgrind, for --instructions). */
  static async start(spec: ServerSpec, cpu: number | null, nodeFlags: string[] = [], wrapper: string[] = []): Promise<ServerProcess> {
    const line = [...wrapper, ...command(spec, nodeFlags)];
    const [program, ...args] = cpu === null ? line : ['taskset', '-c', String(cpu), ...line];
    const child = spawn(program!, args, { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] });
    const replies: ((line: string) => void)[] = [];
    const lines = createInterface({ input: child.stdout! });
    const ready = await new Promise<Ready>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`server ${spec.id} exited with code ${code} before listening`)));
      lines.once('line', (line) => resolve(JSON.parse(line) as Ready));
    });
    child.removeAllListeners('exit');
    lines.on('line', (line) => replies.shift()?.(line));
    return new ServerProcess(spec, child, ready, replies);
  }

  get pid(): number {
    return this.#child.pid!;
  }

  /** CPU, memory and counters now; with `gc`, after a full garbage collection. */
  snapshot(gc = false): Promise<Snapshot> {
    return new Promise((resolve, reject) => {
      if (this.#child.exitCode !== null) return reject(new Error(`server ${this.spec.id} has exited`));
      this.#replies.push((line) => resolve(JSON.parse(line) as Snapshot));
      this.#child.stdin!.write(gc ? 'snapshot gc\n' : 'snapshot\n');
    });
  }

  /** Closing stdin ends the server. */
  async stop(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.#child.once('exit', resolve));
    this.#child.stdin!.end();
    await exited;
  }
}
