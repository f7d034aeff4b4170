import { native } from '../binding.js';
import {
  awaitCompletion,
  callBack,
  kDone,
  kInFlight,
  reportLater,
  resolveWithValue,
  SocketOperation,
  withResolvers,
  WriteOperation,
  type ClosingErrors,
  type Completion as NativeCompletion,
  type LoopCore,
} from '../core.js';
import {
  errnoOf,
  outOfRange,
  readBufferGone,
  socketReadBusy,
  validateAbortSignal,
  validateBuffer,
  validateFunction,
  validateObject,
  validateReadBuffer,
} from '../errors.js';
import { validateHandle } from '../handle.js';
import { Server } from '../net/server.js';
import { Socket, type ReadWaiter } from '../net/socket.js';

const { EFAULT } = native.errors;
const EBUSY = errnoOf('EBUSY');

/** Node-style completion callback. */
export type Completion<T> = (error: Error | null, result?: T) => void;

/** Options of every proactor operation. */
export interface ProactorOptions {
  /**
   * Aborting it cancels the operation in the kernel; it then fails with an `AbortError` (name
   * `'AbortError'`, code `'ABORT_ERR'`, `cause` = `signal.reason`), or completes normally if the
   * kernel had already done it — no byte read and no connection accepted is ever dropped. A
   * write cancelled after part of it was sent fails with an AbortError whose `bytesWritten` says
   * how much the peer got: the byte stream is torn, later writes fail with EPIPE, close the socket.
   */
  signal?: AbortSignal;
}

export type { TornWriteError } from '../core.js';

/**
 * The proactor pattern: you submit the operation with its buffer, and are called back when the
 * kernel has *done* it — the bytes are already in (or out of) your buffer. Each method returns a
 * promise, or takes a Node-style callback instead. The kernel works in memory of the loop's own:
 * a write's bytes are copied when it is submitted, a read's are copied into `buffer` when it
 * completes, so nothing done to `buffer` meanwhile (transfer, shrink, collect) reaches the kernel.
 *
 * @example
 * const n = await loop.proactor.read(socket, buffer); // buffer.subarray(0, n) holds the bytes
 */
export class ProactorApi {
  readonly #core: LoopCore;

  /** @internal */
  constructor(core: LoopCore) {
    this.#core = core;
  }

