import type { NativeAddress } from '../binding.js';
import { native } from '../binding.js';
import type { LoopCore } from '../core.js';
import { codedError, systemError, validateBuffer } from '../errors.js';
import { Handle } from '../handle.js';

const { ECANCELED } = native.errors;
const resolved: Promise<void> = Promise.resolve();

export interface SocketOptions {
  /** Bytes received but not yet read after which reading pauses (default 1 MiB). */
  readableHighWaterMark?: number;
  /** Bytes queued for the kernel above which `writableNeedDrain` is true (default 1 MiB). */
  writableHighWaterMark?: number;
}

interface ReadWaiter {
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
  #received: Buffer[] = [];
  #receivedBytes = 0;
  #streaming = false;
  #paused = false;
  #eof = false;
  #readError: Error | null = null;
  #readers: ReadWaiter[] = [];
  #writesInFlight = 0;
  #writableLength = 0;
  #ending: Promise<void> | null = null;
  #writesDone: (() => void) | null = null;
  #remote: NativeAddress | null = null;

  /** @internal */
  constructor(core: LoopCore, handle: number, options: SocketOptions = {}) {
    super(core, handle);
    this.readableHighWaterMark = options.readableHighWaterMark ?? 1024 * 1024;
    this.writableHighWaterMark = options.writableHighWaterMark ?? 1024 * 1024;
  }

  /** Bytes handed to `write()` that the kernel has not taken yet. */
  get writableLength(): number {
    return this.#writableLength;
  }

  /** True while more than `writableHighWaterMark` bytes wait for the kernel: await your writes. */
  get writableNeedDrain(): boolean {
    return this.#writableLength > this.writableHighWaterMark;
  }

  /** The local address. */
  address(): NativeAddress {
    this.assertOpen();
    const address = this.core.native.address(this.handle, false);
    if (typeof address === 'number') throw systemError(address, 'getsockname');
    return address;
  }

  /** The peer's address, or undefined for a Unix socket without one. */
  get remoteAddress(): string | undefined {
    return this.#peer()?.address || undefined;
  }

  get remotePort(): number | undefined {
    return this.#peer()?.port || undefined;
  }

  #peer(): NativeAddress | null {
    if (this.#remote === null && !this.closed) {
      const address = this.core.native.address(this.handle, true);
      if (typeof address !== 'number') this.#remote = address;
    }
    return this.#remote;
  }

  /**
   * The next chunk of received bytes, or null once the peer has ended its side (or this socket
   * was closed). Rejects with the socket's error, e.g. `ECONNRESET`.
   */
  read(): Promise<Buffer | null> {
    if (this.#received.length > 0) {
      const chunk = this.#received.shift()!;
      this.#receivedBytes -= chunk.length;
      if (this.#paused && this.#receivedBytes < this.readableHighWaterMark) this.#resume();
      return Promise.resolve(chunk);
    }
    if (this.#readError !== null) return Promise.reject(this.#readError);
    if (this.#eof || this.closed) return Promise.resolve(null);
    if (!this.#streaming) {
      const rc = this.core.native.readStart(this.handle);
      if (rc < 0) return Promise.reject(systemError(rc, 'read'));
      this.#streaming = true;
    }
    return new Promise((resolve, reject) => this.#readers.push({ resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: async () => {
        const chunk = await this.read();
        return chunk === null ? { done: true, value: undefined } : { done: false, value: chunk };
      },
    };
  }

  /**
   * Sends `data`; resolves once the kernel has taken every byte of it. Writes are sent in the
   * order they were made. Await them (or watch `writableNeedDrain`) to bound what is queued.
   */
  write(data: Uint8Array | string): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    validateBuffer('data', bytes);
    if (this.closed) return Promise.reject(this.closedError());
    if (this.#ending !== null) return Promise.reject(codedError('ERR_STREAM_WRITE_AFTER_END', 'write after end'));
    if (bytes.length === 0) return resolved;
    const id = this.core.nextOperationId();
    const rc = this.core.native.write(this.handle, bytes, id);
    if (rc === 1) return resolved;
    if (rc < 0) return Promise.reject(systemError(rc, 'write'));
    this.#writesInFlight += 1;
    this.#writableLength += bytes.length;
    return new Promise((resolve, reject) => {
      this.core.expect(
        id,
        (result) => {
          this.#writesInFlight -= 1;
          this.#writableLength -= bytes.length;
          if (this.#writesInFlight === 0) this.#writesDone?.();
          if (result >= 0) resolve();
          else if (result === ECANCELED) reject(codedError('ERR_SOCKET_CLOSED', 'Socket was closed with this write in flight'));
          else reject(systemError(result, 'write'));
        },
        bytes,
      );
    });
  }

  /**
   * Half-closes: after the queued writes, sends FIN. The peer reads EOF and may still write back;
   * keep reading until null, then `close()`.
   */
  end(data?: Uint8Array | string): Promise<void> {
    if (this.#ending !== null) return this.#ending;
    if (this.closed) return Promise.reject(this.closedError());
    const written = data === undefined ? resolved : this.write(data);
    this.#ending = written.then(async () => {
      if (this.#writesInFlight > 0) await new Promise<void>((resolve) => (this.#writesDone = resolve));
      if (this.closed) return;
      const rc = this.core.native.shutdown(this.handle);
      if (rc < 0) throw systemError(rc, 'shutdown');
    });
    return this.#ending;
  }

  /** Closes at once with an RST instead of a FIN, so that the peer sees `ECONNRESET`. */
  resetAndDestroy(): void {
    this.closeWithReset(true);
  }

  /** Alias of `close()`, for those used to Node's streams. */
  destroy(): void {
    this.close();
  }

  protected onClosed(): void {
    // The owner closed the socket: waiting readers see the end of the stream, not an error.
    for (const reader of this.#readers.splice(0)) reader.resolve(null);
    this.#writesDone?.();
  }

  /** @internal */
  override onData(chunk: Buffer | null, status: number): void {
    if (chunk !== null) {
      const reader = this.#readers.shift();
      if (reader !== undefined) {
        reader.resolve(chunk);
        return;
      }
      this.#received.push(chunk);
      this.#receivedBytes += chunk.length;
      if (!this.#paused && this.#receivedBytes >= this.readableHighWaterMark) this.#pause();
      return;
    }
    this.#streaming = false;
    if (status === 0) {
      this.#eof = true;
      for (const reader of this.#readers.splice(0)) reader.resolve(null);
    } else {
      this.#readError = systemError(status, 'read');
      for (const reader of this.#readers.splice(0)) reader.reject(this.#readError);
    }
  }

  // A reader that falls behind stops the socket being read, so the kernel's window fills and the
  // peer slows down, instead of chunks piling up in memory.
  #pause(): void {
    if (this.core.native.readStop(this.handle) >= 0) this.#paused = true;
  }

  #resume(): void {
    if (this.closed || this.core.native.readStart(this.handle) >= 0) this.#paused = false;
  }
}
