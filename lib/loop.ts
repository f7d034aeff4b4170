import { native, type NativeStats } from './binding.js';
import { LoopCore } from './core.js';
import {
  abortError,
  invalidArgType,
  invalidArgValue,
  loopClosed,
  outOfRange,
  systemError,
  validateAbortSignal,
  validateFunction,
  validateInteger,
  validateObject,
} from './errors.js';
import { File, openFile, type OpenFileOptions } from './file.js';
import { resolveEndpoint, type Endpoint } from './net/address.js';
import { Server, type ConnectionHandler } from './net/server.js';
import { Socket, type SocketOptions } from './net/socket.js';
import { ProactorApi } from './patterns/proactor.js';
import { ReactorApi } from './patterns/reactor.js';

/** The OS primitives twinloop can run on. */
export type BackendName = 'epoll' | 'kqueue' | 'io_uring' | 'iocp';
export type PatternName = 'reactor' | 'proactor';

export interface OpenOptions {
  /** Which backend to use; `'auto'` (the default) picks the best one this host really has. */
  backend?: BackendName | 'auto';
  /** Events handed to JavaScript per call at most (default 1024). */
  batchSize?: number;
  /** Bytes of received data one batch can carry (default 1 MiB). */
  arenaSize?: number;
  /** Threads for file I/O on the reactor backends, which cannot wait for files (default 4). */
  threadPoolSize?: number;
}

export interface LoopInfo {
  backend: BackendName;
  /** The pattern the backend's primitive implements natively. */
  pattern: PatternName;
  /** The other pattern, which the backend emulates on top of its own. */
  emulatedPattern: PatternName;
  /** What the backend found and uses on this host. */
  features: string[];
  /** With `backend: 'auto'`: why better backends were passed over. */
  fallbackReason?: string;
}

export interface LoopStats extends NativeStats {}

export type ListenOptions = Endpoint & {
  /** Length of the kernel's queue of connections not yet accepted (default 511). */
  backlog?: number;
  /** Let several loops (one per worker thread) listen on the same port (SO_REUSEPORT). */
  reusePort?: boolean;
  ipv6Only?: boolean;
} & SocketOptions;

export type ConnectOptions = Endpoint &
  SocketOptions & {
    /** Aborting it cancels the connect: the call rejects with an `AbortError` and the socket is closed. */
    signal?: AbortSignal;
    /**
     * Ms the connection may take to be established (after the host name is resolved); then the
     * call rejects with code `'ETIMEDOUT'` and the socket is closed. 0 or absent: the kernel's
     * own limit (minutes, for a peer that drops SYNs). Not Node's `timeout`, which is an idle
     * timeout: that is `idleTimeout` here.
     */
    connectTimeout?: number;
  };

export interface SleepOptions {
  /** Aborting it cancels the timer and rejects with an `AbortError`. */
  signal?: AbortSignal;
  /** `false`: the pending timer does not keep Node's process alive (default true), as in `node:timers`. */
  ref?: boolean;
}

/**
 * One event loop on one backend, running inside Node's own loop. Open as many as you like, one
 * or more per thread.
 *
 * @example
 * const loop = open();
 * const server = await loop.listen({ port: 0 }, async (socket) => {
 *   for await (const chunk of socket) await socket.write(chunk);
 * });
 */
export class Loop {
  readonly info: LoopInfo;
  /** The readiness-based API: watch, then tryRead/tryWrite/tryAccept. */
  readonly reactor: ReactorApi;
  /** The completion-based API: submit read/write/accept, get called when done. */
  readonly proactor: ProactorApi;
  readonly #core: LoopCore;