  /**
   * Reads into `buffer`: completes with the byte count (0 at EOF). An empty `buffer` is a
   * RangeError, thrown: its 0 could not be told from EOF. The buffer is the caller's from
   * submission to completion, so a connection waiting for data holds it: for many idle
   * connections, read without one (the pooled read, below). A socket the net layer or a pooled
   * read reads fails with `ERR_SOCKET_BUSY`: one API reads a socket.
   *
   * Without `buffer` — the pooled read — the loop picks the memory when the bytes arrive (io_uring's
   * provided buffers, the arena of a readiness loop), so a connection waiting costs no buffer:
   * completes with a Buffer of the bytes received (at least one), or null at EOF. The socket then
   * keeps being read into the loop between calls, as the net layer's `socket.read()` does (reading
   * pauses once `readableHighWaterMark` bytes wait); an abort withdraws only this read.
   *
   * The second argument is the options when it is a plain object (`{ signal }`); any other object
   * is taken for the buffer, so one that is not a Uint8Array (a DataView, `{ length: 5 }`) is a
   * TypeError (`ERR_INVALID_ARG_TYPE`), not a pooled read.
   *
   * @example
   * const n = await loop.proactor.read(socket, buffer, { signal: AbortSignal.timeout(1000) });
   * const chunk = await loop.proactor.read(socket); // Buffer, or null at EOF
   */
  read(socket: Socket, buffer: Uint8Array, options?: ProactorOptions): Promise<number>;
  read(socket: Socket, buffer: Uint8Array, callback: Completion<number>): void;
  read(socket: Socket, buffer: Uint8Array, options: ProactorOptions, callback: Completion<number>): void;
  read(socket: Socket, options?: ProactorOptions): Promise<Buffer | null>;
  read(socket: Socket, callback: Completion<Buffer | null>): void;
  read(socket: Socket, options: ProactorOptions, callback: Completion<Buffer | null>): void;
  read(
    socket: Socket,
    bufferOrOptions?: Uint8Array | ProactorOptions | Completion<Buffer | null>,
    optionsOrCallback?: ProactorOptions | Completion<number> | Completion<Buffer | null>,
    callback?: Completion<number>,
  ): Promise<number> | Promise<Buffer | null> | void {
    validateHandle(this.#core, 'socket', socket, Socket.isSocket, 'a twinloop Socket');
    if (!isBufferArgument(bufferOrOptions)) {
      const optionsOrDone = bufferOrOptions as ProactorOptions | Completion<Buffer | null> | undefined;
      return readPooled(socket, signalOf(optionsOrDone), callbackOf(optionsOrDone, optionsOrCallback as Completion<Buffer | null> | undefined));
    }
    const buffer = bufferOrOptions;
    // The options first, then the buffer: their getters are the caller's code, and one run after
    // the check could shrink a resizable buffer to nothing (a read of 0 bytes, taken for EOF).
    const optionsOrDone = optionsOrCallback as ProactorOptions | Completion<number> | undefined;
    const signal = signalOf(optionsOrDone);
    const done = validCallback(callbackOf(optionsOrDone, callback));
    validateReadBuffer('buffer', buffer);
    const operation = new ProactorRead(socket, signal);
    if (socket.closed && !operation.signal?.aborted) return settleNow(this.#core, done, socket.closedError());
    return this.#settle(operation, this.#core.read(operation, buffer), done);
  }

  /**
   * Writes all of `buffer` (continuing after short writes): completes with its length. One write
   * moves at most 1 GiB (`RangeError` beyond; `socket.write` splits longer data itself). The
   * bytes are copied when the write is submitted, so `buffer` is free for reuse at once.
   * `socket.end()` sends FIN after it; once end() was called, a write fails with
   * `ERR_STREAM_WRITE_AFTER_END`.
   */
  write(socket: Socket, buffer: Uint8Array, options?: ProactorOptions): Promise<number>;
  write(socket: Socket, buffer: Uint8Array, callback: Completion<number>): void;
  write(socket: Socket, buffer: Uint8Array, options: ProactorOptions, callback: Completion<number>): void;
  write(
    socket: Socket,
    buffer: Uint8Array,
    optionsOrCallback?: ProactorOptions | Completion<number>,
    callback?: Completion<number>,
  ): Promise<number> | void {
    validateHandle(this.#core, 'socket', socket, Socket.isSocket, 'a twinloop Socket');
    validateBuffer('buffer', buffer);
    if (buffer.length > native.maxTransfer) {
      throw outOfRange('buffer.length', `<= ${native.maxTransfer} (one write moves at most 1 GiB; socket.write splits longer data)`, buffer.length);
    }
    const signal = signalOf(optionsOrCallback);
    const done = validCallback(callbackOf(optionsOrCallback, callback));
    if (socket.closed && !signal?.aborted) return settleNow(this.#core, done, socket.closedError());
    const refusal = signal?.aborted ? null : socket.writeRefusal();
    if (refusal !== null) return settleNow(this.#core, done, refusal);
    const { handle } = socket;
    const { length } = buffer;
    // The write's operation is made only when it is needed: on a readiness backend the kernel
    // takes almost every write whole inside the call (see LoopCore.startWrite).
    const rc = this.#core.startWrite(handle, signal, buffer);
    if (rc === kDone) return settleNow(this.#core, done, null, length);
    if (rc !== kInFlight) return settleNow(this.#core, done, new WriteOperation(handle, signal, length, ignore).error(rc));
    // Owned by the socket, so that its end() sends FIN only after this write (the backends shut a
    // socket down at once, and what they still queue would then fail EPIPE).
    const operation = new WriteOperation(handle, signal, length, ignore, socket.proactorWriteStarted());
    this.#core.keepWrite(operation);
    return this.#settle(operation, rc, done);
  }

  /** Accepts one connection. */
  accept(server: Server, options?: ProactorOptions): Promise<Socket>;
  accept(server: Server, callback: Completion<Socket>): void;
  accept(server: Server, options: ProactorOptions, callback: Completion<Socket>): void;
  accept(server: Server, optionsOrCallback?: ProactorOptions | Completion<Socket>, callback?: Completion<Socket>): Promise<Socket> | void {
    validateHandle(this.#core, 'server', server, Server.isServer, 'a twinloop Server');
    const operation = new SocketOperation('accept', server.handle, signalOf(optionsOrCallback), ignore);
    const done = validCallback(callbackOf(optionsOrCallback, callback));
    if (server.closed && !operation.signal?.aborted) return settleNow(this.#core, done, server.closedError());
    return this.#settle(operation, this.#core.accept(operation), done, (handle) => server.adoptConnection(handle));
  }

  // The callback and promise forms of an operation LoopCore's submission returned `rc` for
  // (kInFlight, or an errno it was refused with): told on completion, or at once. A count (a read's
  // or a write's) needs no closure: the operation keeps the callback or the resolving functions,
  // and a completion shared by all calls them. An accept's handle becomes its Socket in a closure.
  // Neither holds the operation's buffer, so that an error made on completion cannot keep it alive.
  #settle<T>(operation: SocketOperation, rc: number, callback: Completion<T> | undefined, toResult?: (value: number) => T): Promise<T> | void {
    if (rc < 0) return settleNow(this.#core, callback, operation.error(rc));
    if (toResult === undefined) {
      if (callback === undefined) return awaitCompletion<T>(operation, resolveWithValue);
      operation.callback = callback as Completion<number>;
      operation.done = callBack;
      return;
    }
    if (callback === undefined) {
      return new Promise<T>((resolve, reject) => {
        operation.done = (error, value) => (error === null ? resolve(toResult(value)) : reject(error));
      });
    }
    operation.done = (error, value) => (error === null ? callback(null, toResult(value)) : callback(error));
  }
}

// What the caller of an operation refused or done at submission is told: a settled promise, or
// its callback — called soon, never synchronously. These are apart from the closures of
// #settle, so that a write the kernel took whole costs no closure and no context.
function settleNow<T>(core: LoopCore, callback: Completion<T> | undefined, error: Error | null, value?: T): Promise<T> | void {
  if (callback === undefined) return error === null ? Promise.resolve(value as T) : Promise.reject(error);
  core.defer(callback, error, value);
}

function validCallback<T>(callback: Completion<T> | undefined): Completion<T> | undefined {
  if (callback !== undefined) validateFunction('callback', callback);
  return callback;
}

const ignore: NativeCompletion = () => {};

/**
 * A proactor read: EBUSY at submission means the net layer reads this socket (the backends
 * refuse a read once read_start ran), and EFAULT at completion that its buffer could no longer
 * hold the bytes taken from the stream — the socket cannot go on as if it had them.
 */
class ProactorRead extends SocketOperation {
  readonly #socket: Socket;

  constructor(socket: Socket, signal: AbortSignal | undefined) {
    super('read', socket.handle, signal, ignore);
    this.#socket = socket;
  }

  override error(errno: number, closing?: ClosingErrors): Error {
    if (errno === EBUSY) return socketReadBusy('loop.proactor.read');
    if (errno === EFAULT) {
      // Its 'close' listener is the user's: if it throws, that is reported, and the read still fails.
      try {
        this.#socket.close();
      } catch (error) {
        reportLater(error);
      }
      return readBufferGone();
    }
    return super.error(errno, closing);
  }
}

// The arguments after the buffer: options then a callback, either one left out. Validated here,
// read without allocating (a call is a hot path). `signal` is read once: a getter may answer
// something else the second time, which was used unvalidated.
function signalOf(optionsOrCallback: ProactorOptions | Completion<never> | undefined): AbortSignal | undefined {
  if (optionsOrCallback === undefined || typeof optionsOrCallback === 'function') return undefined;
  validateObject('options', optionsOrCallback);
  const { signal } = optionsOrCallback;
  validateAbortSignal('options.signal', signal);
  return signal;
}

function callbackOf<T>(optionsOrCallback: ProactorOptions | Completion<T> | undefined, callback: Completion<T> | undefined): Completion<T> | undefined {
  return typeof optionsOrCallback === 'function' ? optionsOrCallback : callback;
}

// Whether read's second argument is the buffer (which validateReadBuffer then brand-checks):
// options are a plain object, a literal or of Object.create(null), with no length. So any other
// object gets the buffer's TypeError — a DataView, an ArrayBuffer, an array-like,
// Object.create(Uint8Array.prototype) — where taken for options it started a pooled read.
function isBufferArgument(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return (prototype !== Object.prototype && prototype !== null) || 'length' in value;
}

// The pooled read, on the socket's own streaming read (the net layer's): one waiter per call.
function readPooled(socket: Socket, signal: AbortSignal | undefined, callback: Completion<Buffer | null> | undefined): Promise<Buffer | null> | void {
  validCallback(callback);
  // As every proactor operation on a closed socket (socket.read() would see the end of the stream).
  if (socket.closed && !signal?.aborted) return settleNow(socket.core, callback, socket.closedError());
  if (callback === undefined) return readPooledPromise(socket, signal);
  const read = new PooledRead(socket.core, callback);
  socket.readNext(read, signal, kPooledCaller);
  read.synchronous = false;
}

const kPooledCaller = 'loop.proactor.read';

function readPooledPromise(socket: Socket, signal: AbortSignal | undefined): Promise<Buffer | null> {
  const waiter = withResolvers<Buffer | null>();
  socket.readNext(waiter, signal, kPooledCaller);
  return waiter.promise;
}

// The callback form's waiter, one object (a connection waiting for data holds it): its callback,
// like every other, is never called synchronously, even when a chunk was waiting.
class PooledRead implements ReadWaiter {
  synchronous = true;

  constructor(
    readonly core: LoopCore,
    readonly callback: Completion<Buffer | null>,
  ) {}

  resolve(chunk: Buffer | null): void {
    if (this.synchronous) this.core.defer(this.callback, null, chunk);
    else this.callback(null, chunk);
  }

  reject(error: Error): void {
    if (this.synchronous) this.core.defer(this.callback, error, undefined);
    else this.callback(error);
  }
}
