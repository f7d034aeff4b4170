// Idle timeouts and deadlines of a loop's sockets, checked by one coarse sweep.
//
// Why a sweep and not a timer per socket: an active socket would re-arm its timer on every chunk
// it moves — a heap operation (and on io_uring perhaps an SQE) per read and per write, paid by
// every busy connection to catch the rare idle one. Here activity costs one boolean store; one
// native timer per loop wakes every `period` ms and looks at each socket that has a timeout:
// O(sockets) per sweep, a few microseconds per thousand sockets, against 19 000 idle
// connections swept once a second at most. The price is precision: a socket is dropped between
// `timeout` and `timeout + 2 * period` after its last activity — never before — and `period`
// is an eighth of the smallest timeout (5 ms to 1 s), so that is at most 25 % late.
import { reportLater, type LoopCore, type Operation } from '../core.js';

/** What the sweep asks of a socket. */
export interface Sweepable {
  /**
   * Called once per sweep with the time (performance.now()). Closes the socket if it timed out;
   * returns the smallest timeout it still has (ms), or 0 when it has none any more.
   */
  sweep(now: number): number;
}

const kMinPeriodMs = 5;
const kMaxPeriodMs = 1000;
const sweepers = new WeakMap<LoopCore, IdleSweeper>();

export class IdleSweeper {
  readonly #core: LoopCore;
  readonly #sockets = new Set<Sweepable>();
  #timer: Operation | null = null;  // the armed sweep
  #period = kMaxPeriodMs;

  static of(core: LoopCore): IdleSweeper {
    let sweeper = sweepers.get(core);
    if (sweeper === undefined) {
      sweeper = new IdleSweeper(core);
      sweepers.set(core, sweeper);
    }
    return sweeper;
  }

  private constructor(core: LoopCore) {
    this.#core = core;
  }

  /** Starts (or keeps) sweeping `socket`, whose smallest timeout is `timeoutMs`. */
  add(socket: Sweepable, timeoutMs: number): void {
    this.#sockets.add(socket);
    const period = periodFor(timeoutMs);
    if (period < this.#period) {
      this.#period = period;
      if (this.#timer !== null) {
        // A sweep armed for a coarser period would come too late for this socket.
        this.#core.cancel(this.#timer);
        this.#timer = null;
      }
    }
    this.#arm();
  }

  delete(socket: Sweepable): void {
    this.#sockets.delete(socket);  // the armed sweep finds nothing to do and is not re-armed
  }

  #arm(): void {
    if (this.#timer !== null || this.#sockets.size === 0 || this.#core.closed) return;
    // Weak: the sockets keep Node's loop alive, the sweep alone must not.
    const timer = this.#core.startTimer(this.#period, (due) => this.#swept(timer, due), true);
    this.#timer = timer;
  }

  #swept(timer: Operation, due: boolean): void {
    if (timer === this.#timer) this.#timer = null;
    if (!due) {
      this.#arm();  // cancelled to re-arm sooner, or the loop closed (then #arm does nothing)
      return;
    }
    const now = performance.now();
    let smallest = Infinity;
    try {
      for (const socket of [...this.#sockets]) {
        let timeout = 0;
        try {
          timeout = socket.sweep(now);
        } catch (error) {
          // A listener's throw (an idle notice's): reported, and the other sockets still swept.
          // The socket is kept if it still has a timeout.
          reportLater(error);
          timeout = socket.sweep(performance.now());
        }
        if (timeout === 0) this.#sockets.delete(socket);
        else smallest = Math.min(smallest, timeout);
      }
    } finally {
      // Re-armed whatever happened above: else every timeout of the loop stopped for good.
      this.#period = smallest === Infinity ? kMaxPeriodMs : periodFor(smallest);
      this.#arm();
    }
  }
}

function periodFor(timeoutMs: number): number {
  return Math.min(kMaxPeriodMs, Math.max(kMinPeriodMs, Math.floor(timeoutMs / 8)));
}
