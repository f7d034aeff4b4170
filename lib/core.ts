// The JavaScript half of a loop: owns the native loop (the only code that calls it), the shared
// event buffer and arena; submits every operation by one path and routes each batch of events to
// the handles and operations they belong to.
import { Buffer } from 'node:buffer';
import { EventKind, native, type NativeAddress, type NativeFamily, type NativeInfo, type NativeLoop, type NativeStats } from './binding.js';
import { abortError, codedError, errnoOf, loopClosed, systemError } from './errors.js';
import { OperationTable, SlotMap } from './slot-map.js';

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

const { ECANCELED, ETIMEDOUT } = native.errors;
const ENOBUFS = errnoOf('ENOBUFS');

/** Settles an operation: with its error, or with null and its value (a byte count, a handle, 0). */
export type Completion = (error: Error | null, value: number) => void;

/** A submission LoopCore accepted: its completion follows (`Operation.complete`). */
export const kInFlight = 0;
/** A submission the kernel did at once (a write it took whole): no completion follows. */
export const kDone = 1;

/**
 * One operation from submission to completion (libuv's request): made by its caller, kept by
 * LoopCore while in flight, and told once how it ended. The rules every operation shares live
 * here and in LoopCore's submissions (`#refused`, `#submitted`); a kind of operation overrides only what is its own. It never
 * holds the operation's buffer: the native side owns that memory until the completion (a copy of
 * a write's bytes, a reference to a read's view), and an error made on completion keeps its
 * stack's receivers alive, which must not keep the caller's buffer with them.
 */
export class Operation {
  /** Its id while in flight (set by LoopCore). */
  id = 0;
  /** LoopCore's abort listener while it is in flight with a signal. */
  onAbort: (() => void) | undefined = undefined;
  /**
   * Whom its completion tells, kept here rather than closed over (a function and a context per
   * operation): its promise's resolving functions (`awaitCompletion`), or a callback API's
   * callback (`callBack`).
   */
  resolve: ((value?: number) => void) | undefined = undefined;
  reject: ((reason: Error) => void) | undefined = undefined;
  callback: ((error: Error | null, value?: number) => void) | undefined = undefined;

  constructor(
    /** What failed, in its errors: 'read', 'connect', 'open', … */
    readonly syscall: string,
    /**
     * The handle it belongs to, for cancelling it: a socket's or server's, a file's (see `file`);
     * -1 for a timer or an open; a connect's is set once its socket exists.
     */
    public handle: number,
    /**
     * Aborting it cancels the operation. One aborted before submission is not submitted; one
     * cancelled fails with an AbortError (`cause`: the signal's reason) — unless the kernel had
     * done it first: then it completes with that real result.
     */
    readonly signal: AbortSignal | undefined,
    /**
     * Told once how it ended, when it completes (LoopCore's submissions say when not). Always
     * called as `this.done(…)`: the shared completions (`resolveWithValue`, `callBack`) find
     * the operation as `this`.
     */
    public done: Completion,
    /** Does not keep Node's loop alive (the idle sweep, `sleep(ms, { ref: false })`). */
    readonly weak = false,
  ) {}

  /** A file's operation, cancelled with fileCancel (a socket's and a timer's with cancel). */
  get file(): boolean {
    return false;
  }

  /**
   * Its completion event: `result` >= 0 is what the kernel did, < 0 an errno. `closing`: the
   * errors of the loop's close(), when that is what completes it.
   */
  complete(result: number, closing?: ClosingErrors): void {
    if (result >= 0) this.done(null, this.value(result));
    else this.done(this.error(result, closing), 0);
  }

  /** What a result >= 0 means to the caller (the result itself, but for a write). */
  value(result: number): number {
    return result;
  }

  /** The error of `errno`, at submission or completion: the one mapping every operation uses. */
  error(errno: number, closing?: ClosingErrors): Error {
    if (errno === ECANCELED && this.signal?.aborted) return abortError(this.signal);
    if (errno === ECANCELED) return closing === undefined ? this.closedError() : this.#closedErrorOf(closing);
    return this.systemError(errno);
  }

