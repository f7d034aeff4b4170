import { Buffer } from 'node:buffer';
import type { EventEmitter } from 'node:events';

import type { NativeAddress } from '../binding.js';
import { native, SocketOption } from '../binding.js';
import { awaitCompletion, kDone, kInFlight, reportLater, resolveEmpty, withResolvers, WriteOperation, type LoopCore, type WriteOwner } from '../core.js';
import {
  abortError,
  codedError,
  invalidArgType,
  outOfRange,
  systemError,
  validateAbortSignal,
  validateBuffer,
  validateInteger,
  validateObject,
} from '../errors.js';
import { Handle } from '../handle.js';
import { SocketStream, type SocketStreamOptions } from './duplex.js';
import { IdleSweeper } from './idle.js';

const { ETIMEDOUT } = native.errors;
const { maxTransfer } = native;
const resolved: Promise<void> = Promise.resolve();
// What an idle socket's queues start as, one array for all (two of their own would be 64 bytes a
// connection): never pushed to — the first element replaces it with an array of one (#addReader,
// onData) — and shift()/splice()/indexOf() leave an empty array empty.
const none: never[] = [];
/** @internal Where SocketStream takes received bytes: each chunk, then null at EOF or with the read's error. */
export type ChunkSink = (chunk: Buffer | null, error: Error | null) => void;

export interface SocketOptions {
  /** Bytes received but not yet read after which reading pauses (default 1 MiB). */
  readableHighWaterMark?: number;
  /** Bytes queued for the kernel above which `writableNeedDrain` is true (default 1 MiB). */
  writableHighWaterMark?: number;
  /**
   * Closes the socket after this many ms without a byte received or sent (see
   * `Socket.setIdleTimeout`); 0 or absent: never. On `listen`, for every accepted connection;
   * on `connect`, from when it is connected.
   */
  idleTimeout?: number;
}

/** Options of `Socket.read` and `Socket.write`. */
export interface SocketOperationOptions {
  /** Aborting it rejects the call with an `AbortError` (see the method for what else happens). */
  signal?: AbortSignal;
}

// The events of Node's streams. A Socket emits none of them: whoever listens for one (node:http's
// 'data', pipe()'s 'finish' and 'drain', end-of-stream's 'end') takes it for a stream and would
// wait for ever, so listening throws instead.
const streamEvents: ReadonlySet<string | symbol> = new Set(['data', 'end', 'finish', 'prefinish', 'drain', 'readable', 'pipe', 'unpipe', 'pause', 'resume']);

const writeAfterEnd = (): Error => codedError('ERR_STREAM_WRITE_AFTER_END', 'write after end');

function notAStream(what: string): TypeError {
  const error = new TypeError(
    `A twinloop Socket is not a Node stream (${what}): pass socket.stream(), a stream.Duplex, to node:http, tls, stream.pipeline and pipe()`,
  ) as TypeError & { code: string };
  error.code = 'ERR_INVALID_ARG_TYPE';
  return error;
}

/** @internal Who waits for the next chunk: told once, with the chunk (null at the end) or the error. */
export interface ReadWaiter {
  resolve(chunk: Buffer | null): void;
  reject(error: Error): void;
}

/**
 * A connected stream socket, the same on every backend.
 *
 * @example
 * for await (const chunk of socket) await socket.write(chunk); // echo
 */
export class Socket extends Handle implements AsyncIterable<Buffer> {
  readonly readableHighWaterMark: number;
  readonly writableHighWaterMark: number;
  #received: Buffer[] = none;
  #receivedBytes = 0;
  #streaming = false;
  #paused = false;
  #eof = false;
  #readError: Error | null = null;
  #reader: ReadWaiter | undefined;   // the first waiting read() (one is the usual case) ...
  #readers: ReadWaiter[] = none;     // ... and those behind it
  #writesInFlight = 0;  // of every API: end() sends FIN once none is left
  #writableLength = 0;
  #ending: Promise<void> | null = null;
  #proactorWriter: WriteOwner | undefined;
  #writesDone: (() => void) | null = null;
  #remote: NativeAddress | null = null;
  #active = false;      // a byte moved since the last sweep
  #timeouts: SocketTimeouts | null = null;  // made by the first setIdleTimeout/setDeadline/setIdleNotice
  #stream: SocketStream | undefined;
  #bytesRead = 0;
  #bytesWritten = 0;
  #unix: boolean | undefined;  // a Unix domain socket (no TCP options), once asked
  #sink: ChunkSink | undefined;

