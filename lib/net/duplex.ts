// A node:stream Duplex over a twinloop Socket, for Node's own stream users (node:http, tls,
// stream.pipeline, frameworks). Made only when `socket.stream()` asks for it: a connection that
// never needs one carries no stream state.
import { isIP } from 'node:net';
import { Duplex } from 'node:stream';

import { native, type NativeAddress } from '../binding.js';
import { validateInteger, validateObject } from '../errors.js';
import type { ChunkSink, Socket } from './socket.js';

// Chunks that _writev copies into one buffer, for one write (and one syscall) instead of many:
// below this much the copy costs less than the extra writes.
const { maxTransfer } = native;
const kCoalesceBytes = 64 * 1024;

/** Options of `Socket.stream()`, read by its first call only. */
export interface SocketStreamOptions {
  /**
   * Whether the writable side stays open after the peer ended its side (default true, as a
   * server needs to answer a request that ended with FIN). With false, EOF ends this side too.
   */
  allowHalfOpen?: boolean;
  /** Bytes the stream buffers ahead of its consumer before it stops reading (Node's default). */
  readableHighWaterMark?: number;
  /** Bytes the stream buffers before `write()` returns false (Node's default). */
  writableHighWaterMark?: number;
}

/**
 * A `stream.Duplex` over a twinloop `Socket`, with the members of `net.Socket` that node:http and
 * tls use. Get it from `socket.stream()`.
 *
 * The socket pushes received chunks straight into the stream: when the consumer falls behind
 * (`push()` returns false) the socket stops reading, and the kernel's window slows the peer. A
 * write calls back once the socket holds at most the stream's `writableHighWaterMark` (at once,
 * usually), so a slow peer bounds what is queued to that, the stream's own buffer and one chunk;
 * `bytesWritten` counts bytes once handed to the socket, as `net.Socket` does. `end()` sends FIN
 * after the queued writes; the peer's FIN ends the readable side. `destroy()` closes the socket
 * (`resetAndDestroy()` sends an RST instead), and the socket closing destroys the stream, without
 * an error (a failed read or write, e.g. `ECONNRESET`, destroys it with that error).
 *
 * Differences from `net.Socket`: `setTimeout` is checked by the loop's idle sweep, so
 * `'timeout'` comes between `ms` and 1.25 × `ms` after the last byte moved, never early.
 *
 * @example
 * await loop.listen({ port: 8080 }, (socket) => { httpServer.emit('connection', socket.stream()); });
 */
export class SocketStream extends Duplex {
  /** The twinloop socket underneath. */
  readonly socket: Socket;
  #pushing = false;
  #local: NativeAddress | undefined;
  #timeoutListener: (() => void) | undefined;
  #timeout: number | undefined;
  #reset = false;

  /** @internal Use `socket.stream()`. */
  constructor(socket: Socket, options: SocketStreamOptions = {}) {
    validateObject('options', options as unknown);
    const { allowHalfOpen = true, readableHighWaterMark, writableHighWaterMark } = options;
    super({ allowHalfOpen, readableHighWaterMark, writableHighWaterMark, autoDestroy: true, emitClose: true });
    this.socket = socket;
    try {
      this.#local = socket.address();
    } catch {
      // Already closed: the stream is destroyed just below, with no address to report.
    }
    socket.peerAddress();  // cached now, so that remoteAddress still answers after close
    // The owner (or the loop) closed the socket under the stream. Deferred a turn, so that a read
    // or write failing at the same moment (ETIMEDOUT, ECONNRESET) destroys it with its error first.
    const onSocketClose = (): void => {
      setImmediate(() => {
        if (!this.destroyed) this.destroy();
      });
    };
    if (socket.closed) onSocketClose();
    else socket.once('close', onSocketClose);
  }