  /** ECANCELED that no abort asked for: its handle or its loop was closed with it in flight. */
  protected closedError(): Error {
    return loopClosed();
  }

  /** What its closedError() depends on: a loop's close() fails the operations of one kind with one error. */
  protected closedErrorKind(): string {
    return 'loop';
  }

  #closedErrorOf(closing: ClosingErrors): Error {
    const kind = this.closedErrorKind();
    let error = closing.get(kind);
    if (error === undefined) closing.set(kind, (error = this.closedError()));
    return error;
  }

  /** A Node-style system error (code, errno, syscall; a subclass adds address or path). */
  protected systemError(errno: number): Error {
    return systemError(errno, this.syscall);
  }
}

/** An operation of a socket or server: closing it with the operation in flight fails it with ERR_SOCKET_CLOSED. */
export class SocketOperation extends Operation {
  protected override closedError(): Error {
    return codedError('ERR_SOCKET_CLOSED', `Socket was closed with this ${this.syscall} in flight`);
  }

  protected override closedErrorKind(): string {
    return this.syscall;
  }
}

/**
 * The errors one LoopCore.close() fails what was in flight with, by closedErrorKind(): every
 * operation of a kind gets the same Error, as a Node stream fails all its buffered writes with
 * one. An Error each, its stack captured, cost ~11 µs an operation: 11 s to close a loop with
 * 2^20 timers pending.
 */
export type ClosingErrors = Map<string, Error>;

/** The AbortError of a write cancelled half-sent: `bytesWritten` says how much the peer got. */
export interface TornWriteError extends Error {
  code: 'ABORT_ERR';
  /** Bytes of this write the peer received before it was cancelled. */
  bytesWritten: number;
}

/** The net layer's Socket, as its writes' completions update it before their callers hear. */
export interface WriteOwner {
  writeCompleted(length: number, result: number): void;
  close(): void;
  /** Closed by its idle timeout or deadline: its writes then fail ETIMEDOUT, as its reads. */
  readonly timedOut: boolean;
}

/**
 * A socket write of `length` bytes (1 to maxTransfer). It completes with 0 once the kernel took
 * them all, or — cancelled half-sent — with the count the peer got: the stream is torn, and an
 * `owner` is closed, as later bytes would follow a torn message. (The owner is a field, not a
 * subclass: V8 does not inline a derived constructor's super() chain, and every write in flight
 * makes one of these.)
 */
export class WriteOperation extends SocketOperation {
  constructor(
    handle: number,
    signal: AbortSignal | undefined,
    readonly length: number,
    done: Completion,
    readonly owner: WriteOwner | undefined = undefined,
  ) {
    super('write', handle, signal, done);
  }

  override complete(result: number, closing?: ClosingErrors): void {
    if (this.owner !== undefined) {
      this.owner.writeCompleted(this.length, result);
      if (result > 0) closeTorn(this.owner);
    }
    if (result > 0 && this.signal !== undefined) this.done(tornWrite(this.signal, result, this.length), result);
    else super.complete(result, closing);
  }

  protected override closedError(): Error {
    return this.owner?.timedOut === true ? systemError(ETIMEDOUT, 'write') : super.closedError();
  }

  protected override closedErrorKind(): string {
    return this.owner?.timedOut === true ? 'write ETIMEDOUT' : super.closedErrorKind();
  }

  override value(): number {
    return this.length;
  }
}

// A torn stream's owner closes before the write's caller hears: its 'close' listener, if it
// throws, is reported, and the write still settles. Apart from complete(), which every write runs.
function closeTorn(owner: WriteOwner): void {
  try {
    owner.close();
  } catch (error) {
    reportLater(error);
  }
}