  /** @internal A brand check (see Handle.isHandle). */
  static isSocket(value: unknown): value is Socket {
    return typeof value === 'object' && value !== null && #reader in value;
  }

  /** @internal */
  constructor(core: LoopCore, handle: number, options: SocketOptions = {}) {
    super(core, handle);
    this.readableHighWaterMark = options.readableHighWaterMark ?? 1024 * 1024;
    this.writableHighWaterMark = options.writableHighWaterMark ?? 1024 * 1024;
    if (options.idleTimeout) this.setIdleTimeout(options.idleTimeout);
  }

  /** Bytes handed to `write()` that the kernel has not taken yet. */
  get writableLength(): number {
    return this.#writableLength;
  }

  /** True while more than `writableHighWaterMark` bytes wait for the kernel: await your writes. */
  get writableNeedDrain(): boolean {
    return this.#writableLength > this.writableHighWaterMark;
  }

  /** Bytes received from the peer so far (read or still buffered for `read()`). */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /**
   * Bytes the kernel has taken from `write()` so far. Unlike `net.Socket.bytesWritten`, bytes
   * still queued (`writableLength`) are not counted.
   */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  /**
   * Turns Nagle's algorithm off (`true`, the default, as here every TCP socket starts) or back on
   * (`false`: small writes wait to be coalesced until the previous ones are acknowledged), with
   * TCP_NODELAY. twinloop's sockets start with it off, as node:http's do (Node's `net` and
   * libuv start with Nagle on). A no-op on a Unix socket and on a closed one, as on Node.
   */
  setNoDelay(noDelay = true): this {
    this.#setTcpOption(SocketOption.noDelay, noDelay ? 1 : 0);
    return this;
  }

  /**
   * Turns TCP keep-alive probes on or off (SO_KEEPALIVE), as `net.Socket.setKeepAlive`: a peer
   * that vanished without a FIN is then detected (reads fail `ETIMEDOUT`) instead of the socket
   * waiting for ever. With `initialDelay` > 0, the first probe goes after that many ms of silence,
   * rounded up to whole seconds (Node rounds down, so that less than 1000 keeps the system's
   * default — 2 hours on Linux) and cut to the longest the system takes (32 767 s on Linux, where
   * Node's setsockopt fails and leaves the default), then one a second, and the peer is given up
   * after 10, as libuv sets them; 0 keeps the system's delay. A no-op on a Unix socket and on a
   * closed one.
   */
  setKeepAlive(enable = false, initialDelay = 0): this {
    if (typeof initialDelay !== 'number') throw invalidArgType('initialDelay', 'of type number', initialDelay);
    if (!(initialDelay >= 0 && initialDelay <= 2 ** 31 - 1)) throw outOfRange('initialDelay', '>= 0 and <= 2147483647', initialDelay);
    this.#setTcpOption(SocketOption.keepAlive, enable ? 1 : 0);
    if (enable && initialDelay > 0) this.#setTcpOption(SocketOption.keepAliveIdle, Math.ceil(initialDelay / 1000));
    return this;
  }

  #setTcpOption(option: number, value: number): void {
    if (this.closed) return;
    this.#unix ??= this.address().family === 'unix';
    if (this.#unix) return;
    this.check(this.core.setSocketOption(this.handle, option, value), 'setsockopt');
  }

  /** The local address. */
  address(): NativeAddress {
    this.assertOpen();
    const address = this.core.address(this.handle, false);
    if (typeof address === 'number') throw systemError(address, 'getsockname');
    return address;
  }

  /** The peer's address, or undefined for a Unix socket without one. */
  get remoteAddress(): string | undefined {
    return this.peerAddress()?.address || undefined;
  }

