import { native, type NativeStats } from './binding.js';
import { LoopCore } from './core.js';
import { invalidArgValue, loopClosed, systemError, validateFunction, validateInteger, validateObject } from './errors.js';
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

export type ConnectOptions = Endpoint & SocketOptions;

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
    try {
      this.#core = new LoopCore(backend, batchSize, arenaSize);
    } catch (error) {
      const cause = error as Error & { errno?: number };
      if (cause.errno === undefined) throw error;
      const wrapped = systemError(cause.errno, 'open');
      wrapped.message = `cannot open backend '${backend}': ${cause.message}`;
      throw wrapped;
    }
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
    const endpoint = await resolveEndpoint('options', options, 'localhost', 1);
    this.#assertOpen();
    const id = this.#core.nextOperationId();
    const handle = this.#core.native.connect(endpoint.family, endpoint.host, endpoint.port, id);
    if (handle < 0) throw systemError(handle, 'connect', endpoint.host, endpoint.port);
    const socket = new Socket(this.#core, handle, socketOptions(options));
    return new Promise((resolve, reject) => {
      this.#core.expect(id, (result) => {
        if (result >= 0) return resolve(socket);
        const error = socket.closed ? socket.closedError() : systemError(result, 'connect', endpoint.host, endpoint.port);
        socket.close();
        reject(error);
      });
    });
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
  return result;
}

const allBackends: readonly BackendName[] = ['epoll', 'kqueue', 'io_uring', 'iocp'];

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

