// The one place that loads the native addon (node-gyp-build picks prebuilds/<platform>-<arch>
// when one matches, else the local build/).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeInfo {
  backend: string;
  pattern: 'reactor' | 'proactor' | 'thread-per-connection';
  features: string[];
  fallbackReason?: string;
}

export interface NativeStats {
  syscalls: number;
  events: number;
  wakes: number;
  /**
   * Batches of events delivered to JavaScript (a wake that drains nothing makes none). Each goes
   * over in calls of up to 64 events, and nothing else calls JavaScript.
   */
  batches: number;
}

export interface NativeAddress {
  family: 'IPv4' | 'IPv6' | 'unix';
  address: string;
  port: number;
}

/** Address family as the native side takes it: 4, 6, or 0 for a Unix domain socket path. */
export type NativeFamily = 0 | 4 | 6;

/** Every method returns >= 0 on success or a negative errno. */
export interface NativeLoop {
  info(): NativeInfo;
  listen(family: NativeFamily, host: string, port: number, backlog: number, reusePort: boolean, ipv6Only: boolean): number;
  /** With `localHost` (numeric, of the same family), binds to it on any port before connecting. */
  connect(family: NativeFamily, host: string, port: number, opId: number, localHost?: string): number;
  shutdown(handle: number): number;
  closeHandle(handle: number, reset: boolean): number;
  address(handle: number, peer: boolean): NativeAddress | number;
  /** Sets a `SocketOption`: NoDelay and KeepAlive 0 or 1, KeepAliveIdle in seconds (>= 1). */
  setSocketOption(handle: number, option: number, value: number): number;
  /** Reads a `SocketOption` back as the OS has it (for tests). */
  socketOption(handle: number, option: number): number;
  watch(handle: number, interest: number): number;
  /** The whole buffer, or its `length` bytes from `offset`. */
  tryRead(handle: number, buffer: Uint8Array, offset?: number, length?: number): number;
  tryWrite(handle: number, buffer: Uint8Array, offset?: number, length?: number): number;
  tryAccept(handle: number): number;
  read(handle: number, buffer: Uint8Array, opId: number): number;
  write(handle: number, buffer: Uint8Array, opId: number): number;
  /** As `write`, of the buffers back to back (one send; at most maxTransfer bytes in all). */
  writeGathered(handle: number, buffers: readonly Uint8Array[], opId: number): number;
  accept(handle: number, opId: number): number;
  readStart(handle: number): number;
  readStop(handle: number): number;
  acceptStart(handle: number): number;
  acceptStop(handle: number): number;
  /**
   * Cancels operation `opId` of `handle` (-1: a timer). It still completes, as an event: with
   * ECANCELED, with its real result if it finished first, or — a write cancelled half-sent — with
   * the (positive) count the peer got. -ENOENT: not in flight.
   */
  cancel(handle: number, opId: number): number;
  /** A one-shot timer on the backend's own wait: completes as `opId` with 0 after `delayMs`. */
  startTimer(delayMs: number, opId: number): number;
  fileOpen(path: string, flags: number, mode: number, opId: number): number;
  fileRead(file: number, buffer: Uint8Array, position: number, opId: number): number;
  fileWrite(file: number, buffer: Uint8Array, position: number, opId: number): number;
  fileSync(file: number, dataOnly: boolean, opId: number): number;
  fileClose(file: number, opId: number): number;
  /**
   * Cancels file operation `opId` of `file` (-1: an open). It still completes, as an event: with
   * ECANCELED if it really was cancelled, else with its result. -ENOENT: not in flight.
   */
  fileCancel(file: number, opId: number): number;
  setThreadPoolSize(threads: number): void;
  stats(): NativeStats;
  /**
   * `referenced`: keep Node's process alive. `held`: keep this loop alive (something may still
   * call back); a loop that is neither is collected once unreachable and closed by its finalizer.
   */
  setLiveness(referenced: boolean, held: boolean): void;
  close(): void;
}

/** The numbers both sides of the boundary use, as the addon defines them (native/binding/addon.cc). */
export interface NativeConstants {
  /** The `kind` of an event in the batch buffer (native/core/backend.h EventKind). */
  eventKinds: { readable: number; writable: number; completed: number; data: number; accepted: number };
  /** Reactor interest bits of `watch` (native/core/interest.h). */
  interest: { readable: number; writable: number };
  /** The options of `setSocketOption` (native/core/backend.h SocketOption). */
  socketOptions: { noDelay: number; keepAlive: number; keepAliveIdle: number };
  /** Bits of `fileOpen`'s flags. */
  fileFlags: { read: number; write: number; create: number; truncate: number; append: number; exclusive: number; direct: number };
  /** Backends compiled into this binary, most preferred first. */
  backends: string[];
  /** The low bits of a socket's or server's handle that are its slot (native/core/handle_table.h). */
  handleSlotBits: number;
}

export interface NativeModule {
  /**
   * `events` and `arena` are views of plain ArrayBuffers (a SharedArrayBuffer's are refused) that
   * the loop drains into: should either be detached, transferred or resized, the loop closes at
   * its next drain instead, and every later call throws saying why.
   */
  NativeLoop: new (backend: string, events: Int32Array, arena: Uint8Array, dispatch: (start: number, end: number) => void) => NativeLoop;
  allocAligned(size: number, alignment: number): ArrayBuffer;
  /** The most bytes one operation moves (1 GiB): longer socket writes are split by lib/. */
  maxTransfer: number;
  constants: NativeConstants;
  /** Negative errno values as the backends return them. */
  errors: { EAGAIN: number; ECANCELED: number; EBADF: number; EFAULT: number; EMFILE: number; ENFILE: number; ENOSYS: number; ETIMEDOUT: number };
}

const require = createRequire(import.meta.url);
const loadBinding = require('node-gyp-build') as { (root: string): NativeModule; resolve(root: string): string };

/** The package root: lib/ and dist/ both sit directly below it. */
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// TWINLOOP_BINARY names another build of the addon to load instead: a sanitizer build, or a
// cross-compiled one under test.
const override = process.env.TWINLOOP_BINARY;

/** Path of the native binary that was loaded (a prebuild or the local build). */
export const bindingPath: string = override || loadBinding.resolve(packageRoot);

export const native: NativeModule = override ? (require(override) as NativeModule) : loadBinding(packageRoot);

export const { eventKinds: EventKind, interest: InterestBits, socketOptions: SocketOption, fileFlags: FileFlag } = native.constants;
