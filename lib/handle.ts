import { EventEmitter } from 'node:events';

import { reportLater, type LoopCore } from './core.js';
import { foreignHandle, invalidArgType, loopClosed, socketClosed, systemError } from './errors.js';

/**
 * `Symbol.asyncDispose`, or on a Node without it the symbol Node itself falls back to, so that
 * `await using` works wherever the runtime (or a polyfill) supports it.
 */
export const asyncDispose: typeof Symbol.asyncDispose =
  Symbol.asyncDispose ?? (Symbol.for('nodejs.asyncDispose') as typeof Symbol.asyncDispose);

/** What both sockets and servers are: an open descriptor owned by one loop. */
export abstract class Handle extends EventEmitter {
  /** @internal */
  readonly core: LoopCore;
  /** @internal The native handle id (slot and generation), never an fd. */
  readonly handle: number;
  /** @internal The reactor callbacks registered through `loop.reactor.watch`. */
  readableWatcher: (() => void) | undefined = undefined;
  /** @internal */
  writableWatcher: (() => void) | undefined = undefined;
  #closed = false;

  /**
   * @internal Whether `value` was made by this class: a brand check, as `instanceof` with the
   * class passed in as an argument looks up `Symbol.hasInstance` along the prototype chain on
   * every call (~700 instructions a round trip of the proactor echo, in callgrind).
   */
  static isHandle(value: unknown): value is Handle {
    return typeof value === 'object' && value !== null && #closed in value;
  }

  /** @internal */
  constructor(core: LoopCore, handle: number) {
    super();
    // EventEmitter's constructor gives each instance a listener dictionary of its own (~180 bytes);
    // its methods make one on the first listener, so a connection nobody listens to keeps none.
    (this as unknown as { _events: object | undefined })._events = undefined;
    this.core = core;
    this.handle = handle;
    core.adopt(handle, this);
  }

  /** True once `close()` was called, or the loop was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Closes the descriptor now. Operations still in flight fail with `ERR_SOCKET_CLOSED`. */
  close(): void {
    this.closeWithReset(false);
  }

  /**
   * Lets Node's process exit while this is its only open handle, as `net.Socket.unref()` and
   * `net.Server.unref()`: its events still arrive while the process runs for other reasons. An
   * operation in flight on it (a write, a `loop.proactor` read or accept) still keeps the process
   * alive, as libuv's requests do. No-op once closed.
   */
  unref(): this {
    this.core.setTargetReferenced(this.handle, false);
    return this;
  }

  /** Undoes `unref()`: an open handle keeps Node's process alive (the default). */
  ref(): this {
    this.core.setTargetReferenced(this.handle, true);
    return this;
  }

  /** Closes it, as `close()`: for `await using socket = await loop.connect(…)`. */
  [asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  /** @internal Throws the error a caller gets for using a closed handle. */
  assertOpen(): void {
    if (this.#closed) throw this.closedError();
  }

  /** @internal The error for using this handle after it (or its loop) was closed. */
  closedError(): Error {
    return this.core.closed ? loopClosed() : socketClosed();
  }

  /** @internal Turns a native return value into a number, throwing a system error if negative. */
  check(result: number, syscall: string): number {
    if (result < 0) throw systemError(result, syscall);
    return result;
  }

  /**
   * @internal close(), with an RST if `reset`; `why` ('timeout') is emitted just before 'close'.
   * Closed first, then told: listeners are the user's code, and one that throws (the throw
   * reaches the caller, as from any emit) finds the handle closed and released, not half-closed.
   * (No private method here: a class with one gives each instance a brand field, 8 bytes of every idle connection.)
   */
  closeWithReset(reset: boolean, why?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.core.closeHandle(this.handle, reset);
    this.core.release(this.handle);
    this.onClosed();
    if (why !== undefined) {
      try {
        this.emit(why);
      } catch (error) {
        reportLater(error);  // 'close' still follows
      }
    }
    this.emit('close');
  }

  /** @internal Subclasses settle what still waits on the handle. */
  protected abstract onClosed(): void;

  /** @internal */
  onReadable(): void {
    this.readableWatcher?.();
  }

  /** @internal */
  onWritable(): void {
    this.writableWatcher?.();
  }

  /** @internal */
  onData(_chunk: Buffer | null, _status: number): void {}

  /** @internal */
  onAccepted(_result: number): void {}

  /** @internal */
  onLoopClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClosed();
    this.emit('close');
  }
}

/** Tells a concrete kind of handle (`Socket.isSocket`, `Server.isServer`), or either (`Handle.isHandle`). */
export type HandleGuard<T extends Handle> = (value: unknown) => value is T;

/**
 * @internal The check every API that takes a handle makes first: `value` is a `type`, and it was
 * opened by `core`'s loop. A handle number means something only to the loop that made it — on
 * another loop the same number is another connection — so a foreign handle never reaches native
 * code.
 */
export function validateHandle<T extends Handle>(core: LoopCore, name: string, value: unknown, is: HandleGuard<T>, expected: string): asserts value is T {
  if (!is(value)) throw invalidArgType(name, expected, value);
  if (value.core !== core) throw foreignHandle(name);
}
