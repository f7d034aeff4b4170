// `--workers N` for the benchmark servers: N worker_threads in the one server process, each with
// its own twinloop loop listening on the same port with SO_REUSEPORT, so the kernel spreads the
// connections over them. The main thread only speaks the control channel; it sums the workers'
// counters, and its process.cpuUsage() already covers every thread, so the CPU figures stay
// per process, as with one worker.
import { pathToFileURL } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

import { serveControl, type Counters } from './control.js';

/** A server listening in this thread. */
export interface Listening {
  port: number;
  info: Record<string, unknown>;
  counters: () => Counters;
}

/** Starts one server in this thread: on `port` (0: any) with SO_REUSEPORT when `reusePort`. */
export type StartServer = (port: number, reusePort: boolean) => Promise<Listening>;

interface Joined {
  port: number;
  info: Record<string, unknown>;
}

/**
 * Runs the calling script's server on `workers` threads (1: in this thread, without
 * SO_REUSEPORT) and answers the control channel. In a worker, starts that worker's server.
 */
export async function serveOnThreads(workers: number, start: StartServer): Promise<void> {
  if (!isMainThread) {
    const port = parentPort!;
    const listening = await start((workerData as { port: number }).port, true);
    port.on('message', () => port.postMessage(listening.counters()));
    port.postMessage({ port: listening.port, info: listening.info } satisfies Joined);
    return;
  }
  if (workers === 1) {
    const listening = await start(0, false);
    serveControl({ port: listening.port, info: listening.info }, listening.counters);
    return;
  }
  // The first worker picks the port; the others join it.
  const first = await spawn(0);
  const threads = [first, ...(await Promise.all(Array.from({ length: workers - 1 }, () => spawn(first.joined.port))))];
  serveControl({ port: first.joined.port, info: { ...first.joined.info, workers } }, async () => sum(await Promise.all(threads.map(ask))));
}

interface Thread {
  worker: Worker;
  joined: Joined;
}

// The worker runs this same script with the same arguments. Node 20 does not carry the parent's
// `--import tsx` loader hooks into a worker, so the worker registers tsx itself first.
async function spawn(port: number): Promise<Thread> {
  const script = JSON.stringify(pathToFileURL(process.argv[1]!).href);
  const boot = `import('tsx/esm/api').then(({ register }) => { register(); return import(${script}); })`;
  const worker = new Worker(boot, { eval: true, argv: process.argv.slice(2), workerData: { port } });
  worker.unref();  // the control channel's end (stdin closed) ends the process
  const joined = await new Promise<Joined>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`a server worker exited with code ${code} before listening`)));
    worker.once('message', resolve);
  });
  worker.removeAllListeners('exit');
  // A worker that dies would leave the control channel waiting for its counters: end loudly.
  worker.on('error', (error) => {
    console.error(`bench server worker failed: ${error.stack ?? error}`);
    process.exit(1);
  });
  worker.on('exit', (code) => {
    console.error(`bench server worker exited with code ${code}`);
    process.exit(1);
  });
  return { worker, joined };
}

function ask({ worker }: Thread): Promise<Counters> {
  return new Promise((resolve) => {
    worker.once('message', resolve);
    worker.postMessage('counters');
  });
}

function sum(all: Counters[]): Counters {
  const total: Counters = { connections: 0 };
  for (const counters of all) {
    total.connections += counters.connections;
    if (counters.requests !== undefined) total.requests = (total.requests ?? 0) + counters.requests;
    if (counters.loop !== undefined) {
      total.loop ??= {};
      for (const [key, value] of Object.entries(counters.loop)) total.loop[key] = (total.loop[key] ?? 0) + value;
    }
  }
  return total;
}
