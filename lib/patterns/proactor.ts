import { native } from '../binding.js';
import type { LoopCore } from '../core.js';
import { codedError, invalidArgType, systemError, validateBuffer, validateFunction } from '../errors.js';
import { Server } from '../net/server.js';
import { Socket } from '../net/socket.js';

const { ECANCELED } = native.errors;

/** Node-style completion callback. */
export type Completion<T> = (error: Error | null, result?: T) => void;

/**
 * The proactor pattern: you submit the operation with its buffer, and are called back when the
 * kernel has *done* it — the bytes are already in (or out of) your buffer. Each method returns a
 * promise, or takes a Node-style callback instead. The buffer must not be touched until then;
 * twinloop keeps it referenced so that garbage collection cannot free it under the kernel.
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

  /** Reads into `buffer`: completes with the byte count (0 at EOF). */
  read(socket: Socket, buffer: Uint8Array): Promise<number>;
  read(socket: Socket, buffer: Uint8Array, callback: Completion<number>): void;
  read(socket: Socket, buffer: Uint8Array, callback?: Completion<number>): Promise<number> | void {
    validateSocket(socket);
    validateBuffer('buffer', buffer);
    return this.#submit(callback, socket, 'read', buffer, (id) => this.#core.native.read(socket.handle, buffer, id), (n) => n);
  }

  /** Writes all of `buffer` (continuing after short writes): completes with its length. */
  write(socket: Socket, buffer: Uint8Array): Promise<number>;
  write(socket: Socket, buffer: Uint8Array, callback: Completion<number>): void;
  write(socket: Socket, buffer: Uint8Array, callback?: Completion<number>): Promise<number> | void {
    validateSocket(socket);
    validateBuffer('buffer', buffer);
    const length = buffer.length;
    return this.#submit(callback, socket, 'write', buffer, (id) => this.#core.native.write(socket.handle, buffer, id), () => length);
  }

  /** Accepts one connection. */
  accept(server: Server): Promise<Socket>;
  accept(server: Server, callback: Completion<Socket>): void;
  accept(server: Server, callback?: Completion<Socket>): Promise<Socket> | void {
    if (!(server instanceof Server)) throw invalidArgType('server', 'a twinloop Server', server);
    return this.#submit(callback, server, 'accept', undefined, (id) => this.#core.native.accept(server.handle, id), (handle) =>
      server.adoptConnection(handle),
    );
  }

  #submit<T>(
    callback: Completion<T> | undefined,
    target: Socket | Server,
    syscall: string,
    buffer: Uint8Array | undefined,
    start: (id: number) => number,
    toResult: (value: number) => T,
  ): Promise<T> | void {
    if (callback !== undefined) validateFunction('callback', callback);
    let settle: Completion<T> = callback!;
    const promise =
      callback === undefined
        ? new Promise<T>((resolve, reject) => {
            settle = (error, result) => (error ? reject(error) : resolve(result as T));
          })
        : undefined;
    const complete = (value: number): void => {
      if (value >= 0) settle(null, toResult(value));
      else if (value === ECANCELED) settle(codedError('ERR_SOCKET_CLOSED', `Socket was closed with this ${syscall} in flight`));
      else settle(systemError(value, syscall));
    };
    // Callbacks are never called synchronously, whatever the outcome.
    if (target.closed) {
      process.nextTick(settle, target.closedError());
      return promise;
    }
    const id = this.#core.nextOperationId();
    const rc = start(id);
    if (rc < 0) {
      process.nextTick(settle, systemError(rc, syscall));
    } else if (rc === 1 && syscall === 'write') {
      process.nextTick(complete, 0);
    } else {
      this.#core.expect(id, complete, buffer);
    }
    return promise;
  }
}

function validateSocket(socket: unknown): asserts socket is Socket {
  if (!(socket instanceof Socket)) throw invalidArgType('socket', 'a twinloop Socket', socket);
}