  // The socket pushes each chunk as it arrives, straight from the loop's dispatch: no promise per
  // chunk. When the consumer falls behind (push returned false) the socket stops reading; _read,
  // called once the consumer wants more, starts it again.
  override _read(): void {
    if (!this.#pushing) {
      this.#pushing = true;
      this.socket.pushTo(this.#onChunk);
    }
    if (!this.destroyed) this.socket.pushReading(true);
  }

  readonly #onChunk: ChunkSink = (chunk, error) => {
    if (this.destroyed) return;
    if (chunk === null) {
      if (error === null) this.push(null);
      else this.destroy(error);
    } else if (!this.push(chunk)) this.socket.pushReading(false);
  };

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#send(chunk, callback);
  }

  // Chunks buffered while a write was in flight (or corked, as node:http does for a response) go
  // to the socket together: small ones gathered by one native write, so the kernel gets one send.
  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (error?: Error | null) => void): void {
    // An array of our own, each chunk read once: chunks.map() would build its result with the
    // array's species constructor, which may leave accessors (user JavaScript) for the native
    // write to run, and a chunk read twice may not be the chunk that was counted.
    const pieces: Buffer[] = [];
    let length = 0;
    for (let i = 0; i < chunks.length; i++) {
      const { chunk } = chunks[i]!;
      pieces.push(chunk);
      length += chunk.length;
    }
    if (length <= kCoalesceBytes) {
      this.#send(pieces, callback, length);
      return;
    }
    for (let i = 0; i < pieces.length - 1; i++) this.#send(pieces[i]!, undefined);
    this.#send(pieces[pieces.length - 1]!, callback);
  }

  // Hands `chunk` to the socket, which copies what the kernel does not take at once. The stream
  // calls back as soon as the socket holds no more than the stream's own high-water mark — at once
  // when the kernel took it all (the common case for a response) — so back-pressure reaches the
  // writer only when the peer really falls behind, and a response costs no promise. A write that
  // fails after that destroys the stream with its error (as a net.Socket's late write error does).
  // Without `callback` (all but the last of a _writev), only errors are watched.
  // An array of chunks (`length` bytes in all, at most kCoalesceBytes) goes as one write.
  #send(chunk: Buffer | Buffer[], callback: ((error?: Error | null) => void) | undefined, length = (chunk as Buffer).length): void {
    if (length === 0) return callback?.();
    if (!Array.isArray(chunk) && length > maxTransfer) {
      // Beyond one native write: socket.write() splits it, in order with the writes around it.
      this.socket.write(chunk).then(() => callback?.(), (error: Error) => {
        this.#writeFailed(error);
        callback?.();
      });
      return;
    }
    const waitForKernel = callback !== undefined && this.socket.writableLength + length > this.writableHighWaterMark;
    try {
      const done = waitForKernel
        ? (error: Error | null): void => {
            if (error !== null) this.#writeFailed(error);
            callback();
          }
        : this.#watchWrite;
      if (this.socket.writeThen(chunk, done) || !waitForKernel) callback?.();
    } catch (error) {
      this.#writeFailed(error as Error);
      callback?.();
    }
  }

  readonly #watchWrite = (error: Error | null): void => {
    if (error !== null) this.#writeFailed(error);
  };

  // A socket closed under the stream (by its owner, or the loop) fails its writes with
  // ERR_SOCKET_CLOSED / ERR_LOOP_CLOSED: that is a destroy, as net.Socket.destroy(), not an error.
  readonly #writeFailed = (error: Error): void => {
    if (!this.destroyed) this.destroy(isClosedError(error) ? undefined : error);
  };

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end().then(() => callback(), (error: Error & { code?: string }) => {
      // Closed meanwhile (the peer reset, the owner closed it): nothing left to end.
      callback(isClosedError(error) ? null : error);
    });
  }

  // As net.Socket: destroy() closes, with or without an error; only resetAndDestroy() resets.
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#clearTimeout();
    if (this.#reset) this.socket.resetAndDestroy();
    else this.socket.close();
    callback(error);
  }

  /** Destroys the stream and closes the socket with an RST, so that the peer sees `ECONNRESET`. */
  resetAndDestroy(): this {
    this.#reset = true;
    return this.destroy();
  }

  /** Ends the writable side, then destroys the stream once it has finished (as `net.Socket`). */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  /**
   * Emits `'timeout'` (and calls `callback` once, if given) after `timeout` ms without a byte
   * received or sent; 0 turns it off. As with `net.Socket`, nothing is closed: the listener
   * decides (node:http destroys the stream). It fires once per idle period. Unlike
   * `socket.setIdleTimeout`, which closes the socket, and independent of it.
   */
  setTimeout(timeout: number, callback?: () => void): this {
    validateInteger('timeout', timeout, 0, 2 ** 31 - 1);
    this.#timeout = timeout;
    if (callback !== undefined) {
      if (this.#timeoutListener !== undefined) this.removeListener('timeout', this.#timeoutListener);
      this.#timeoutListener = timeout === 0 ? undefined : callback;
      if (timeout !== 0) this.once('timeout', callback);
    }
    if (!this.socket.closed) this.socket.setIdleNotice(timeout, this.#emitTimeout);
    return this;
  }

  /** The idle timeout `setTimeout` last set, in ms (0: none), as `net.Socket.timeout`; undefined before. */
  get timeout(): number | undefined {
    return this.#timeout;
  }

  // One function for every setTimeout: node:http calls it twice per keep-alive request.
  readonly #emitTimeout = (): void => void this.emit('timeout');

  #clearTimeout(): void {
    if (!this.socket.closed) this.socket.setIdleNotice(0, undefined);
  }

  /** As `socket.setNoDelay()` (TCP_NODELAY; twinloop's sockets start with it on). */
  setNoDelay(noDelay?: boolean): this {
    this.socket.setNoDelay(noDelay);
    return this;
  }

  /** As `socket.setKeepAlive()`: SO_KEEPALIVE, the first probe after `initialDelay` ms. */
  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.socket.setKeepAlive(enable, initialDelay);
    return this;
  }

  /** As `socket.ref()`: the socket keeps Node's process alive (the default). */
  ref(): this {
    this.socket.ref();
    return this;
  }

  /** As `socket.unref()`: the socket alone does not keep Node's process alive. */
  unref(): this {
    this.socket.unref();
    return this;
  }

  /** The local address, as `net.Socket.address()` (an empty object once unknown). */
  address(): NativeAddress | Record<string, never> {
    return this.#local ?? {};
  }

  get localAddress(): string | undefined {
    return this.#local?.address || undefined;
  }

  get localPort(): number | undefined {
    return this.#local?.port || undefined;
  }

  get localFamily(): string | undefined {
    return this.#local?.family;
  }

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }

  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }

  get remoteFamily(): string | undefined {
    const version = isIP(this.socket.remoteAddress ?? '');
    return version === 0 ? undefined : `IPv${version}`;
  }

  /** Bytes received from the peer (the socket's count). */
  get bytesRead(): number {
    return this.socket.bytesRead;
  }

  /** Bytes the kernel took plus those still queued in the socket and the stream, as `net.Socket` counts. */
  get bytesWritten(): number {
    return this.socket.bytesWritten + this.socket.writableLength + this.writableLength;
  }

  /** As `net.Socket.readyState`, for the libraries that look. */
  get readyState(): 'open' | 'readOnly' | 'writeOnly' | 'closed' {
    if (this.destroyed) return 'closed';
    if (this.readable && this.writable) return 'open';
    if (this.readable) return 'readOnly';
    if (this.writable) return 'writeOnly';
    return 'closed';
  }

  /** False: the stream exists only once connected. */
  get connecting(): boolean {
    return false;
  }

  get pending(): boolean {
    return false;
  }
}

function isClosedError(error: Error): boolean {
  const { code } = error as Error & { code?: unknown };
  return code === 'ERR_SOCKET_CLOSED' || code === 'ERR_LOOP_CLOSED';
}