  get remotePort(): number | undefined {
    return this.peerAddress()?.port || undefined;
  }

  /**
   * This socket as a `stream.Duplex` (a `SocketStream`), for Node's own stream users: node:http,
   * tls, `stream.pipeline`. Made on the first call, which alone reads `options`; later calls
   * return the same stream. Once you have it, read and write through it, not the socket.
   *
   * @example
   * await loop.listen({ port: 8080 }, (socket) => { httpServer.emit('connection', socket.stream()); });
   */
  stream(options?: SocketStreamOptions): SocketStream {
    this.#stream ??= new SocketStream(this, options);
    return this.#stream;
  }

  // Listening for a stream event throws (see streamEvents), and so do pause() and resume().
  override on(...args: Parameters<EventEmitter['on']>): this {
    return super.on(refuseStreamEvent(args[0]), args[1]);
  }

  override addListener(...args: Parameters<EventEmitter['addListener']>): this {
    return super.addListener(refuseStreamEvent(args[0]), args[1]);
  }

  override once(...args: Parameters<EventEmitter['once']>): this {
    return super.once(refuseStreamEvent(args[0]), args[1]);
  }

  override prependListener(...args: Parameters<EventEmitter['prependListener']>): this {
    return super.prependListener(refuseStreamEvent(args[0]), args[1]);
  }

  override prependOnceListener(...args: Parameters<EventEmitter['prependOnceListener']>): this {
    return super.prependOnceListener(refuseStreamEvent(args[0]), args[1]);
  }

  /** @internal The peer's address, cached from the first call on an open socket. */
  peerAddress(): NativeAddress | null {
    if (this.#remote === null && !this.closed) {
      const address = this.core.address(this.handle, true);
      if (typeof address !== 'number') this.#remote = address;
    }
    return this.#remote;
  }

  /**
   * The next chunk of received bytes, or null once the peer has ended its side (or this socket
   * was closed). Rejects with the socket's error, e.g. `ECONNRESET`.
   */
  read(options?: SocketOperationOptions): Promise<Buffer | null> {
    const signal = options === undefined ? undefined : validateOperationOptions(options);
    const waiter = withResolvers<Buffer | null>();
    this.readNext(waiter, signal, 'socket.read()');
    return waiter.promise;
  }

