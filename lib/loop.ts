import { isIP } from 'node:net';

import { native, type NativeStats } from './binding.js';
import { LoopCore, Operation, promiseOf, type Completion } from './core.js';
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
import { asyncDispose } from './handle.js';
import {
  numericVersion,
  resolveConnectEndpoints,
  resolveEndpoint,
  validateLookup,
  type Endpoint,
  type LookupFunction,
  type ResolvedEndpoint,
} from './net/address.js';
import { Server, type ConnectionHandler } from './net/server.js';
import { Socket, type SocketOptions } from './net/socket.js';
import { ProactorApi } from './patterns/proactor.js';
import { ReactorApi } from './patterns/reactor.js';

/** The OS primitives twinloop can run on. */
export type BackendName = 'epoll' | 'kqueue' | 'io_uring' | 'iocp' | 'threads';
export type PatternName = 'reactor' | 'proactor';
/** What a backend's primitive does natively: one of the two patterns, or (`threads`) neither. */
export type NativePatternName = PatternName | 'thread-per-connection';

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
  pattern: NativePatternName;
  /** The other pattern, which the backend emulates on top of its own; `'both'` for a
   * thread-per-connection backend, whose threads carry both APIs. */
  emulatedPattern: PatternName | 'both';
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
  /** Aborting it closes the server, as `server.close()` (Node's `listen({ signal })`). */
  signal?: AbortSignal;
} & SocketOptions;

