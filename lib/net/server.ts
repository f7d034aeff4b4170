import { lstatSync, statSync, unlinkSync } from 'node:fs';
import { resolve } from 'node:path';

import type { NativeAddress } from '../binding.js';
import { native } from '../binding.js';
import { reportLater, type LoopCore } from '../core.js';
import { systemError } from '../errors.js';
import { Handle } from '../handle.js';
import { Socket, type SocketOptions } from './socket.js';

/**
 * Called with each accepted connection. If it returns a promise, the connection is ended and
 * closed when that promise settles.
 */
export type ConnectionHandler = (socket: Socket) => void | Promise<void>;

const { EMFILE, ENFILE } = native.errors;
// How long accepting pauses when the process is out of descriptors: long enough not to spin a
// core, short enough to recover promptly once descriptors are freed.
const kAcceptRetryMs = 100;

/**
 * A listening socket. Events: `'error'` (accept failed, e.g. EMFILE; accepting resumes by
 * itself), `'connectionError'` (a handler threw or rejected; the connection is closed).
 */
export class Server extends Handle {
  readonly #handler: ConnectionHandler | undefined;
  readonly #socketOptions: SocketOptions;
  #retryTimer: NodeJS.Timeout | null = null;
  readonly #socketFile: SocketFile | undefined;

  /** @internal A brand check (see Handle.isHandle). */
  static isServer(value: unknown): value is Server {
    return typeof value === 'object' && value !== null && #handler in value;
  }

  /** @internal */
  constructor(core: LoopCore, handle: number, handler: ConnectionHandler | undefined, socketOptions: SocketOptions) {
    super(core, handle);
    this.#handler = handler;
    this.#socketOptions = socketOptions;
    this.#socketFile = boundSocketFile(core, handle);
    if (handler !== undefined) this.check(core.acceptStart(handle), 'accept');
  }

  /** The address it listens on. */
  address(): NativeAddress {
    this.assertOpen();
    const address = this.core.address(this.handle, false);
    if (typeof address === 'number') throw systemError(address, 'getsockname');
    return address;
  }

  /** The port it listens on (0 for a Unix socket). */
  get port(): number {
    return this.address().port;
  }

  /** @internal Wraps a native connection handle in a Socket. */
  adoptConnection(handle: number): Socket {
    try {
      return new Socket(this.core, handle, this.#socketOptions);
    } catch (error) {
      // No Socket to close it: the descriptor would leak (and, adopted, keep the loop alive).
      this.core.closeHandle(handle, false);
      this.core.release(handle);
      throw error;
    }
  }

  protected onClosed(): void {
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer);
    if (this.#socketFile !== undefined) removeSocketFile(this.#socketFile);
  }

  /** @internal */
  override onAccepted(result: number): void {
    if (result < 0) {
      const error = systemError(result, 'accept');
      if (result === EMFILE || result === ENFILE) this.#retryLater();
      if (this.listenerCount('error') > 0) this.emit('error', error);
      return;
    }
    // In the loop's dispatch, a throw would be an uncaughtException and the accepted descriptor
    // would stay open with nobody to close it: close it, and report as a failed accept is.
    let socket: Socket;
    try {
      socket = this.adoptConnection(result);
    } catch (error) {
      if (this.listenerCount('error') > 0) this.emit('error', error);
      return;
    }
    let outcome: void | Promise<void>;
    try {
      outcome = this.#handler!(socket);
    } catch (error) {
      this.#connectionFailed(socket, error);
      return;
    }
    // Bound functions, not closures: a connection whose handler awaits keeps them as long, and
    // two closures with their context take 160 bytes where these take 120.
    if (outcome instanceof Promise) outcome.then(endConnection.bind(socket), this.#connectionFailed.bind(this, socket));
  }

  #connectionFailed(socket: Socket, error: unknown): void {
    socket.close();
    // Closing the loop fails whatever a handler awaits (a sleep, a read) with ERR_LOOP_CLOSED: that
    // is the normal end of its connection, not an error to report or to crash the process with.
    if (this.core.closed && (error as { code?: unknown } | null)?.code === 'ERR_LOOP_CLOSED') return;
    if (this.listenerCount('connectionError') > 0) this.emit('connectionError', error, socket);
    else if (!isConnectionLoss(error)) reportLater(error);
  }

  #retryLater(): void {
    // Unref'd: the listener itself keeps the process alive, unless it was unref'd.
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      if (!this.closed) this.core.acceptStart(this.handle);
    }, kAcceptRetryMs).unref();
  }
}

// The handler's promise resolved: its connection ends after the writes it queued, then closes.
function endConnection(this: Socket): void {
  this.end()
    .catch(() => {})
    .finally(() => this.close());
}

// A peer that resets or vanishes is normal life for a server, not a bug to crash on.
function isConnectionLoss(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT' || code === 'ERR_SOCKET_CLOSED';
}

/** The file a Unix socket server bound, and which file it was (another may take its path later). */
interface SocketFile {
  path: string;
  dev: number;
  ino: number;
}

// Closing a Unix socket server removes its file, as node:net (libuv) does: the file outlives the
// socket, and listening on the path again fails EADDRINUSE while it is there. Done here and not in
// each backend's close, because this one place sees both `server.close()` and `loop.close()`.
// Only the file this server bound (abstract names have none), and only if it is still that one.
function boundSocketFile(core: LoopCore, handle: number): SocketFile | undefined {
  const address = core.address(handle, false);
  if (typeof address === 'number' || address.family !== 'unix' || address.address === '' || address.address[0] === '\0') return undefined;
  const path = resolve(address.address);
  try {
    const { dev, ino } = statSync(path);
    return { path, dev, ino };
  } catch {
    return undefined;
  }
}

function removeSocketFile({ path, dev, ino }: SocketFile): void {
  try {
    const now = lstatSync(path);
    if (now.isSocket() && now.dev === dev && now.ino === ino) unlinkSync(path);
  } catch {
    // Already gone, or no longer ours to remove.
  }
}
