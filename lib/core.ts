// The JavaScript half of a loop: owns the native loop, the shared event buffer and arena, and
// routes each batch of events to the handles and operations they belong to.
import { EventKind, native, type NativeLoop, type NativeInfo } from './binding.js';
import { systemError } from './errors.js';

/** What a handle (socket or server) does with the events the native loop reports for it. */
export interface EventTarget {
  onReadable(): void;
  onWritable(): void;
  /** A streaming read: `chunk` holds the bytes; `null` with `status` 0 for EOF, < 0 for an error. */
  onData(chunk: Buffer | null, status: number): void;
  onAccepted(result: number): void;
  /** The loop is closing: release the handle without calling back into native code. */
  onLoopClose(): void;
}

interface PendingOperation {
  complete(result: number): void;
  /** Does not keep Node's loop alive (the idle sweep, `sleep(ms, { ref: false })`). */
  weak: boolean;
}

/** How an operation can be cancelled, and whether it keeps Node's loop alive. */
export interface ExpectOptions {
  /** Aborting it cancels the operation (see `LoopCore.expect`). */
  signal?: AbortSignal | undefined;
  /** The handle the operation belongs to, for cancelling it; -1 for a timer. */
  handle?: number;
  weak?: boolean;
}

const kEventInts = 4;
const { ECANCELED } = native.errors;

export class LoopCore {
  readonly native: NativeLoop;
  readonly info: NativeInfo;
  #closed = false;
  #events: Int32Array;
  #arena: Buffer;
  /** Referenced only weakly by the native loop while idle (see #updateReference): kept here. */
  readonly #dispatcher: (count: number) => void;
  readonly #targets = new Map<number, EventTarget>();
  readonly #operations = new Map<number, PendingOperation>();
  #nextOperation = 0;
  #weakOperations = 0;
  /** Open handles that `unref()` told not to keep Node's process alive. */
  readonly #unreferencedTargets = new Set<number>();
  /** `loop.unref()`: nothing of the loop keeps the process alive. */
  #loopReferenced = true;
  #referenced = false;
  #held = false;

