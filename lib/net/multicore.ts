// Serving on every core: one loop per worker thread, every loop listening on the same port with
// SO_REUSEPORT, so that the kernel spreads incoming connections over the threads (the way nginx
// and other servers scale past one core) — no accept thread and no hand-off between threads.
import { EventEmitter } from 'node:events';
import os from 'node:os';
import { getEnvironmentData, isMainThread, parentPort, setEnvironmentData, Worker } from 'node:worker_threads';

import { codedError, invalidArgType, validateFunction, validateInteger, validateObject, validatePort } from '../errors.js';
import { asyncDispose } from '../handle.js';
import { open, type OpenOptions } from '../loop.js';
import type { Loop } from '../loop.js';
import type { Server, ConnectionHandler } from './server.js';
import type { SocketOptions } from './socket.js';

export interface ServeOnWorkersOptions {
  /** How many worker threads, each with a loop of its own (default `os.availableParallelism()`). */
  workers?: number;
  /** Host every worker listens on (default `'::'`, all interfaces, as `loop.listen`). */
  host?: string;
  /** Port every worker listens on; 0 (the default): one the OS picks, shared by all workers. */
  port?: number;
  /** Each listener's queue of connections not yet accepted (default 511). */
  backlog?: number;
  ipv6Only?: boolean;
  /** Cloned into each worker's `workerData` (node:worker_threads), as `new Worker` does. */
  workerData?: unknown;
  /** Node options of each worker thread (default: the main thread's `process.execArgv`). */
  execArgv?: string[];
  /** Ms `close()` waits for a worker to close its loop before it terminates the thread (default 5000). */
  closeTimeout?: number;
}

/** Options of `listenInWorker`: how this worker opens its loop, and its connections' options. */
export type WorkerListenOptions = OpenOptions & SocketOptions;

/** What `listenInWorker` resolves to, inside the worker. */
export interface WorkerServer {
  /** This worker's loop: connect, sleep or open files on it as on any loop. */
  readonly loop: Loop;
  /** This worker's listener, one of the group's SO_REUSEPORT sockets on the shared port. */
  readonly server: Server;
  /** This worker's place in the group: 0 … workers - 1. */
  readonly index: number;
  /** How many workers the group has. */
  readonly workers: number;
}

/** What the main thread hands each worker (through worker_threads' environment data). */
interface WorkerSettings {
  index: number;
  workers: number;
  host: string | undefined;
  port: number;
  backlog: number | undefined;
  ipv6Only: boolean;
}

/** Messages between the group and its workers, told apart from the user's own by their key. */
type ControlMessage = { twinloop: 'listening'; port: number } | { twinloop: 'close' } | { twinloop: 'closed' };

// Environment data rather than workerData, so that the user's workerData reaches the worker as is.
const kSettingsKey = 'twinloop:serveOnWorkers';

function isControl(message: unknown): message is ControlMessage {
  return typeof message === 'object' && message !== null && typeof (message as { twinloop?: unknown }).twinloop === 'string';
}

/** A worker of the group failed: it threw, or exited while the group was serving. */
export interface WorkerError extends Error {
  code: 'ERR_TWINLOOP_WORKER_FAILED';
  /** The worker's place in the group. */
  index: number;
  /** The worker's `threadId`. */
  threadId: number;
  /** Its exit code, when it exited without throwing. */
  exitCode?: number;
}

function workerError(index: number, threadId: number, message: string, cause?: unknown, exitCode?: number): WorkerError {
  const error = codedError('ERR_TWINLOOP_WORKER_FAILED', `worker ${index} (thread ${threadId}) ${message}`) as WorkerError;
  error.index = index;
  error.threadId = threadId;
  if (cause !== undefined) error.cause = cause;
  if (exitCode !== undefined) error.exitCode = exitCode;
  return error;
}

/**
 * The worker threads `serveOnWorkers` started, each serving the shared port on a loop of its own.
 *
 * Events: `'error'` (a `WorkerError`: a worker threw, or exited while the group was serving). As
 * with any EventEmitter, an `'error'` nobody listens for is thrown: a crashed worker is never
 * silent. The other workers keep serving; the kernel stops sending connections to the dead one.
 */
export class WorkerGroup extends EventEmitter {
  /** The port every worker listens on. */
  readonly port: number;
  /** The worker threads, by index (post to them, or listen for their own messages). */
  readonly workers: readonly Worker[];
  readonly #exited: readonly Promise<void>[];
  readonly #closeTimeout: number;
  #closing: Promise<void> | null = null;