function tornWrite(signal: AbortSignal, sent: number, length: number): TornWriteError {
  const error = abortError(signal) as TornWriteError;
  error.message = `The operation was aborted after ${sent} of ${length} bytes were sent`;
  error.bytesWritten = sent;
  return error;
}

/**
 * The promise form of an operation LoopCore was given (`rc`: what its submission returned):
 * settled at once by a submission that was refused or done, else by its completion.
 */
export function promiseOf(operation: Operation, rc: number): Promise<number> {
  if (rc === kDone) return Promise.resolve(operation.value(0));
  if (rc < 0) return Promise.reject(operation.error(rc));
  return awaitCompletion<number>(operation, resolveWithValue);
}

// One promise executor for all: the Promise constructor runs it synchronously, so what it
// captures is read and cleared at once. An executor closing over its caller was a function and a
// context made for every promise (with the completion closing over the resolving functions,
// ~180 of the ~500 bytes a net-layer write left in flight held).
let capturedResolve: ((value: never) => void) | undefined;
let capturedReject: ((reason: Error) => void) | undefined;
const captureResolvers = (resolve: (value: never) => void, reject: (reason: Error) => void): void => {
  capturedResolve = resolve;
  capturedReject = reject;
};

/** `Promise.withResolvers()` (Node 22) without a closure per call. */
export function withResolvers<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (reason: Error) => void } {
  const promise = new Promise<T>(captureResolvers);
  const resolvers = { promise, resolve: capturedResolve as (value: T) => void, reject: capturedReject! };
  capturedResolve = capturedReject = undefined;
  return resolvers;
}

/**
 * The promise of `operation`, in flight: its completion becomes `settle` (`resolveWithValue` or
 * `resolveEmpty`), which finds the resolving functions on the operation instead of closing over them.
 */
export function awaitCompletion<T>(operation: Operation, settle: Completion): Promise<T> {
  const promise = new Promise<T>(captureResolvers);
  operation.resolve = capturedResolve as (value?: number) => void;
  operation.reject = capturedReject;
  capturedResolve = capturedReject = undefined;
  operation.done = settle;
  return promise;
}

// The completions of awaitCompletion. Operation calls `this.done(…)`, so `this` is the operation.
export function resolveWithValue(this: Operation, error: Error | null, value: number): void {
  if (error === null) this.resolve!(value);
  else this.reject!(error);
}

export function resolveEmpty(this: Operation, error: Error | null): void {
  if (error === null) this.resolve!();
  else this.reject!(error);
}

/** The completion that calls `operation.callback` as Node does: `(null, value)`, or the error alone. */
export function callBack(this: Operation, error: Error | null, value: number): void {
  const callback = this.callback!;  // called unbound: its `this` is not the operation
  if (error === null) callback(null, value);
  else callback(error);
}

const kEventInts = 4;

/**
 * The JavaScript half of one loop, and the only caller of its native object: every native call
 * of lib/ is a typed method here. Operations that complete later all take one path (#submit).
 */
export class LoopCore {
  readonly info: NativeInfo;
  readonly #native: NativeLoop;
  #closed = false;
  #events: Int32Array;
  #arena: ArrayBuffer;
  /** Referenced only weakly by the native loop while idle (see #updateReference): kept here. */
  readonly #dispatcher: (start: number, end: number) => void;
  readonly #targets = new SlotMap<EventTarget>();
  readonly #operations = new OperationTable<Operation>();
  #weakOperations = 0;
  /**
   * The operations whose signal's addEventListener is running (one inside another's, when that
   * user code submits): it may close the loop before their callers have set whom their completion
   * tells (see close()). One array, reused, so that a submission allocates nothing for it.
   */
  readonly #submitting: Operation[] = [];
  #writeInFlight = 0;  // the id of the write startWrite last submitted
  /**
   * While a batch is being delivered, `defer`'s callbacks wait in `#deferred`, as (callback,
   * error, value): its first `#deferredLength` entries. They are cleared one by one, not by
   * `length = 0`, which frees the array's store: each batch grew it again from nothing (~70
   * bytes a round trip of the Proactor API's echo on epoll).
   */
  #dispatching = false;
  readonly #deferred: unknown[] = [];
  #deferredLength = 0;
  /** Open handles that `unref()` told not to keep Node's process alive. */
  readonly #unreferencedTargets = new Set<number>();
  /** `loop.unref()`: nothing of the loop keeps the process alive. */
  #loopReferenced = true;
  #referenced = false;
  #held = false;