  /**
   * @internal read() with a waiter instead of a promise (also the Proactor API's pooled read,
   * named `caller` in its errors): `waiter` is settled once, at once when a chunk, the end or an
   * error is already there, else when it comes.
   */
  readNext(waiter: ReadWaiter, signal: AbortSignal | undefined, caller: string): void {
    if (signal?.aborted) return waiter.reject(abortError(signal));
    if (this.#sink !== undefined) return waiter.reject(codedError('ERR_SOCKET_BUSY', `${caller} cannot read this socket: its stream() reads it`));
    if (this.#received.length > 0) {
      const chunk = this.#received.shift()!;
      this.#receivedBytes -= chunk.length;
      if (this.#paused && this.#receivedBytes < this.readableHighWaterMark) this.#resume();
      return waiter.resolve(chunk);
    }
    if (this.#readError !== null) return waiter.reject(this.#readError);
    if (this.#eof || this.closed) return waiter.resolve(null);
    if (!this.#streaming) {
      const rc = this.core.readStart(this.handle);
      if (rc < 0) return waiter.reject(systemError(rc, 'read'));
      this.#streaming = true;
    }
    if (signal === undefined) return this.#addReader(waiter);
    this.#addAbortableReader(waiter, signal);
  }

  // No kernel operation per read() here (the socket streams into the loop's buffers): aborting
  // only withdraws this reader, so a chunk that arrives later goes to the next read(). Apart from
  // readNext, whose every call would otherwise allocate the context these closures share.
  #addAbortableReader(waiter: ReadWaiter, signal: AbortSignal): void {
    const onAbort = (): void => {
      this.#removeReader(reader);
      waiter.reject(abortError(signal));
    };
    const reader: ReadWaiter = {
      resolve: (chunk) => {
        signal.removeEventListener('abort', onAbort);
        waiter.resolve(chunk);
      },
      reject: (error) => {
        signal.removeEventListener('abort', onAbort);
        waiter.reject(error);
      },
    };
    signal.addEventListener('abort', onAbort, { once: true });
    this.#addReader(reader);
  }

  /**
   * Iterates over the chunks received, until the peer ends its side. Leaving the loop early
   * (`break`, `return`, a throw in its body) closes the socket, as Node's streams are destroyed
   * then; a loop that runs to the end leaves it open (a server's handler still writes).
   */
  [Symbol.asyncIterator](): AsyncIterator<Buffer, undefined> {
    return new SocketIterator(this);
  }

  /**
   * Sends `data`; resolves once the kernel has taken every byte of it. Writes are sent in the
   * order they were made. Await them (or watch `writableNeedDrain`) to bound what is queued.
   *
   * Aborting `options.signal` withdraws the write and rejects with an `AbortError`. If none of
   * its bytes had gone out, the socket carries on as if it had never been made; if some had, the
   * peer has a torn message and the socket is closed — as Node destroys a stream on abort.
   */
  write(data: Uint8Array | string, options?: SocketOperationOptions): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    validateBuffer('data', bytes);
    const signal = options === undefined ? undefined : validateOperationOptions(options);
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.closed) return Promise.reject(this.closedError());
    if (this.#ending !== null) return Promise.reject(writeAfterEnd());
    if (bytes.length === 0) return resolved;
    if (bytes.length > maxTransfer) return this.#writeInPieces(bytes, options);
    // No closure here may name `bytes`: the write's callback would keep the caller's buffer, and
    // so would an error made on its completion (see Operation).
    const { length } = bytes;
    const rc = this.#startWrite(bytes, length, signal);
    if (rc === kDone) return resolved;
    if (rc !== kInFlight) return Promise.reject(new WriteOperation(this.handle, signal, length, ignore, this).error(rc));
    const operation = new WriteOperation(this.handle, signal, length, ignore, this);
    const written = awaitCompletion<void>(operation, resolveEmpty);
    this.#keepWrite(operation);
    return written;
  }

  /**
   * @internal write() without its promise, for SocketStream (a response costs no promise and no
   * microtask). `bytes`: 1 to maxTransfer bytes, or pieces of that many in all, sent as one write. True when the kernel took them all at once;
   * otherwise false, and `done` is called once it has (null) or the write failed. Throws what
   * write() would reject with before any I/O.
   */
  writeThen(bytes: Uint8Array | readonly Uint8Array[], done: (error: Error | null) => void): boolean {
    if (this.closed) throw this.closedError();
    if (this.#ending !== null) throw writeAfterEnd();
    const length = Array.isArray(bytes) ? bytes.reduce((sum: number, piece: Uint8Array) => sum + piece.length, 0) : (bytes as Uint8Array).length;
    const rc = this.#startWrite(bytes, length, undefined);
    if (rc === kDone) return true;
    if (rc !== kInFlight) throw new WriteOperation(this.handle, undefined, length, done, this).error(rc);
    this.#keepWrite(new WriteOperation(this.handle, undefined, length, done, this));
    return false;
  }

  // Both forms of a write, on LoopCore's one submission path (startWrite, then keepWrite for one
  // left in flight): the write's operation is made only when the kernel did not take it whole.
  #startWrite(bytes: Uint8Array | readonly Uint8Array[], length: number, signal: AbortSignal | undefined): number {
    const rc = this.core.startWrite(this.handle, signal, bytes);
    if (rc === kDone) {
      this.#active = true;
      this.#bytesWritten += length;
    }
    return rc;
  }

  // Counts what is queued meanwhile.
  #keepWrite(operation: WriteOperation): void {
    this.core.keepWrite(operation);
    this.#writesInFlight += 1;
    this.#writableLength += operation.length;
  }

  /** @internal A write in flight completed with `result` (see WriteOperation), before its caller is told. */
  writeCompleted(length: number, result: number): void {
    this.#writableLength -= length;
    this.#writeSettled();
    if (result >= 0) {
      this.#active = true;
      this.#bytesWritten += result === 0 ? length : result;
    }
  }

  #writeSettled(): void {
    this.#writesInFlight -= 1;
    if (this.#writesInFlight === 0) this.#writesDone?.();
  }

  /**
   * @internal Why a write of another API (the Proactor API's, the Reactor API's tryWrite) is
   * refused before any I/O: after end(), its bytes would follow the FIN.
   */
  writeRefusal(): Error | null {
    return this.#ending !== null ? writeAfterEnd() : null;
  }

  /**
   * @internal A Proactor API write was left in flight on this socket: returns the owner its
   * operation completes to, which end() waits for as for the socket's own writes. Its bytes count
   * in neither `writableLength` nor `bytesWritten` (those are `write()`'s), and a torn one closes
   * nothing: the Proactor API leaves that to its caller.
   */
  proactorWriteStarted(): WriteOwner {
    this.#writesInFlight += 1;
    return (this.#proactorWriter ??= this.#newProactorWriter());
  }

  // Apart from proactorWriteStarted: its closures would make every call allocate their context.
  #newProactorWriter(): WriteOwner {
    return { writeCompleted: () => this.#writeSettled(), close: () => {}, timedOut: false };
  }

  /** @internal Whether the socket was closed by its idle timeout or deadline. */
  get timedOut(): boolean {
    return this.#timeouts?.expired === true;
  }

  // One native write moves at most `maxTransfer` bytes; the pieces of a longer one are queued
  // back to back, so they go out in order and before any later write.
  #writeInPieces(bytes: Uint8Array, options: SocketOperationOptions | undefined): Promise<void> {
    const pieces: Promise<void>[] = [];
    for (let offset = 0; offset < bytes.length; offset += maxTransfer) {
      pieces.push(this.write(bytes.subarray(offset, offset + maxTransfer), options));
    }
    return Promise.all(pieces).then(() => undefined);
  }

  /**
   * Half-closes: after every write made before it — `write()`'s and the Proactor API's, awaited
   * or not — sends FIN. Resolves once it has; a write made afterwards, by any API, fails with
   * `ERR_STREAM_WRITE_AFTER_END`. The peer reads EOF and may still write back; keep reading until
   * null, then `close()`.
   */
  end(data?: Uint8Array | string): Promise<void> {
    if (this.#ending !== null) return this.#ending;
    if (this.closed) return Promise.reject(this.closedError());
    const written = data === undefined ? resolved : this.write(data);
    this.#ending = written.then(async () => {
      if (this.#writesInFlight > 0) await new Promise<void>((resolve) => (this.#writesDone = resolve));
      if (this.closed) return;
      const rc = this.core.shutdown(this.handle);
      if (rc < 0) throw systemError(rc, 'shutdown');
    });
    return this.#ending;
  }

  /**
   * Closes the socket once `timeout` ms pass without a byte received or sent; 0 turns it off.
   * Its pending `read()` and writes then reject with code `'ETIMEDOUT'`, and `'timeout'` is
   * emitted just before `'close'`. It drops silent clients and half-open peers (gone without a
   * FIN, so nothing arrives and writes stall). Every byte counts as activity, as with Node's
   * `socket.setTimeout`: a slowloris that trickles a byte now and then stays "active" — bound
   * the time a whole request may take with `setDeadline` for that. Checked by one coarse sweep
   * per loop: the socket closes between `timeout` and 1.25 × `timeout` after its last activity.
   * Bytes count when they reach the socket (once `read()` has started it reading); a single
   * write that takes longer than `timeout` to drain is idle meanwhile — write in pieces.
   */
  setIdleTimeout(timeout: number): this {
    validateInteger('timeout', timeout, 0, 2 ** 31 - 1);
    const timeouts = this.#timeoutsToSet();
    timeouts.idleTimeout = timeout;
    timeouts.lastSeen = performance.now();
    this.#active = false;
    this.#track();
    return this;
  }

  /**
   * Closes the socket `timeout` ms from now, whatever it does meanwhile (as Go's
   * `SetDeadline`), unless called again; 0 clears it. Pending `read()`s and writes reject with
   * `'ETIMEDOUT'`. What stops a slowloris: e.g. a server gives each request 10 s to arrive whole.
   *
   * @example
   * socket.setDeadline(10_000); const request = await readRequest(socket); socket.setDeadline(0);
   */
  setDeadline(timeout: number): this {
    validateInteger('timeout', timeout, 0, 2 ** 31 - 1);
    const timeouts = this.#timeoutsToSet();
    timeouts.deadlineMs = timeout;
    timeouts.deadline = timeout === 0 ? 0 : performance.now() + timeout;
    this.#track();
    return this;
  }

  /** @internal One sweep of the loop's IdleSweeper. */
  sweep(now: number): number {
    const timeouts = this.#timeouts;
    if (this.closed || timeouts === null) return 0;
    if (this.#active) {
      this.#active = false;
      timeouts.lastSeen = now;
      timeouts.noticeSeen = now;
      timeouts.noticeGiven = false;
    }
    const idle = timeouts.idleTimeout !== 0 && now - timeouts.lastSeen >= timeouts.idleTimeout;
    if (idle || (timeouts.deadline !== 0 && now >= timeouts.deadline)) {
      this.#expire();
      return 0;
    }
    if (timeouts.idleNotice !== 0 && !timeouts.noticeGiven && now - timeouts.noticeSeen >= timeouts.idleNotice) {
      timeouts.noticeGiven = true;
      timeouts.onIdleNotice?.();
      if (this.closed) return 0;
    }
    return timeouts.smallest();
  }

  /**
   * @internal Calls `onIdle` once per period of `timeout` ms without a byte received or sent,
   * closing nothing (what `net.Socket.setTimeout` does); 0 turns it off. Checked by the same sweep
   * as `setIdleTimeout`, and independent of it.
   */
  setIdleNotice(timeout: number, onIdle: (() => void) | undefined): void {
    const timeouts = this.#timeoutsToSet();
    timeouts.idleNotice = timeout;
    timeouts.onIdleNotice = timeout === 0 ? undefined : onIdle;
    timeouts.noticeSeen = performance.now();
    timeouts.noticeGiven = false;
    this.#track();
  }

  #timeoutsToSet(): SocketTimeouts {
    return (this.#timeouts ??= new SocketTimeouts());
  }

  #track(): void {
    if (this.closed) return;
    const smallest = this.#timeouts?.smallest() ?? 0;
    if (smallest !== 0) IdleSweeper.of(this.core).add(this, smallest);
  }

