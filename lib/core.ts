// The JavaScript half of a loop: owns the native loop, the shared event buffer and arena, and
// routes each batch of events to the handles and operations they belong to.
import { EventKind, native, type NativeLoop, type NativeInfo } from './binding.js';

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
  /** Kept referenced until the completion: the kernel may write into it until then. */
  buffer: Uint8Array | undefined;
}

const kEventInts = 4;
const { ECANCELED } = native.errors;

export class LoopCore {
  readonly native: NativeLoop;
  readonly info: NativeInfo;
  #closed = false;
  readonly #events: Int32Array;
  readonly #arena: Buffer;
  readonly #targets = new Map<number, EventTarget>();
  readonly #operations = new Map<number, PendingOperation>();
  #nextOperation = 0;
  #referenced = false;

  constructor(backend: string, batchSize: number, arenaSize: number) {
    this.#events = new Int32Array(batchSize * kEventInts);
    this.#arena = Buffer.alloc(arenaSize);
    this.native = new native.NativeLoop(backend, this.#events, this.#arena, (count) => this.#dispatch(count));
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
    this.#updateReference();
  }

  /** An id for an operation about to be submitted; call expect() if the submission is accepted. */
  nextOperationId(): number {
    this.#nextOperation = (this.#nextOperation + 1) & 0x7fffffff;
    return this.#nextOperation;
  }

  expect(id: number, complete: (result: number) => void, buffer?: Uint8Array): void {
    this.#operations.set(id, { complete, buffer });
    this.#updateReference();
  }

  /** Closes every handle, fails every operation still waiting, and closes the native loop. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const target of [...this.#targets.values()]) target.onLoopClose();
    this.#targets.clear();
    this.native.close();  // after this, no kernel operation uses any buffer we hold
    const pending = [...this.#operations.values()];
    this.#operations.clear();
    for (const operation of pending) {
      try {
        operation.complete(ECANCELED);
      } catch (error) {
        reportLater(error);
      }
    }
  }

  // Node's loop stays alive while a handle is open or an operation is in flight, as with `net`.
  #updateReference(): void {
    const busy = this.#targets.size > 0 || this.#operations.size > 0;
    if (busy === this.#referenced || this.#closed) return;
    this.#referenced = busy;
    if (busy) this.native.ref();
    else this.native.unref();
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

  #deliver(handle: number, kind: number, result: number, aux: number): void {
    if (kind === EventKind.Completed) {
      const operation = this.#operations.get(aux);
      if (operation === undefined) return;  // cancelled and already reported
      this.#operations.delete(aux);
      operation.complete(result);
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