  constructor(backend: string, batchSize: number, arenaSize: number, threadPoolSize: number) {
    this.#events = new Int32Array(batchSize * kEventInts);
    this.#arena = new ArrayBuffer(arenaSize);
    this.#dispatcher = (start, end) => this.#dispatch(start, end);
    this.#native = new native.NativeLoop(backend, this.#events, new Uint8Array(this.#arena), this.#dispatcher);
    this.info = this.#native.info();
    this.#native.setThreadPoolSize(threadPoolSize);
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

  // Operations that complete later. Each submits through #submit: it returns kInFlight (the
  // operation completes later, as an event), kDone (the kernel did it at once: a write it took
  // whole) or a negative errno (refused: nothing was submitted, nothing will complete), and the
  // caller settles the last two — with `operation.value(0)` or `operation.error(rc)`, or by
  // `promiseOf` — so that a write the kernel took at once costs no promise and no event.

  /** Reads into `buffer` (the native side holds a reference to it until the completion). */
  read(operation: Operation, buffer: Uint8Array): number {
    return this.#refused(operation) || this.#submitted(operation, this.#native.read(operation.handle, buffer, operation.id));
  }

  /**
   * Writes `bytes`, or the buffers of an array back to back in one send, in two halves, so that
   * the caller makes the write's operation only if it is needed: on a readiness backend the
   * kernel takes almost every write whole inside the call (kDone), and its operation would be
   * made for nothing (~750 instructions of the net layer's echo). The native side sends from `bytes` what it can and copies only what it keeps. On kInFlight,
   * `keepWrite` must follow at once, before any other submission: the write has the id that
   * the next operation would otherwise take.
   */
  startWrite(handle: number, signal: AbortSignal | undefined, bytes: Uint8Array | readonly Uint8Array[]): number {
    const id = this.#reserve(signal);
    if (id < 0) return id;
    this.#writeInFlight = id;
    return Array.isArray(bytes) ? this.#native.writeGathered(handle, bytes, id) : this.#native.write(handle, bytes as Uint8Array, id);
  }

  /** The operation of the write `startWrite` just left in flight, kept until its completion. */
  keepWrite(operation: WriteOperation): void {
    operation.id = this.#writeInFlight;
    this.#submitted(operation, kInFlight);
  }

  accept(operation: SocketOperation): number {
    return this.#refused(operation) || this.#submitted(operation, this.#native.accept(operation.handle, operation.id));
  }

  /** Connects a new socket: its handle (>= 0; `operation.handle` is set to it), or a negative errno. */
  connect(operation: Operation, family: NativeFamily, host: string, port: number, localAddress: string | undefined): number {
    const refused = this.#refused(operation);
    if (refused < 0) return refused;
    const handle = this.#native.connect(family, host, port, operation.id, localAddress);
    if (handle < 0) return handle;
    operation.handle = handle;
    this.#submitted(operation, kInFlight);
    return handle;
  }

  /** A one-shot timer on the backend's own wait (timerfd, IORING_OP_TIMEOUT, EVFILT_TIMER): completes with 0 after `delayMs`. */
  timer(operation: Operation, delayMs: number): number {
    return this.#refused(operation) || this.#submitted(operation, this.#native.startTimer(delayMs, operation.id));
  }

  fileOpen(operation: Operation, path: string, flags: number, mode: number): number {
    return this.#refused(operation) || this.#submitted(operation, this.#native.fileOpen(path, flags, mode, operation.id));
  }

  /** Reads (`write` false) into, or writes from, `buffer` at `position` (-1: the current one). */
  fileTransfer(operation: Operation, write: boolean, buffer: Uint8Array, position: number): number {
    const refused = this.#refused(operation);
    if (refused < 0) return refused;
    const rc = write
      ? this.#native.fileWrite(operation.handle, buffer, position, operation.id)
      : this.#native.fileRead(operation.handle, buffer, position, operation.id);
    return this.#submitted(operation, rc);
  }

  fileSync(operation: Operation, dataOnly: boolean): number {
    return this.#refused(operation) || this.#submitted(operation, this.#native.fileSync(operation.handle, dataOnly, operation.id));
  }

  fileClose(operation: Operation): number {
    return this.#refused(operation) || this.#submitted(operation, this.#native.fileClose(operation.handle, operation.id));
  }

  /**
   * Asks the backend to cancel `operation` (an abort of its signal does this itself). It still
   * completes: with ECANCELED, or with its real result if the kernel had done it first.
   */
  cancel(operation: Operation): void {
    if (this.#closed || this.#operations.get(operation.id) !== operation) return;
    if (operation.file) this.#native.fileCancel(operation.handle, operation.id);
    else this.#native.cancel(operation.handle, operation.id);
  }

  /** A timer for lib/'s own use (the idle sweep, connect timeouts): `fired(true)` after `delayMs`, `fired(false)` once cancelled. */
  startTimer(delayMs: number, fired: (due: boolean) => void, weak = false): Operation {
    const timer = new Operation('timer', -1, undefined, (error) => fired(error === null), weak);
    const rc = this.timer(timer, delayMs);
    if (rc < 0) throw timer.error(rc);
    return timer;
  }

  // The first half of every submission: an operation whose signal has aborted, or of a closed
  // loop, is refused with ECANCELED (which `operation.error` makes the AbortError or the closed
  // error) and never reaches the native side; any other gets its id (ENOBUFS with 2^20 of them
  // in flight). 0 when it may go ahead.
  #refused(operation: Operation): number {
    const id = this.#reserve(operation.signal);
    if (id < 0) return id;
    operation.id = id;
    return 0;
  }

  // The id the operation takes (> 0), or why it is refused (< 0).
  #reserve(signal: AbortSignal | undefined): number {
    if (signal?.aborted || this.#closed) return ECANCELED;
    const id = this.#operations.nextId();
    return id === 0 ? ENOBUFS : id;
  }

  // The second half: `rc` is what the native call returned. An operation in flight is kept until
  // its completion event, listening to its signal meanwhile: aborting it cancels it natively.
  // It is recorded before the signal hears of it: addEventListener may be the user's (a patched
  // signal), and whatever it does — throw, abort, close the loop — then finds the operation kept,
  // and its completion (or close()) settles it. Recorded after, a throw left its id taken for
  // ever ("already in flight" for every later operation of the loop).
  #submitted(operation: Operation, rc: number): number {
    if (rc < 0) return rc;
    this.#operations.set(operation.id, operation);
    if (operation.weak) this.#weakOperations += 1;
    if (operation.signal !== undefined) this.#cancelOnAbort(operation, operation.signal);
    this.#updateReference();
    return kInFlight;
  }