  // Timed out: readers and writers learn why, then the socket closes (its in-flight writes
  // complete with ECANCELED, reported as ETIMEDOUT). It is closed before 'timeout' is emitted
  // (then 'close'), so that a listener that throws cannot leave it open and swept no more.
  #expire(): void {
    this.#timeouts!.expired = true;
    const error = systemError(ETIMEDOUT, 'read');
    this.#readError ??= error;
    endReaders(this.#takeReaders(), error);
    this.closeWithReset(false, 'timeout');
  }

  /** Closes at once with an RST instead of a FIN, so that the peer sees `ECONNRESET`. */
  resetAndDestroy(): void {
    this.closeWithReset(true);
  }

  /** Alias of `close()`, for those used to Node's streams. */
  destroy(): void {
    this.close();
  }

  /**
   * Throws a TypeError pointing at `stream()`: a Socket is no Readable to pause (its reading
   * pauses by itself while `read()` is not called). What tls and Node's stream wrappers call first.
   */
  pause(): never {
    throw notAStream('it has no pause()');
  }

  /** Throws a TypeError pointing at `stream()`, as `pause()`. */
  resume(): never {
    throw notAStream('it has no resume()');
  }

  protected onClosed(): void {
    if ((this.#timeouts?.smallest() ?? 0) !== 0) IdleSweeper.of(this.core).delete(this);
    // The owner closed the socket: waiting readers see the end of the stream, not an error.
    endReaders(this.#takeReaders(), null);
    this.#writesDone?.();
  }

  /**
   * @internal SocketStream's push path, instead of a read() promise per chunk: hands `sink` what
   * read() had queued, then each chunk as it arrives, then null at EOF (with the error if reading
   * failed). From then on read() refuses with ERR_SOCKET_BUSY. Reading runs while
   * `pushReading(true)` was the last call: the stream turns it off while its consumer is behind.
   */
  pushTo(sink: ChunkSink): void {
    this.#sink = sink;
    for (const chunk of this.#received.splice(0)) sink(chunk, null);
    this.#receivedBytes = 0;
    if (this.#readError !== null) sink(null, this.#readError);
    else if (this.#eof) sink(null, null);
  }

  /** @internal Starts (true) or stops (false) reading from the kernel into the `pushTo` sink. */
  pushReading(on: boolean): void {
    if (!on) {
      if (this.#streaming && !this.#paused) this.#pause();
    } else if (this.#paused) this.#resume();
    else if (!this.#streaming && !this.#eof && this.#readError === null && !this.closed) {
      const rc = this.core.readStart(this.handle);
      if (rc >= 0) this.#streaming = true;
      else this.#sink?.(null, (this.#readError = systemError(rc, 'read')));
    }
  }

  /** @internal */
  override onData(chunk: Buffer | null, status: number): void {
    this.#active = true;
    if (chunk !== null) this.#bytesRead += chunk.length;
    if (this.#sink !== undefined) {
      if (chunk !== null) return this.#sink(chunk, null);
      this.#streaming = false;
      if (status === 0) this.#eof = true;
      else this.#readError = systemError(status, 'read');
      return this.#sink(null, this.#readError);
    }
    if (chunk !== null) {
      const reader = this.#reader;
      this.#reader = this.#readers.shift();
      if (reader !== undefined) {
        reader.resolve(chunk);
        return;
      }
      if (this.#received.length === 0) this.#received = [chunk];  // see #addReader
      else this.#received.push(chunk);
      this.#receivedBytes += chunk.length;
      if (!this.#paused && this.#receivedBytes >= this.readableHighWaterMark) this.#pause();
      return;
    }
    this.#streaming = false;
    if (status === 0) {
      this.#eof = true;
      endReaders(this.#takeReaders(), null);
    } else {
      this.#readError = systemError(status, 'read');
      endReaders(this.#takeReaders(), this.#readError);
    }
  }

  // The first reader in a field, then an exact-size array: push() on an empty array reserves 16
  // slots, which an idle connection waiting on one reader would carry for ever.
  #addReader(reader: ReadWaiter): void {
    if (this.#reader === undefined) this.#reader = reader;
    else if (this.#readers.length === 0) this.#readers = [reader];
    else this.#readers.push(reader);
  }

  #removeReader(reader: ReadWaiter): void {
    if (this.#reader === reader) {
      this.#reader = this.#readers.shift();
      return;
    }
    const index = this.#readers.indexOf(reader);
    if (index !== -1) this.#readers.splice(index, 1);
  }

  // Every waiting reader, in order, leaving none.
  #takeReaders(): ReadWaiter[] {
    const readers = this.#reader === undefined ? this.#readers : [this.#reader, ...this.#readers];
    this.#reader = undefined;
    this.#readers = none;
    return readers;
  }

  // A reader that falls behind stops the socket being read, so the kernel's window fills and the
  // peer slows down, instead of chunks piling up in memory.
  #pause(): void {
    if (this.core.readStop(this.handle) >= 0) this.#paused = true;
  }

  #resume(): void {
    if (this.closed || this.core.readStart(this.handle) >= 0) this.#paused = false;
  }
}

const ignore = (): void => {};

// Tells each waiting reader the end of the stream (`error` null) or its error, each apart: a
// pooled read's callback that throws is reported and costs the readers after it nothing.
function endReaders(readers: readonly ReadWaiter[], error: Error | null): void {
  for (const reader of readers) {
    try {
      if (error === null) reader.resolve(null);
      else reader.reject(error);
    } catch (thrown) {
      reportLater(thrown);
    }
  }
}

function refuseStreamEvent(event: string | symbol): string | symbol {
  if (streamEvents.has(event)) throw notAStream(`it never emits '${String(event)}'`);
  return event;
}

function validateOperationOptions(options: SocketOperationOptions): AbortSignal | undefined {
  validateObject('options', options);
  const { signal } = options;  // read once: a getter may answer something else the second time
  validateAbortSignal('options.signal', signal);
  return signal;
}

// One object per iteration, its methods shared: a connection waiting for its next chunk holds
// the read's promise alone, without a suspended frame or closures (see the idle benchmark).
// The iterator is its own read waiter: a handler parked in `for await` holds one promise, not a
// read() promise chained to the iterator's.
class SocketIterator implements AsyncIterator<Buffer, undefined>, ReadWaiter {
  readonly #socket: Socket;
  // The waiting next()'s resolve function alone: an idle connection keeps what it holds, and a
  // reject function would be 56 bytes more of it (an error settles it with a rejected promise).
  #settle: Settle | undefined;

  constructor(socket: Socket) {
    this.#socket = socket;
  }

  next(): Promise<IteratorResult<Buffer, undefined>> {
    // A next() called while one waits (the protocol allows it) queues a reader of its own.
    if (this.#settle !== undefined) return this.#socket.read().then(toIteratorResult);
    const next = new Promise<IteratorResult<Buffer, undefined>>(captureSettle);
    this.#settle = captured;
    captured = undefined;
    this.#socket.readNext(this, undefined, 'socket.read()');
    return next;
  }

  /** @internal */
  resolve(chunk: Buffer | null): void {
    const settle = this.#settle!;
    this.#settle = undefined;
    settle(toIteratorResult(chunk));
  }

  /** @internal */
  reject(error: Error): void {
    const settle = this.#settle!;
    this.#settle = undefined;
    settle(Promise.reject(error));
  }

  // The loop was left early: as Node's stream iterator, the socket is closed.
  return(): Promise<IteratorResult<Buffer, undefined>> {
    this.#socket.close();
    return Promise.resolve({ done: true, value: undefined });
  }

  throw(error?: unknown): Promise<IteratorResult<Buffer, undefined>> {
    this.#socket.close();
    return Promise.reject(error);
  }
}

type Settle = (result: IteratorResult<Buffer, undefined> | Promise<never>) => void;

// next()'s promise executor, one for all: an executor closing over its iterator was a function
// and a context made every round trip (96 of the ~1 000 bytes a net-layer echo allocates each).
// The Promise constructor runs it synchronously, so `captured` is read and cleared at once.
let captured: Settle | undefined;
const captureSettle = (resolve: Settle): void => void (captured = resolve);

function toIteratorResult(chunk: Buffer | null): IteratorResult<Buffer, undefined> {
  return chunk === null ? { done: true, value: undefined } : { done: false, value: chunk };
}

/** The timeouts of a socket that has any (most have none, and keep no object for them). */
class SocketTimeouts {
  idleTimeout = 0;     // ms; 0 = none
  deadline = 0;        // performance.now() at which the socket is closed; 0 = none
  deadlineMs = 0;      // the delay it was set with, for the sweep's period
  lastSeen = 0;        // the sweep (or set-up) time after the last activity
  idleNotice = 0;      // ms; 0 = none (SocketStream.setTimeout: notify, do not close)
  onIdleNotice: (() => void) | undefined = undefined;
  noticeSeen = 0;      // as lastSeen, since setIdleNotice
  noticeGiven = false; // notified for this idle period
  expired = false;     // closed by its idle timeout or deadline

  /** The sweep period this socket needs: its smallest timeout (0: none). */
  smallest(): number {
    return smallestTimeout(smallestTimeout(this.idleTimeout, this.deadline === 0 ? 0 : this.deadlineMs), this.idleNotice);
  }
}

/** The smaller of two timeouts where 0 means none; 0 when both are. */
function smallestTimeout(a: number, b: number): number {
  return a === 0 ? b : b === 0 ? a : Math.min(a, b);
}