  /** @internal Use `serveOnWorkers()`. */
  constructor(port: number, started: Started, closeTimeout: number) {
    super();
    this.port = port;
    this.workers = started.workers;
    this.#exited = started.exited;
    this.#closeTimeout = closeTimeout;
    started.route = (error) => {
      if (this.#closing === null) this.emit('error', error);
    };
  }

  /**
   * Closes every worker's loop (its listener and its connections), then ends the threads; resolves
   * once every thread has exited. A worker that has not closed its loop within `closeTimeout` ms
   * (busy, or its module ignores the request) is terminated anyway.
   */
  close(): Promise<void> {
    this.#closing ??= Promise.all(
      this.workers.map(async (worker, index) => {
        const exited = this.#exited[index]!;
        let timer: NodeJS.Timeout | undefined;
        const closed = new Promise<void>((resolve) => {
          worker.on('message', (message: unknown) => {
            if (isControl(message) && message.twinloop === 'closed') resolve();
          });
          timer = setTimeout(resolve, this.#closeTimeout);
          void exited.then(resolve);
        });
        worker.postMessage({ twinloop: 'close' } satisfies ControlMessage);
        await closed;
        clearTimeout(timer);
        // Its loop is closed: whatever else the worker's module keeps alive (timers, ports) ends here.
        await worker.terminate();
        await exited;
      }),
    ).then(() => undefined);
    return this.#closing;
  }

  /** Closes the group, as `close()`: for `await using group = await serveOnWorkers(…)`. */
  [asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The workers started so far, and where their failures go: the start-up, then the group. */
interface Started {
  workers: Worker[];
  exited: Promise<void>[];
  route: (error: WorkerError) => void;
}

/**
 * Serves one port on every core: starts `workers` worker threads running `module`, in each of
 * which `listenInWorker(handler)` opens a loop and listens on the shared port with SO_REUSEPORT.
 * Resolves once every worker listens; rejects (and ends the workers it started) if one fails to.
 *
 * The kernel spreads connections over the listeners on Linux (by a hash of each connection's
 * addresses and ports). macOS and FreeBSD accept SO_REUSEPORT but do not spread connections: one
 * listener gets them all. Windows has no SO_REUSEPORT: there it rejects with `ERR_TWINLOOP_NO_REUSEPORT`.
 *
 * `module` is a URL or absolute path of a JavaScript module (.js, .mjs, .cjs). A TypeScript one
 * runs where the main thread's loader reaches workers through `execArgv`: tsx does so by itself
 * only on recent Node (22.22.3, 24.11.1 and later); examples/multicore.ts shows the rest.
 *
 * @example
 * // main.js
 * const group = await serveOnWorkers(new URL('./worker.js', import.meta.url), { port: 8080 });
 * group.on('error', (error) => console.error(error));
 * // worker.js
 * await listenInWorker(async (socket) => {
 *   for await (const chunk of socket) await socket.write(chunk);
 * });
 */
export async function serveOnWorkers(module: string | URL, options: ServeOnWorkersOptions = {}): Promise<WorkerGroup> {
  if (typeof module !== 'string' && !(module instanceof URL)) throw invalidArgType('module', 'of type string or an instance of URL', module);
  validateObject('options', options as unknown);
  const count = options.workers ?? defaultWorkers();
  validateInteger('options.workers', count, 1, 1024);
  const port = options.port ?? 0;
  validatePort('options.port', port);
  if (options.host !== undefined && typeof options.host !== 'string') throw invalidArgType('options.host', 'of type string', options.host);
  if (options.backlog !== undefined) validateInteger('options.backlog', options.backlog, 0, 0x7fffffff);
  if (options.execArgv !== undefined && !(Array.isArray(options.execArgv) && options.execArgv.every((a) => typeof a === 'string'))) {
    throw invalidArgType('options.execArgv', 'an array of strings', options.execArgv);
  }
  const closeTimeout = options.closeTimeout ?? 5000;
  validateInteger('options.closeTimeout', closeTimeout, 0, 2 ** 31 - 1);
  if (process.platform === 'win32') {
    // The IOCP backend refuses `reusePort` (ENOTSUP) rather than fall back to SO_REUSEADDR, which on
    // Windows lets a second socket steal the port instead of sharing it.
    throw codedError('ERR_TWINLOOP_NO_REUSEPORT', 'serveOnWorkers() needs SO_REUSEPORT, which Windows does not have: listen on one loop instead');
  }

  let failStartup!: (error: WorkerError) => void;
  const failed = new Promise<never>((_, reject) => {
    failStartup = reject;
  });
  const started: Started = { workers: [], exited: [], route: (error) => failStartup(error) };
  const start = (index: number, listenPort: number): Promise<number> => {
    const settings: WorkerSettings = {
      index, workers: count, host: options.host, port: listenPort, backlog: options.backlog, ipv6Only: options.ipv6Only === true,
    };
    // Environment data is cloned into a Worker when it is constructed, so setting it just before
    // and clearing it just after gives this worker, and no other, its settings.
    setEnvironmentData(kSettingsKey, settings as never);
    let worker: Worker;
    try {
      worker = new Worker(module, {
        workerData: options.workerData,
        ...(options.execArgv === undefined ? {} : { execArgv: options.execArgv }),
      });
    } finally {
      setEnvironmentData(kSettingsKey, undefined);
    }
    started.workers.push(worker);
    started.exited.push(new Promise((resolve) => worker.once('exit', () => resolve())));
    const { threadId } = worker;
    return new Promise((resolve) => {
      let listening = false;
      let reported = false;
      // From its start to its end, each worker's first failure goes to whoever waits: start-up, then the group.
      const report = (error: WorkerError): void => {
        if (reported) return;
        reported = true;
        started.route(error);
      };
      worker.on('message', (message: unknown) => {
        if (listening || !isControl(message) || message.twinloop !== 'listening') return;
        listening = true;
        resolve(message.port);
      });
      worker.on('error', (cause) => report(workerError(index, threadId, `threw: ${describeError(cause)}`, cause)));
      worker.on('exit', (code) =>
        report(workerError(index, threadId, listening ? `exited with code ${code} while serving`
          : `exited with code ${code} before it listened (does its module call listenInWorker()?)`, undefined, code)));
    });
  };

  try {
    // With port 0 the first worker's listener picks the port; the others then join it.
    const shared = await Promise.race([start(0, port), failed]);
    await Promise.race([Promise.all(Array.from({ length: count - 1 }, (_, i) => start(i + 1, shared))), failed]);
    return new WorkerGroup(shared, started, closeTimeout);
  } catch (error) {
    started.route = () => {};
    await Promise.all(started.workers.map((worker) => worker.terminate()));
    throw error;
  }
}

/**
 * Inside a worker that `serveOnWorkers` started: opens this worker's loop (`options`: backend and
 * the other `open()` options, and the options of each accepted socket), listens on the group's
 * port with SO_REUSEPORT, hands every connection to `handler` and tells the group it is ready.
 * When the group closes, the loop is closed.
 *
 * @example
 * const { loop, index } = await listenInWorker(async (socket) => {
 *   for await (const chunk of socket) await socket.write(chunk);
 * }, { backend: 'io_uring' });
 */
export async function listenInWorker(handler: ConnectionHandler, options: WorkerListenOptions = {}): Promise<WorkerServer> {
  validateFunction('handler', handler);
  validateObject('options', options as unknown);
  const settings = isMainThread ? undefined : (getEnvironmentData(kSettingsKey) as WorkerSettings | undefined);
  const port = parentPort;
  if (settings === undefined || port === null) {
    throw codedError('ERR_TWINLOOP_NOT_A_WORKER', 'listenInWorker() runs once, inside a worker that serveOnWorkers() started');
  }
  // A worker this one starts must not take itself for one of the group.
  setEnvironmentData(kSettingsKey, undefined);
  const { backend, batchSize, arenaSize, threadPoolSize, ...socketOptions } = options;
  const loop = open({ backend, batchSize, arenaSize, threadPoolSize });
  let server: Server;
  try {
    server = await loop.listen(
      {
        ...socketOptions,
        ...(settings.host === undefined ? {} : { host: settings.host }),
        port: settings.port,
        ...(settings.backlog === undefined ? {} : { backlog: settings.backlog }),
        ipv6Only: settings.ipv6Only,
        reusePort: true,
      },
      handler,
    );
  } catch (error) {
    await loop.close();
    throw error;
  }
  const onMessage = (message: unknown): void => {
    if (!isControl(message) || message.twinloop !== 'close') return;
    // Listening on the port keeps the thread alive; once the loop is closed, nothing of ours does.
    port.off('message', onMessage);
    void loop.close().then(() => port.postMessage({ twinloop: 'closed' } satisfies ControlMessage));
  };
  port.on('message', onMessage);
  port.postMessage({ twinloop: 'listening', port: server.port } satisfies ControlMessage);
  return { loop, server, index: settings.index, workers: settings.workers };
}

function defaultWorkers(): number {
  // os.availableParallelism arrived in Node 18.14; the package supports every Node 18.
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : Math.max(1, os.cpus().length);
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