export type ConnectOptions = Endpoint &
  SocketOptions & {
    /** Aborting it cancels the connect: the call rejects with an `AbortError` and the socket is closed. */
    signal?: AbortSignal;
    /**
     * Ms the connection may take to be established (after the host name is resolved); then the
     * call rejects with code `'ETIMEDOUT'` and the socket is closed. 0 or absent: the kernel's
     * own limit (minutes, for a peer that drops SYNs). Not Node's `timeout`, which is an idle
     * timeout: that is `idleTimeout` here. It bounds all the attempts of `autoSelectFamily`.
     */
    connectTimeout?: number;
    /** Of a host name, connect only to addresses of this IP version; 0 (the default): either. */
    family?: 0 | 4 | 6;
    /** The local IP address to connect from (bound, on any port, before connecting). */
    localAddress?: string;
    /**
     * Try every address the host name resolves to (default true, as Node's since 20), one after
     * the other — the resolver's first, then alternating families, as Node's happy eyeballs —
     * moving on when one fails or is not connected within `autoSelectFamilyAttemptTimeout`;
     * the last gets the rest of `connectTimeout`. False: only the first address.
     */
    autoSelectFamily?: boolean;
    /** Ms each attempt of `autoSelectFamily` gets but the last (default 250; at least 10, as Node). */
    autoSelectFamilyAttemptTimeout?: number;
    /** Resolves the host name instead of `dns.lookup`, with its signature (Node's `lookup`). */
    lookup?: LookupFunction;
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
  /** What rejects each host name lookup still awaited, for close() to fail them. */
  readonly #lookups = new Set<(error: Error) => void>();

  /** @internal Use `open()`. */
  constructor(options: OpenOptions = {}) {
    validateObject('options', options);
    const backend = options.backend ?? 'auto';
    if (typeof backend !== 'string' || (backend !== 'auto' && !allBackends.includes(backend))) {
      throw invalidArgValue('options.backend', `one of 'auto', ${allBackends.map((name) => `'${name}'`).join(', ')}`, backend);
    }
    const batchSize = options.batchSize ?? 1024;
    validateInteger('options.batchSize', batchSize, 1, 1 << 20);
    const arenaSize = options.arenaSize ?? 1 << 20;
    validateInteger('options.arenaSize', arenaSize, 64 * 1024, 1 << 30);
    const threadPoolSize = options.threadPoolSize ?? 4;
    validateInteger('options.threadPoolSize', threadPoolSize, 1, 1024);
    try {
      this.#core = new LoopCore(backend, batchSize, arenaSize, threadPoolSize);
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
      emulatedPattern: pattern === 'reactor' ? 'proactor' : pattern === 'proactor' ? 'reactor' : 'both',
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
    validateObject('options', options);
    // Every option read once, here: a getter could answer one value to the check and another to
    // the use (an idleTimeout of -1 thrown from the accept path).
    const { signal, host, port, path, backlog = 511, reusePort, ipv6Only } = options;
    const perSocket = socketOptions(options);
    validateAbortSignal('options.signal', signal);
    if (signal?.aborted) throw abortError(signal);
    const endpoint = await this.#lookup(resolveEndpoint('options', { host, port, path }, '::', 0), signal);
    validateInteger('options.backlog', backlog, 0, 0x7fffffff);
    if (signal?.aborted) throw abortError(signal);
    this.#assertOpen();
    const listen = (family: typeof endpoint.family, address: string): number =>
      this.#core.listen(family, address, endpoint.port, backlog, reusePort === true, ipv6Only === true);
    let handle = listen(endpoint.family, endpoint.host);
    if (handle < 0 && host === undefined && path === undefined) {
      handle = listen(4, '0.0.0.0');  // like Node: all IPv4 interfaces where IPv6 is unavailable
    }
    if (handle < 0) throw systemError(handle, 'listen', endpoint.host, endpoint.port);
    const server = new Server(this.#core, handle, handler, perSocket);
    if (signal !== undefined) {
      const onAbort = (): void => server.close();
      signal.addEventListener('abort', onAbort, { once: true });
      server.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    return server;
  }

  /**
   * Connects to a TCP host and port or a Unix socket path; resolves once connected. A host name
   * may resolve to several addresses: see `autoSelectFamily`. When every attempt fails, it
   * rejects with the one attempt's error, or with an `AggregateError` of them all whose `code` is
   * the first's (as Node's).
   */
  async connect(options: ConnectOptions): Promise<Socket> {
    validateObject('options', options);
    // Every option read once, here: a getter could answer one value to the check and another to
    // the use (an idleTimeout of -1 thrown where the connect completes, which then never settles).
    const { signal, connectTimeout = 0, family = 0, localAddress, autoSelectFamily = true, lookup, host, port, path } = options;
    const { autoSelectFamilyAttemptTimeout: attemptTimeout = 250 } = options;
    validateAbortSignal('options.signal', signal);
    validateInteger('options.connectTimeout', connectTimeout, 0, 2 ** 31 - 1);
    if (family !== 0 && family !== 4 && family !== 6) throw invalidArgValue('options.family', 'one of 0, 4, 6', family);
    if (localAddress !== undefined && (typeof localAddress !== 'string' || numericVersion('options.localAddress', localAddress) === 0)) {
      throw invalidArgValue('options.localAddress', 'a numeric IPv4 or IPv6 address', localAddress);
    }
    if (typeof autoSelectFamily !== 'boolean') throw invalidArgType('options.autoSelectFamily', 'of type boolean', autoSelectFamily);
    validateInteger('options.autoSelectFamilyAttemptTimeout', attemptTimeout, 1, 2 ** 31 - 1);
    validateLookup('options.lookup', lookup);
    if (localAddress !== undefined && path !== undefined) {
      throw invalidArgValue('options.localAddress', 'absent for a Unix socket path', localAddress);
    }
    const perSocket = socketOptions(options);
    if (signal?.aborted) throw abortError(signal);
    let endpoints = await this.#lookup(resolveConnectEndpoints('options', { host, port, path }, { family, all: autoSelectFamily, lookup }), signal);
    if (signal?.aborted) throw abortError(signal);
    this.#assertOpen();
    // Only addresses of the local address's family can be connected from it.
    if (localAddress !== undefined) {
      const local = isIP(localAddress);
      if (endpoints.some((endpoint) => endpoint.family === local)) endpoints = endpoints.filter((endpoint) => endpoint.family === local);
    }
    const started = performance.now();
    const errors: Error[] = [];
    for (let i = 0; i < endpoints.length; i++) {
      const last = i === endpoints.length - 1;
      const left = connectTimeout === 0 ? 0 : Math.max(1, Math.ceil(connectTimeout - (performance.now() - started)));
      const timeout = last ? left : left === 0 ? Math.max(10, attemptTimeout) : Math.min(Math.max(10, attemptTimeout), left);
      try {
        return await this.#connectTo(endpoints[i]!, localAddress, perSocket, timeout, signal);
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === 'ABORT_ERR' || code === 'ERR_LOOP_CLOSED') throw error;
        errors.push(error as Error);
        if (connectTimeout !== 0 && performance.now() - started >= connectTimeout) {
          const { host, port } = endpoints[i]!;
          throw systemError(ETIMEDOUT, 'connect', host, port);
        }
      }
    }
    if (errors.length === 1) throw errors[0]!;
    const error = new AggregateError(errors, `connect failed to every address of ${host ?? 'localhost'}`) as AggregateError & { code?: unknown };
    error.code = (errors[0] as { code?: unknown }).code;
    throw error;
  }

  // One attempt: a socket connected to `endpoint`, or the attempt's error — ETIMEDOUT once
  // `timeout` ms (0: none) have passed.
  #connectTo(endpoint: ResolvedEndpoint, localAddress: string | undefined, options: SocketOptions, timeout: number, signal: AbortSignal | undefined): Promise<Socket> {
    this.#assertOpen();
    const core = this.#core;
    const { idleTimeout, ...perSocket } = options;
    let socket: Socket | undefined;
    let timedOut = false;
    let timer: Operation | undefined;
    const connect = new ConnectOperation(endpoint, signal, () => socket, (error) => {
      if (timer !== undefined) core.cancel(timer);
      if (error === null) {
        // Connected, even if the timeout or an abort came too late to stop it.
        if (idleTimeout) socket!.setIdleTimeout(idleTimeout);
        return resolveConnect(socket!);
      }
      const failure = timedOut ? systemError(ETIMEDOUT, 'connect', endpoint.host, endpoint.port) : error;
      socket!.close();
      rejectConnect(failure);
    });
    let resolveConnect!: (socket: Socket) => void;
    let rejectConnect!: (error: Error) => void;
    const connected = new Promise<Socket>((resolve, reject) => {
      resolveConnect = resolve;
      rejectConnect = reject;
    });
    const handle = core.connect(connect, endpoint.family, endpoint.host, endpoint.port, localAddress);
    if (handle < 0) return Promise.reject(connect.error(handle));
    socket = new Socket(core, handle, perSocket);
    if (timeout !== 0) {
      timer = core.startTimer(timeout, (due) => {
        if (!due) return;
        timedOut = true;
        core.cancel(connect);
      });
    }
    return connected;
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
    const timer = new Operation('timer', -1, signal, ignore, options.ref === false);
    return promiseOf(timer, this.#core.timer(timer, Math.ceil(delay))).then(ignore);
  }

  /**
   * Opens a regular file. The proactor backends submit its reads and writes to the kernel; the
   * reactor backends run them on the loop's thread pool (on Linux, a read of up to 64 KiB that the
   * page cache holds whole is done at once instead).
   */
  openFile(path: string, options?: OpenFileOptions): Promise<File> {
    return openFile(this.#core, path, options);
  }

  /**
   * Counters since open: syscalls made, events handled, wakes, and batches (each handed to
   * JavaScript in calls of up to 64 events, the only calls into it there are).
   */
  stats(): LoopStats {
    return this.#core.stats();
  }

  /**
   * Closes every server and socket of the loop, then the loop itself. Every operation still in
   * flight fails: a timer, file operation or connect with `ERR_LOOP_CLOSED`, a socket's with
   * `ERR_SOCKET_CLOSED`; those of one kind share one Error, as a Node stream fails all its
   * buffered writes with one, so that a million pending cost no million stack traces.
   */
  async close(): Promise<void> {
    this.#core.close();
    for (const fail of this.#lookups) fail(loopClosed());
  }

  /**
   * Lets Node's process exit even though this loop has open servers, sockets or timers (as
   * `unref()` on each of them would), until `ref()`. Its events still arrive while the process
   * runs for other reasons.
   */
  unref(): this {
    this.#core.setLoopReferenced(false);
    return this;
  }

  /** Undoes `unref()`: the loop's open handles and operations keep the process alive again. */
  ref(): this {
    this.#core.setLoopReferenced(true);
    return this;
  }

  /** Closes the loop, as `close()`: for `await using loop = open()`. */
  [asyncDispose](): Promise<void> {
    return this.close();
  }

  // A lookup cannot be cancelled (dns.lookup runs on libuv's pool, and a custom lookup may never
  // answer), so it is raced instead: an abort rejects at once with an AbortError, as node:net
  // does, and the loop's close with ERR_LOOP_CLOSED; an answer that comes later is dropped.
  #lookup<T>(resolving: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fail = (error: Error): void => {
        done();
        reject(error);
      };
      const onAbort = (): void => fail(abortError(signal!));
      const done = (): void => {
        this.#lookups.delete(fail);
        signal?.removeEventListener('abort', onAbort);
      };
      this.#lookups.add(fail);
      signal?.addEventListener('abort', onAbort, { once: true });
      resolving.then(
        (value) => {
          done();
          resolve(value);
        },
        fail,
      );
    });
  }

  #assertOpen(): void {
    if (this.#core.closed) throw loopClosed();
  }
}

