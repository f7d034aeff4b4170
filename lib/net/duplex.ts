// A node:stream Duplex over a twinloop Socket, for Node's own stream users (node:http, tls,
// stream.pipeline, frameworks). Made only when `socket.stream()` asks for it: a connection that
// never needs one carries no stream state.
import { isIP } from 'node:net';
import { Duplex } from 'node:stream';

import type { NativeAddress } from '../binding.js';
import { validateInteger, validateObject } from '../errors.js';
import type { Socket } from './socket.js';

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
 * Reads go through `socket.read()`: when the consumer falls behind (`push()` returns false) the
 * stream stops reading, the socket pauses at its `readableHighWaterMark`, and the kernel's window
 * slows the peer. Each `_write` resolves when the kernel has taken the bytes, so a slow peer
 * bounds what is queued to the stream's `writableHighWaterMark` plus one batch. `end()` sends FIN
 * after the queued writes; the peer's FIN ends the readable side. `destroy()` closes the socket
 * (`resetAndDestroy()` sends an RST instead), and the socket closing destroys the stream.
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
  #reading = false;
  #bytesRead = 0;
  #bytesWritten = 0;
  #local: NativeAddress | undefined;
  #timeoutListener: (() => void) | undefined;
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

  override _read(): void {
    if (this.#reading) return;
    this.#reading = true;
    void this.#pump();
  }

  // Reads until the consumer wants no more (push returned false) or the stream ends; _read
  // starts it again.
  async #pump(): Promise<void> {
    try {
      for (;;) {
        const chunk = await this.socket.read();
        if (this.destroyed) return;
        if (chunk === null) {
          this.push(null);
          return;
        }
        this.#bytesRead += chunk.length;
        if (!this.push(chunk)) return;
      }
    } catch (error) {
      if (!this.destroyed) this.destroy(error as Error);
    } finally {
      this.#reading = false;
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.socket.write(chunk).then(() => {
      this.#bytesWritten += chunk.length;
      callback();
    }, callback);
  }

  // Chunks buffered while a write was in flight go to the socket together: it sends them in
  // order, and the kernel gets a batch instead of one chunk per round trip through the loop.
  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (error?: Error | null) => void): void {
    let length = 0;
    const writes = chunks.map(({ chunk }) => {
      length += chunk.length;
      return this.socket.write(chunk);
    });
    Promise.all(writes).then(() => {
      this.#bytesWritten += length;
      callback();
    }, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end().then(() => callback(), (error: Error & { code?: string }) => {
      // Closed meanwhile (the peer reset, the owner closed it): nothing left to end.
      callback(error.code === 'ERR_SOCKET_CLOSED' ? null : error);
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
    if (callback !== undefined) {
      if (this.#timeoutListener !== undefined) this.removeListener('timeout', this.#timeoutListener);
      this.#timeoutListener = timeout === 0 ? undefined : callback;
      if (timeout !== 0) this.once('timeout', callback);
    }
    if (!this.socket.closed) this.socket.setIdleNotice(timeout, () => this.emit('timeout'));
    return this;
  }

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

  /** Bytes received and handed to the stream. */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** Bytes the kernel has taken plus those still buffered in the stream, as `net.Socket` counts. */
  get bytesWritten(): number {
    return this.#bytesWritten + this.writableLength;
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