  // Apart from #submitted, whose every call would otherwise allocate this closure's context.
  #cancelOnAbort(operation: Operation, signal: AbortSignal): void {
    const onAbort = (operation.onAbort = () => this.cancel(operation));
    this.#submitting.push(operation);
    try {
      signal.addEventListener('abort', onAbort, { once: true });
      this.#submitting.pop();
    } catch (error) {
      this.#submitting.pop();
      // Its abort could never be heard: it is cancelled now and fails with this error — unless
      // the kernel had done it first, when it completes with that result (no byte is dropped).
      operation.onAbort = undefined;
      Object.defineProperty(operation, 'error', { value: () => error as Error });
      this.cancel(operation);
      return;
    }
    // What addEventListener did meanwhile: closed the loop (which settled the operation but could
    // not remove a listener not yet added), or aborted the signal before the listener could hear.
    if (this.#operations.get(operation.id) !== operation) signal.removeEventListener('abort', onAbort);
    else if (signal.aborted) this.cancel(operation);
  }

  // Synchronous calls: each returns what the native side does (>= 0, or a negative errno).
  listen(family: NativeFamily, host: string, port: number, backlog: number, reusePort: boolean, ipv6Only: boolean): number {
    return this.#native.listen(family, host, port, backlog, reusePort, ipv6Only);
  }
  shutdown(handle: number): number {
    return this.#native.shutdown(handle);
  }
  /** Closes `handle` now (`reset`: with an RST); its operations in flight complete with ECANCELED. */
  closeHandle(handle: number, reset: boolean): number {
    return this.#native.closeHandle(handle, reset);
  }
  address(handle: number, peer: boolean): NativeAddress | number {
    return this.#native.address(handle, peer);
  }
  setSocketOption(handle: number, option: number, value: number): number {
    return this.#native.setSocketOption(handle, option, value);
  }
  /** A socket option as the OS has it (for tests). */
  socketOption(handle: number, option: number): number {
    return this.#native.socketOption(handle, option);
  }
  watch(handle: number, interest: number): number {
    return this.#native.watch(handle, interest);
  }
  /** Into the whole `buffer`, or into its `length` bytes from `offset` when both are given. */
  tryRead(handle: number, buffer: Uint8Array, offset: number | undefined, length: number | undefined): number {
    return offset === undefined ? this.#native.tryRead(handle, buffer) : this.#native.tryRead(handle, buffer, offset, length);
  }
  tryWrite(handle: number, buffer: Uint8Array, offset: number | undefined, length: number | undefined): number {
    return offset === undefined ? this.#native.tryWrite(handle, buffer) : this.#native.tryWrite(handle, buffer, offset, length);
  }
  tryAccept(handle: number): number {
    return this.#native.tryAccept(handle);
  }
  /** Streams reads of `handle` into the loop's arena (Data events) until readStop. */
  readStart(handle: number): number {
    return this.#native.readStart(handle);
  }
  readStop(handle: number): number {
    return this.#native.readStop(handle);
  }
  /** Accepts connections of `handle` as they come (Accepted events) until acceptStop. */
  acceptStart(handle: number): number {
    return this.#native.acceptStart(handle);
  }
  stats(): NativeStats {
    return this.#native.stats();
  }