/** A connect: its errors say where to, and closing its socket (or the loop) under it fails it as a closed socket. */
class ConnectOperation extends Operation {
  readonly #endpoint: ResolvedEndpoint;
  readonly #socket: () => Socket | undefined;

  constructor(endpoint: ResolvedEndpoint, signal: AbortSignal | undefined, socket: () => Socket | undefined, done: Completion) {
    super('connect', -1, signal, done);
    this.#endpoint = endpoint;
    this.#socket = socket;
  }

  protected override closedError(): Error {
    return this.#socket()?.closedError() ?? super.closedError();
  }

  protected override systemError(errno: number): Error {
    return systemError(errno, 'connect', this.#endpoint.host, this.#endpoint.port);
  }
}

// The per-socket options, each read once and validated: the Socket gets this copy, never the
// caller's object, whose getters could answer it something else.
function socketOptions(options: SocketOptions): SocketOptions {
  const result: SocketOptions = {};
  for (const key of ['readableHighWaterMark', 'writableHighWaterMark'] as const) {
    const value = options[key];
    if (value !== undefined) {
      validateInteger(`options.${key}`, value, 1, 2 ** 31 - 1);
      result[key] = value;
    }
  }
  const { idleTimeout } = options;
  if (idleTimeout !== undefined) {
    validateInteger('options.idleTimeout', idleTimeout, 0, 2 ** 31 - 1);
    result.idleTimeout = idleTimeout;
  }
  return result;
}

// Every backend twinloop knows, and whatever else this addon has compiled in (a backend added on
// the native side is accepted at once); one known but not compiled in fails on open, naming it.
const allBackends: readonly string[] = [...new Set<string>(['epoll', 'kqueue', 'io_uring', 'iocp', ...native.constants.backends])];
const ignore = (): void => {};
const { ETIMEDOUT } = native.errors;

/** Opens a loop. Throws an Error with `code` when the requested backend cannot run here. */
export function open(options?: OpenOptions): Loop {
  return new Loop(options);
}

/** The backends that really work on this host (compiled in and openable), best first. */
export function availableBackends(): BackendName[] {
  return native.constants.backends.filter((name) => {
    try {
      new Loop({ backend: name as BackendName, batchSize: 1, arenaSize: 64 * 1024 }).close();
      return true;
    } catch {
      return false;
    }
  }) as BackendName[];
}