  /** @internal Use `open()`. */
  constructor(options: OpenOptions = {}) {
    validateObject('options', options);
    const backend = options.backend ?? 'auto';
    if (typeof backend !== 'string' || (backend !== 'auto' && !allBackends.includes(backend as BackendName))) {
      throw invalidArgValue('options.backend', `one of 'auto', ${allBackends.map((name) => `'${name}'`).join(', ')}`, backend);
    }
    const batchSize = options.batchSize ?? 1024;
    validateInteger('options.batchSize', batchSize, 1, 1 << 20);
    const arenaSize = options.arenaSize ?? 1 << 20;
    validateInteger('options.arenaSize', arenaSize, 64 * 1024, 1 << 30);
    const threadPoolSize = options.threadPoolSize ?? 4;
    validateInteger('options.threadPoolSize', threadPoolSize, 1, 1024);
    try {
      this.#core = new LoopCore(backend, batchSize, arenaSize);
    } catch (error) {
      const cause = error as Error & { errno?: number };
      if (cause.errno === undefined) throw error;
      const wrapped = systemError(cause.errno, 'open');
      wrapped.message = `cannot open backend '${backend}': ${cause.message}`;
      throw wrapped;
    }
    this.#core.native.setThreadPoolSize(threadPoolSize);
    const { backend: name, pattern, features, fallbackReason } = this.#core.info;
    this.info = {
      backend: name as BackendName,
      pattern,
      emulatedPattern: pattern === 'reactor' ? 'proactor' : 'reactor',
      features,
      ...(fallbackReason === undefined ? {} : { fallbackReason }),
    };
    this.reactor = new ReactorApi(this.#core);
    this.proactor = new ProactorApi(this.#core);
  }

  get closed(): boolean {
    return this.#core.closed;
  }

  /**
   * Listens on a TCP port or a Unix socket path. With `handler`, every connection is accepted and
   * handed to it; without, accept through `loop.reactor` or `loop.proactor`.
   */
  async listen(options: ListenOptions, handler?: ConnectionHandler): Promise<Server> {
    if (handler !== undefined) validateFunction('handler', handler);
    const endpoint = await resolveEndpoint('options', options, '::', 0);
    const backlog = options.backlog ?? 511;
    validateInteger('options.backlog', backlog, 0, 0x7fffffff);
    this.#assertOpen();
    const listen = (family: typeof endpoint.family, host: string): number =>
      this.#core.native.listen(family, host, endpoint.port, backlog, options.reusePort === true, options.ipv6Only === true);
    let handle = listen(endpoint.family, endpoint.host);
    if (handle < 0 && options.host === undefined && options.path === undefined) {
      handle = listen(4, '0.0.0.0');  // like Node: all IPv4 interfaces where IPv6 is unavailable
    }
    if (handle < 0) throw systemError(handle, 'listen', endpoint.host, endpoint.port);
    return new Server(this.#core, handle, handler, socketOptions(options));
  }

  /** Connects to a TCP host and port or a Unix socket path; resolves once connected. */
  async connect(options: ConnectOptions): Promise<Socket> {
    validateObject('options', options);
    const { signal, connectTimeout = 0 } = options;
    validateAbortSignal('options.signal', signal);
    validateInteger('options.connectTimeout', connectTimeout, 0, 2 ** 31 - 1);
    const { idleTimeout, ...perSocket } = socketOptions(options);
    if (signal?.aborted) throw abortError(signal);
    const endpoint = await resolveEndpoint('options', options, 'localhost', 1);
    if (signal?.aborted) throw abortError(signal);
    this.#assertOpen();
    const core = this.#core;
    const id = core.nextOperationId();
    const handle = core.native.connect(endpoint.family, endpoint.host, endpoint.port, id);
    if (handle < 0) throw systemError(handle, 'connect', endpoint.host, endpoint.port);
    const socket = new Socket(core, handle, perSocket);
    return new Promise((resolve, reject) => {
      let timedOut = false;
      const timer =
        connectTimeout === 0
          ? -1
          : core.startTimer(connectTimeout, (result) => {
              if (result < 0) return;
              timedOut = true;
              core.cancel(handle, id);
            });
      core.expect(
        id,
        (result) => {
          if (timer !== -1) core.cancelTimer(timer);
          if (result >= 0) {
            // Connected, even if the timeout or an abort came too late to stop it.
            if (idleTimeout) socket.setIdleTimeout(idleTimeout);
            return resolve(socket);
          }
          const error = timedOut
            ? systemError(ETIMEDOUT, 'connect', endpoint.host, endpoint.port)
            : result === ECANCELED && signal?.aborted
              ? abortError(signal)
              : socket.closed
                ? socket.closedError()
                : systemError(result, 'connect', endpoint.host, endpoint.port);
          socket.close();
          reject(error);
        },
        { signal, handle },
      );
    });
  }

  /**
   * Resolves after `delay` ms — never earlier — on the loop's own native timer (one timerfd,
   * IORING_OP_TIMEOUT or EVFILT_TIMER for all the loop's timers). Timers due at the same time
   * resolve in the order they were started.
   *
   * @example
   * await loop.sleep(100);
   * await loop.sleep(60_000, { signal }); // rejects with an AbortError when `signal` aborts
   */
  sleep(delay: number, options: SleepOptions = {}): Promise<void> {
    if (typeof delay !== 'number') throw invalidArgType('delay', 'of type number', delay);
    if (!(delay >= 0 && delay <= 2 ** 31 - 1)) throw outOfRange('delay', '>= 0 and <= 2147483647', delay);
    validateObject('options', options);
    const { signal } = options;
    validateAbortSignal('options.signal', signal);
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.#core.closed) return Promise.reject(loopClosed());
    return new Promise((resolve, reject) => {
      this.#core.startTimer(
        Math.ceil(delay),
        (result) => {
          if (result >= 0) resolve();
          else if (result === ECANCELED && signal?.aborted) reject(abortError(signal));
          else reject(result === ECANCELED ? loopClosed() : systemError(result, 'timer'));
        },
        { signal, weak: options.ref === false },
      );
    });
  }

  /**
   * Opens a regular file. The proactor backends submit its reads and writes to the kernel; the
   * reactor backends run them on the loop's thread pool (on Linux, a read of up to 64 KiB that the
   * page cache holds whole is done at once instead).
   */
  openFile(path: string, options?: OpenFileOptions): Promise<File> {
    // As node:fs: the kernel would open the path up to the NUL ('secret\0.txt' is 'secret').
    if (typeof path === 'string' && path.includes('\0')) {
      return Promise.reject(invalidArgValue('path', 'a string without null bytes', path));
    }
    return openFile(this.#core, path, options);
  }

  /** Counters since open: syscalls made, events handled, wakes, batches and JS calls. */
  stats(): LoopStats {
    return this.#core.native.stats();
  }

  /** Closes every server and socket of the loop, then the loop itself. */
  async close(): Promise<void> {
    this.#core.close();
  }

  #assertOpen(): void {
    if (this.#core.closed) throw loopClosed();
  }
}

function socketOptions(options: SocketOptions): SocketOptions {
  const result: SocketOptions = {};
  for (const key of ['readableHighWaterMark', 'writableHighWaterMark'] as const) {
    if (options[key] !== undefined) {
      validateInteger(`options.${key}`, options[key], 1, 2 ** 31 - 1);
      result[key] = options[key];
    }
  }
  if (options.idleTimeout !== undefined) {
    validateInteger('options.idleTimeout', options.idleTimeout, 0, 2 ** 31 - 1);
    result.idleTimeout = options.idleTimeout;
  }
  return result;
}

const allBackends: readonly BackendName[] = ['epoll', 'kqueue', 'io_uring', 'iocp'];
const { ECANCELED, ETIMEDOUT } = native.errors;

/** Opens a loop. Throws an Error with `code` when the requested backend cannot run here. */
export function open(options?: OpenOptions): Loop {
  return new Loop(options);
}

/** The backends that really work on this host (compiled in and openable), best first. */
export function availableBackends(): BackendName[] {
  return native.backends.filter((name) => {
    try {
      new Loop({ backend: name as BackendName, batchSize: 1, arenaSize: 64 * 1024 }).close();
      return true;
    } catch {
      return false;
    }
  }) as BackendName[];
}