  /** Closes every handle, fails every operation still waiting, and closes the native loop. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Teardown completes whatever user code does: a handle's 'close' listener, or a pooled read's
    // callback run from it, that throws is reported, and the native loop still closes and every
    // operation still settles (else the loop stays half-closed, and the process alive, for ever).
    for (const target of this.#targets.live()) {
      try {
        target.onLoopClose();
      } catch (error) {
        reportLater(error);
      }
    }
    this.#targets.clear();
    this.#unreferencedTargets.clear();
    this.#native.close();  // after this, no kernel operation uses any buffer we hold
    this.#events = new Int32Array(0);
    this.#arena = new ArrayBuffer(0);
    const pending = this.#operations.live();
    this.#operations.clear();
    this.#weakOperations = 0;
    const closing: ClosingErrors = new Map();
    for (const operation of pending) {
      if (operation.onAbort !== undefined) stopListening(operation);
      if (this.#submitting.includes(operation)) {
        // Closed from inside its own submission: its caller is told once the submission returns.
        process.nextTick(completeCancelled, operation);
        continue;
      }
      try {
        operation.complete(ECANCELED, closing);
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
    this.#native.setLiveness(referenced, held);
  }

  /**
   * Calls `callback(error, value)` soon but never inside its caller, as `process.nextTick` does:
   * for a callback API's operation that was refused or done at once. Within a batch it runs once
   * the batch's events are delivered — where its tick would have run, but without one per
   * operation (the Proactor API's echo on epoll writes at once, every round trip). An undefined
   * `value` is not passed: an error alone is `callback(error)`, as Node calls back.
   */
  defer<V>(callback: (error: Error | null, value: V) => void, error: Error | null, value: V): void {
    if (this.#dispatching) {
      const deferred = this.#deferred;
      const at = this.#deferredLength;
      deferred[at] = callback;
      deferred[at + 1] = error;
      deferred[at + 2] = value;
      this.#deferredLength = at + 3;
    } else if (value === undefined) process.nextTick(callback, error);
    else process.nextTick(callback, error, value);
  }