  constructor(backend: string, batchSize: number, arenaSize: number) {
    this.#events = new Int32Array(batchSize * kEventInts);
    this.#arena = Buffer.alloc(arenaSize);
    this.#dispatcher = (count) => this.#dispatch(count);
    this.native = new native.NativeLoop(backend, this.#events, this.#arena, this.#dispatcher);
    this.info = this.native.info();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Routes the events of `handle` to `target` until release(). */
  adopt(handle: number, target: EventTarget): void {
    this.#targets.set(handle, target);
    this.#updateReference();
  }

  release(handle: number): void {
    this.#targets.delete(handle);
    this.#unreferencedTargets.delete(handle);
    this.#updateReference();
  }

  /** Whether open `handle` keeps Node's process alive (`ref()`/`unref()`); adopted ones do. */
  setTargetReferenced(handle: number, referenced: boolean): void {
    if (!this.#targets.has(handle)) return;
    if (referenced) this.#unreferencedTargets.delete(handle);
    else this.#unreferencedTargets.add(handle);
    this.#updateReference();
  }

  /** Whether anything of the loop may keep Node's process alive (`loop.ref()`/`loop.unref()`). */
  setLoopReferenced(referenced: boolean): void {
    this.#loopReferenced = referenced;
    this.#updateReference();
  }

  /** An id for an operation about to be submitted; call expect() if the submission is accepted. */
  nextOperationId(): number {
    // Never 0, so that callers can use 0 for "no operation" (see Socket's #submitWrite).
    this.#nextOperation = this.#nextOperation === 0x7fffffff ? 1 : this.#nextOperation + 1;
    return this.#nextOperation;
  }

  /**
   * Waits for the completion of operation `id`. With `options.signal`, aborting asks the backend
   * to cancel it; it then completes with ECANCELED — or with its real result if the kernel had
   * finished first, so that nothing it did (bytes read, a connection accepted) is lost. The
   * caller turns ECANCELED into an AbortError when `signal.aborted`.
   */
  expect(id: number, complete: (result: number) => void, options: ExpectOptions = {}): void {
    const { signal, handle = -1, weak = false } = options;
    let settle = complete;
    if (signal !== undefined) {
      const onAbort = (): void => this.cancel(handle, id);
      signal.addEventListener('abort', onAbort, { once: true });
      settle = (result) => {
        signal.removeEventListener('abort', onAbort);
        complete(result);
      };
    }
    this.#operations.set(id, { complete: settle, weak });
    if (weak) this.#weakOperations += 1;
    this.#updateReference();
  }

  /**
   * A one-shot timer on the backend's own wait (timerfd, IORING_OP_TIMEOUT, EVFILT_TIMER):
   * `complete(0)` after `delayMs`, or ECANCELED once cancelled. Returns its operation id.
   */
  startTimer(delayMs: number, complete: (result: number) => void, options: ExpectOptions = {}): number {
    const id = this.nextOperationId();
    const rc = this.native.startTimer(delayMs, id);
    if (rc < 0) throw systemError(rc, 'timer');
    this.expect(id, complete, { ...options, handle: -1 });
    return id;
  }

  /** Cancels timer `id`: it completes with ECANCELED unless it already fired. */
  cancelTimer(id: number): void {
    this.cancel(-1, id);
  }

  /**
   * Asks the backend to cancel operation `id` of `handle` (-1: a timer); it completes later, as
   * `expect()` says (every backend cancels: it is part of the native contract).
   */
  cancel(handle: number, id: number): void {
    if (this.#closed || !this.#operations.has(id)) return;
    this.native.cancel(handle, id);
  }

  /** Closes every handle, fails every operation still waiting, and closes the native loop. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const target of [...this.#targets.values()]) target.onLoopClose();
    this.#targets.clear();
    this.#unreferencedTargets.clear();
    this.native.close();  // after this, no kernel operation uses any buffer we hold
    this.#events = new Int32Array(0);
    this.#arena = Buffer.alloc(0);
    const pending = [...this.#operations.values()];
    this.#operations.clear();
    this.#weakOperations = 0;
    for (const operation of pending) {
      try {
        const { complete } = operation;  // not as a method: see #complete
        complete(ECANCELED);
      } catch (error) {
        reportLater(error);
      }
    }
  }

  // Node's loop stays alive while a handle is open or an operation is in flight, as with `net`,
  // but for unref'd ones (handles, `sleep(…, { ref: false })`) and anything of an unref'd loop.
  // The loop itself stays alive (held) while anything may still call back, unref'd or not:
  // events of an unref'd socket must still reach it. An idle loop nobody can reach is collected,
  // and closed by its native finalizer. An operation of an unref'd handle (a write in flight)
  // still counts, as libuv's requests do.
  #updateReference(): void {
    if (this.#closed) return;
    const referenced =
      this.#loopReferenced && (this.#targets.size > this.#unreferencedTargets.size || this.#operations.size > this.#weakOperations);
    const held = this.#targets.size > 0 || this.#operations.size > 0;
    if (referenced === this.#referenced && held === this.#held) return;
    this.#referenced = referenced;
    this.#held = held;
    this.native.setLiveness(referenced, held);
  }

  #dispatch(count: number): void {
    const events = this.#events;
    for (let i = 0; i < count * kEventInts; i += kEventInts) {
      try {
        this.#deliver(events[i]!, events[i + 1]!, events[i + 2]!, events[i + 3]!);
      } catch (error) {
        reportLater(error);
      }
    }
    this.#updateReference();
  }

  #complete(id: number, result: number): void {
    const operation = this.#operations.get(id);
    if (operation === undefined) return;  // cancelled and already reported
    this.#operations.delete(id);
    if (operation.weak) this.#weakOperations -= 1;
    const { complete } = operation;
    complete(result);
  }

  #deliver(handle: number, kind: number, result: number, aux: number): void {
    if (kind === EventKind.Completed) {
      this.#complete(aux, result);
      return;
    }
    const target = this.#targets.get(handle);
    if (target === undefined) return;  // closed earlier in this batch
    switch (kind) {
      case EventKind.Data: {
        let chunk: Buffer | null = null;
        if (result > 0) {
          // The arena is reused by the next batch, so the bytes are copied out now.
          chunk = Buffer.allocUnsafe(result);
          this.#arena.copy(chunk, 0, aux, aux + result);
        }
        target.onData(chunk, result > 0 ? 0 : result);
        break;
      }
      case EventKind.Readable:
        target.onReadable();
        break;
      case EventKind.Writable:
        target.onWritable();
        break;
      case EventKind.Accepted:
        target.onAccepted(result);
        break;
    }
  }
}

// A throwing callback must not cost the rest of the batch its events: it is reported the way Node
// reports an exception from any callback ('uncaughtException'), once the batch is done.
export function reportLater(error: unknown): void {
  process.nextTick(() => {
    throw error;
  });
}
