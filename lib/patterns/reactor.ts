import { InterestBits, native } from '../binding.js';
import type { LoopCore } from '../core.js';
import { errnoOf, invalidArgValue, outOfRange, socketReadBusy, systemError, validateBuffer, validateFunction, validateRange, validateReadBuffer } from '../errors.js';
import { Handle, validateHandle } from '../handle.js';
import { Server } from '../net/server.js';
import { Socket } from '../net/socket.js';

/** Readiness a reactor can wait for. */
export type Readiness = 'readable' | 'writable';

const { EAGAIN } = native.errors;
const EBUSY = errnoOf('EBUSY');
const kTargetType = 'a twinloop Socket or Server';

/**
 * The reactor pattern: the loop says when a socket *can* be read or written, and your callback
 * does the non-blocking call (`tryRead`, `tryWrite`, `tryAccept`). Level-triggered: the callback
 * runs again on the next turn of the loop for as long as the socket stays ready and watched.
 *
 * @example
 * loop.reactor.watch(socket, 'readable', () => {
 *   const n = loop.reactor.tryRead(socket, buffer); // null: nothing to read after all
 * });
 */
export class ReactorApi {
  readonly #core: LoopCore;

  /** @internal */
  constructor(core: LoopCore) {
    this.#core = core;
  }

  /** Calls `callback` whenever `target` is ready for `readiness`, until `unwatch`. */
  watch(target: Socket | Server, readiness: Readiness, callback: () => void): void {
    validateHandle(this.#core, 'target', target, Handle.isHandle, kTargetType);
    validateReadiness(readiness);
    validateFunction('callback', callback);
    target.assertOpen();
    const key = watcherKeys[readiness];
    const previous = target[key];
    target[key] = callback;
    const rc = this.#core.watch(target.handle, interestOf(target));
    if (rc < 0) {
      target[key] = previous;
      throw systemError(rc, 'watch');
    }
  }

  /** Stops watching `readiness` (or both, when omitted). */
  unwatch(target: Socket | Server, readiness?: Readiness): void {
    validateHandle(this.#core, 'target', target, Handle.isHandle, kTargetType);
    if (readiness !== undefined) validateReadiness(readiness);
    if (target.closed) return;
    if (readiness === undefined || readiness === 'readable') target.readableWatcher = undefined;
    if (readiness === undefined || readiness === 'writable') target.writableWatcher = undefined;
    target.check(this.#core.watch(target.handle, interestOf(target)), 'watch');
  }

  /**
   * Reads what is there into `buffer` — or into its `length` bytes from `offset` (as
   * `fs.readSync`; `length` defaults to the rest): the byte count, 0 at EOF, or null if nothing is
   * ready. An empty `buffer` or a `length` of 0 is a RangeError: its 0 could not be told from
   * EOF. A socket the net layer reads (`socket.read()`, for await) is an `ERR_SOCKET_BUSY`
   * error: one API reads a socket.
   */
  tryRead(socket: Socket, buffer: Uint8Array, offset?: number, length?: number): number | null {
    validateHandle(this.#core, 'socket', socket, Socket.isSocket, 'a twinloop Socket');
    validateReadBuffer('buffer', buffer);
    if (offset !== undefined || length !== undefined) {
      offset ??= 0;
      length = validateRange(buffer.length, offset, length);
      if (length === 0) throw outOfRange('length', '>= 1 (a read of 0 bytes cannot be told from EOF)', 0);
    }
    socket.assertOpen();
    const n = this.#core.tryRead(socket.handle, buffer, offset, length);
    if (n === EAGAIN) return null;
    if (n === EBUSY) throw socketReadBusy('loop.reactor.tryRead');
    return socket.check(n, 'read');
  }

  /**
   * Writes what the socket takes now of `buffer` — or of its `length` bytes from `offset`, which
   * spares a `subarray()` per chunk: the byte count, or null if it takes nothing. Throws
   * `ERR_STREAM_WRITE_AFTER_END` once `socket.end()` was called.
   */
  tryWrite(socket: Socket, buffer: Uint8Array, offset?: number, length?: number): number | null {
    validateHandle(this.#core, 'socket', socket, Socket.isSocket, 'a twinloop Socket');
    validateBuffer('buffer', buffer);
    if (offset !== undefined || length !== undefined) {
      offset ??= 0;
      length = validateRange(buffer.length, offset, length);
    }
    socket.assertOpen();
    const refusal = socket.writeRefusal();
    if (refusal !== null) throw refusal;
    const n = this.#core.tryWrite(socket.handle, buffer, offset, length);
    if (n === EAGAIN) return null;
    return socket.check(n, 'write');
  }

  /** Accepts one pending connection, or returns null if none is waiting. */
  tryAccept(server: Server): Socket | null {
    validateHandle(this.#core, 'server', server, Server.isServer, 'a twinloop Server');
    server.assertOpen();
    const handle = this.#core.tryAccept(server.handle);
    if (handle === EAGAIN) return null;
    return server.adoptConnection(server.check(handle, 'accept'));
  }
}

const watcherKeys = { readable: 'readableWatcher', writable: 'writableWatcher' } as const;

function interestOf(target: Handle): number {
  return (target.readableWatcher ? InterestBits.readable : 0) | (target.writableWatcher ? InterestBits.writable : 0);
}

function validateReadiness(readiness: unknown): asserts readiness is Readiness {
  if (readiness !== 'readable' && readiness !== 'writable') throw invalidArgValue('readiness', "'readable' or 'writable'", readiness);
}