  #dispatch(start: number, end: number): void {
    const events = this.#events;
    this.#dispatching = true;
    for (let i = start * kEventInts; i < end * kEventInts; i += kEventInts) {
      try {
        this.#deliver(events[i]!, events[i + 1]!, events[i + 2]!, events[i + 3]!);
      } catch (error) {
        reportLater(error);
      }
    }
    // As the tick queue: what these callbacks defer runs in this drain too.
    const deferred = this.#deferred;
    for (let i = 0; i < this.#deferredLength; i += 3) {
      const callback = deferred[i] as (error: unknown, value?: unknown) => void;
      const error = deferred[i + 1];
      const value = deferred[i + 2];
      deferred[i] = deferred[i + 1] = deferred[i + 2] = undefined;
      try {
        if (value === undefined) callback(error);
        else callback(error, value);
      } catch (error) {
        reportLater(error);
      }
    }
    this.#deferredLength = 0;
    this.#dispatching = false;
    this.#updateReference();
  }

  #complete(id: number, result: number): void {
    const operation = this.#operations.get(id);
    if (operation === undefined) return;  // cancelled and already reported
    this.#operations.delete(id);
    if (operation.weak) this.#weakOperations -= 1;
    if (operation.onAbort !== undefined) stopListening(operation);
    operation.complete(result);
  }

  #deliver(handle: number, kind: number, result: number, aux: number): void {
    if (kind === EventKind.completed) {
      this.#complete(aux, result);
      return;
    }
    const target = this.#targets.get(handle);
    if (target === undefined) {
      // Closed earlier in this batch. A connection its server accepted meanwhile is the loop's
      // alone now: closed, so that its peer sees the end and its descriptor is not kept until loop.close().
      if (kind === EventKind.accepted && result >= 0) this.#native.closeHandle(result, false);
      return;
    }
    switch (kind) {
      case EventKind.data: {
        let chunk: Buffer | null = null;
        if (result > 0) {
          // The arena is reused by the next batch, so the bytes are copied out now: by set() from a
          // view made here, which costs half of what Buffer#copy does (its generic argument checks).
          chunk = Buffer.allocUnsafe(result);
          chunk.set(new Uint8Array(this.#arena, aux, result));
        }
        target.onData(chunk, result > 0 ? 0 : result);
        break;
      }
      case EventKind.readable:
        target.onReadable();
        break;
      case EventKind.writable:
        target.onWritable();
        break;
      case EventKind.accepted:
        target.onAccepted(result);
        break;
    }
  }
}

function completeCancelled(operation: Operation): void {
  operation.complete(ECANCELED);  // a throw here is reported as from any tick
}

// Removes an operation's abort listener. removeEventListener may be the user's (a patched
// signal): if it throws, that is reported and the operation still settles. Apart from #complete,
// so that only an operation with a signal runs a try.
function stopListening(operation: Operation): void {
  const onAbort = operation.onAbort!;
  operation.onAbort = undefined;
  try {
    operation.signal!.removeEventListener('abort', onAbort);
  } catch (error) {
    reportLater(error);
  }
}

// A throwing callback must not cost the rest of the batch its events: it is reported the way Node
// reports an exception from any callback ('uncaughtException'), once the batch is done.
export function reportLater(error: unknown): void {
  process.nextTick(() => {
    throw error;
  });
}
