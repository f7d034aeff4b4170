import { native } from '../binding.js';
import type { LoopCore } from '../core.js';
import {
  abortError,
  codedError,
  errnoOf,
  outOfRange,
  readBufferGone,
  socketReadBusy,
  systemError,
  validateAbortSignal,
  validateBuffer,
  validateFunction,
  validateObject,
  validateReadBuffer,
} from '../errors.js';
import { validateHandle } from '../handle.js';
import { Server } from '../net/server.js';
import { Socket } from '../net/socket.js';

const { ECANCELED, EFAULT } = native.errors;
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

/** The AbortError of a write cancelled half-sent. */
export interface TornWriteError extends Error {
  code: 'ABORT_ERR';
  /** Bytes of this write the peer received before it was cancelled. */
  bytesWritten: number;
}

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
   * RangeError, thrown: its 0 could not be told from EOF. A socket the net layer reads
   * (`socket.read()`, for await) fails with `ERR_SOCKET_BUSY`: one API reads a socket.
   *
   * @example
   * const n = await loop.proactor.read(socket, buffer, { signal: AbortSignal.timeout(1000) });
   */
  read(socket: Socket, buffer: Uint8Array, options?: ProactorOptions): Promise<number>;
  read(socket: Socket, buffer: Uint8Array, callback: Completion<number>): void;
  read(socket: Socket, buffer: Uint8Array, options: ProactorOptions, callback: Completion<number>): void;
  read(
    socket: Socket,
    buffer: Uint8Array,
    optionsOrCallback?: ProactorOptions | Completion<number>,
    callback?: Completion<number>,
  ): Promise<number> | void {
    validateHandle(this.#core, 'socket', socket, Socket, 'a twinloop Socket');
    validateReadBuffer('buffer', buffer);
    const [options, done] = splitArguments(optionsOrCallback, callback);
    return this.#submit(done, options, socket, 'read', buffer, (id, bytes) => this.#core.native.read(socket.handle, bytes!, id), (n) => n);
  }

  /**
   * Writes all of `buffer` (continuing after short writes): completes with its length. One write
   * moves at most 1 GiB (`RangeError` beyond; `socket.write` splits longer data itself). The
   * bytes are copied when the write is submitted, so `buffer` is free for reuse at once.
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
    validateHandle(this.#core, 'socket', socket, Socket, 'a twinloop Socket');
    validateBuffer('buffer', buffer);
    if (buffer.length > native.maxTransfer) {
      throw outOfRange('buffer.length', `<= ${native.maxTransfer} (one write moves at most 1 GiB; socket.write splits longer data)`, buffer.length);
    }
    const [options, done] = splitArguments(optionsOrCallback, callback);
    const length = buffer.length;
    return this.#submit(done, options, socket, 'write', buffer, (id, bytes) => this.#core.native.write(socket.handle, bytes!, id), () => length);
  }

  /** Accepts one connection. */
  accept(server: Server, options?: ProactorOptions): Promise<Socket>;
  accept(server: Server, callback: Completion<Socket>): void;
  accept(server: Server, options: ProactorOptions, callback: Completion<Socket>): void;
  accept(server: Server, optionsOrCallback?: ProactorOptions | Completion<Socket>, callback?: Completion<Socket>): Promise<Socket> | void {
    validateHandle(this.#core, 'server', server, Server, 'a twinloop Server');
    const [options, done] = splitArguments(optionsOrCallback, callback);
    return this.#submit(done, options, server, 'accept', undefined, (id) => this.#core.native.accept(server.handle, id), (handle) =>
      server.adoptConnection(handle),
    );
  }

  #submit<T>(
    callback: Completion<T> | undefined,
    options: ProactorOptions,
    target: Socket | Server,
    syscall: string,
    buffer: Uint8Array | undefined,
    // Closures here take the buffer as an argument rather than capture it: an error made on
    // completion keeps its frames' closures alive, and must not keep the buffer with them.
    start: (id: number, buffer: Uint8Array | undefined) => number,
    toResult: (value: number) => T,
  ): Promise<T> | void {
    if (callback !== undefined) validateFunction('callback', callback);
    const { signal } = options;
    const length = buffer?.length ?? 0;
    let settle: Completion<T> = callback!;
    const promise =
      callback === undefined
        ? new Promise<T>((resolve, reject) => {
            settle = (error, result) => (error ? reject(error) : resolve(result as T));
          })
        : undefined;
    const complete = (value: number): void => {
      if (value > 0 && syscall === 'write' && signal !== undefined) {
        // Only a cancelled write completes with a count (a whole one completes with 0).
        const error = abortError(signal!) as TornWriteError;
        error.message = `The operation was aborted after ${value} of ${length} bytes were sent`;
        error.bytesWritten = value;
        settle(error);
      } else if (value >= 0) settle(null, toResult(value));
      else if (value === ECANCELED && signal?.aborted) settle(abortError(signal));
      else if (value === ECANCELED) settle(codedError('ERR_SOCKET_CLOSED', `Socket was closed with this ${syscall} in flight`));
      else if (value === EFAULT && syscall === 'read') {
        // Bytes taken from the stream and lost: the socket cannot go on as if it had them.
        target.close();
        settle(readBufferGone());
      } else settle(systemError(value, syscall));
    };
    // Callbacks are never called synchronously, whatever the outcome.
    if (signal?.aborted) {
      process.nextTick(settle, abortError(signal));
      return promise;
    }
    if (target.closed) {
      process.nextTick(settle, target.closedError());
      return promise;
    }
    const id = this.#core.nextOperationId();
    const rc = start(id, buffer);
    if (rc < 0) {
      // EBUSY on a read: the net layer reads this socket (the backends refuse it once read_start ran).
      process.nextTick(settle, rc === EBUSY && syscall === 'read' ? socketReadBusy('loop.proactor.read') : systemError(rc, syscall));
    } else if (rc === 1 && syscall === 'write') {
      process.nextTick(complete, 0);
    } else {
      this.#core.expect(id, complete, { signal, handle: target.handle });
    }
    return promise;
  }
}

function splitArguments<T>(
  optionsOrCallback: ProactorOptions | Completion<T> | undefined,
  callback: Completion<T> | undefined,
): [ProactorOptions, Completion<T> | undefined] {
  if (typeof optionsOrCallback === 'function') return [{}, optionsOrCallback];
  const options = optionsOrCallback ?? {};
  validateObject('options', options);
  validateAbortSignal('options.signal', options.signal);
  return [options, callback];
}
