import { Buffer } from 'node:buffer';
import { getSystemErrorMap } from 'node:util';

import { FileFlag, native } from './binding.js';
import { Operation, promiseOf, type ClosingErrors, type LoopCore } from './core.js';
import {
  codedError,
  invalidArgValue,
  readBufferGone,
  systemError,
  type SystemError,
  validateAbortSignal,
  validateBuffer,
  validateInteger,
  validateObject,
  validateRange,
  validateWithoutNullBytes,
} from './errors.js';

/** The open modes of `node:fs`. */
export type OpenFlags = 'r' | 'r+' | 'w' | 'w+' | 'wx' | 'wx+' | 'a' | 'a+' | 'ax' | 'ax+';

export interface OpenFileOptions {
  /** How to open, as in `node:fs` (default `'r'`). */
  flags?: OpenFlags;
  /** Permission bits of a created file (default 0o666, less the umask). */
  mode?: number;
  /** O_DIRECT: bypass the page cache (Linux; buffers, offsets and lengths must then be aligned). */
  direct?: boolean;
  signal?: AbortSignal;
}

export interface FileOperationOptions {
  /**
   * Aborting cancels the operation (in the kernel, or by interrupting the thread pool's syscall)
   * and rejects with an AbortError once it has let go of the buffer — unless it had completed:
   * then it resolves with its result, so that no byte read or written is lost.
   */
  signal?: AbortSignal;
}

const { read: kRead, write: kWrite, create: kCreate, truncate: kTruncate, append: kAppend, exclusive: kExclusive, direct: kDirect } = FileFlag;

const flagBits: Record<OpenFlags, number> = {
  r: kRead,
  'r+': kRead | kWrite,
  w: kWrite | kCreate | kTruncate,
  'w+': kRead | kWrite | kCreate | kTruncate,
  wx: kWrite | kCreate | kTruncate | kExclusive,
  'wx+': kRead | kWrite | kCreate | kTruncate | kExclusive,
  a: kWrite | kCreate | kAppend,
  'a+': kRead | kWrite | kCreate | kAppend,
  ax: kWrite | kCreate | kAppend | kExclusive,
  'ax+': kRead | kWrite | kCreate | kAppend | kExclusive,
};

const { EFAULT } = native.errors;

/**
 * A file's operation (`file`: its file handle, -1 for an open). Aborting its signal cancels it
 * where it waits (the kernel, or the thread pool's syscall); it fails with an AbortError only if
 * it really was cancelled — one the kernel had done resolves with its result — and only once it
 * is over. Pending when the loop closes, it fails with ERR_LOOP_CLOSED. Errors are shaped like
 * node:fs's.
 */
class FileOperation extends Operation {
  readonly #path: string | undefined;

  constructor(syscall: string, file: number, signal: AbortSignal | undefined, path?: string) {
    super(syscall, file, signal, ignore);
    this.#path = path;
  }

  override get file(): boolean {
    return true;
  }

  override error(errno: number, closing?: ClosingErrors): Error {
    if (errno === EFAULT && this.syscall === 'read') return readBufferGone();
    return super.error(errno, closing);
  }

  protected override systemError(errno: number): Error {
    return fileError(errno, this.syscall, this.#path);
  }
}

const ignore = (): void => {};

// %TypedArray%.prototype's getters, taken once: what a view really is, whatever it or its class
// says. An out-of-bounds view (its resizable buffer shrunk under it) has length and offset 0.
const typedArrayPrototype: object = Object.getPrototypeOf(Uint8Array.prototype);
const intrinsic = <T>(key: string): ((view: Uint8Array) => T) =>
  Function.prototype.call.bind(Object.getOwnPropertyDescriptor(typedArrayPrototype, key)!.get!) as (view: Uint8Array) => T;
const lengthOf = intrinsic<number>('length');
const byteOffsetOf = intrinsic<number>('byteOffset');
const bufferOf = intrinsic<ArrayBufferLike>('buffer');

// Shaped like `node:fs` errors: "ENOENT: no such file or directory, open '/path'". A closed File is
// refused before anything is submitted (ERR_FILE_CLOSED), so an EBADF here is the system's: a
// write on a file opened for reading, as node:fs reports it.
function fileError(errno: number, syscall: string, path: string | undefined): Error {
  const error: SystemError & { path?: string } = systemError(errno, syscall);
  const description = getSystemErrorMap().get(errno)?.[1] ?? 'unknown error';
  error.message = `${error.code}: ${description}, ${syscall}${path === undefined ? '' : ` '${path}'`}`;
  if (path !== undefined) error.path = path;
  return error;
}

/**
 * A zero-filled buffer whose memory is aligned to `alignment` bytes, as `direct: true` (O_DIRECT)
 * file I/O requires of its buffers; no ordinary JavaScript allocation promises that.
 */
export function allocAligned(size: number, alignment = 4096): Buffer {
  validateInteger('size', size, 1, 1 << 30);
  validateInteger('alignment', alignment, 8, 65536);
  if ((alignment & (alignment - 1)) !== 0) throw invalidArgValue('alignment', 'a power of two', alignment);
  return Buffer.from(native.allocAligned(size, alignment));
}

/** @internal */
export async function openFile(core: LoopCore, path: string, options: OpenFileOptions = {}): Promise<File> {
  if (typeof path !== 'string' || path.length === 0) throw invalidArgValue('path', 'a non-empty string', path);
  validateWithoutNullBytes('path', path);
  validateObject('options', options);
  // Each option read once: a getter could answer one value to the check and another to the use.
  const { flags = 'r', mode = 0o666, direct, signal } = options as { flags?: unknown; mode?: unknown; direct?: unknown; signal?: unknown };
  if (typeof flags !== 'string' || !Object.hasOwn(flagBits, flags)) throw invalidArgValue('options.flags', `one of ${Object.keys(flagBits).join(', ')}`, flags);
  validateInteger('options.mode', mode, 0, 0o7777);
  validateAbortSignal('options.signal', signal);
  const bits = flagBits[flags as OpenFlags] | (direct === true ? kDirect : 0);
  const open = new FileOperation('open', -1, signal, path);
  const handle = await promiseOf(open, core.fileOpen(open, path, bits, mode));
  return new File(core, handle, path);
}

/**
 * An open regular file, shaped like `node:fs/promises`' FileHandle. On the proactor backends
 * each operation is submitted to the kernel; on the reactor backends it runs on the loop's thread
 * pool (a regular file is always "ready", so readiness cannot wait for it).
 *
 * Reads and writes at the current position (`position` null) share the file's one position, which
 * each moves: they run one at a time, in the order they were called, on every backend — issued
 * together without awaiting, they read the file's bytes in order and write (or append) them as a
 * stream would. One that fails or is aborted is skipped and the next goes on from where the
 * previous left the position. Positioned reads and writes do not wait for them, nor for each other.
 *
 * @example
 * const file = await loop.openFile('data.bin');
 * const { bytesRead } = await file.read(buffer, 0, 4096, 8192);
 * await file.close();
 */
export class File {
  readonly path: string;
  readonly #core: LoopCore;
  readonly #handle: number;
  #closing: Promise<void> | null = null;

  /** @internal */
  constructor(core: LoopCore, handle: number, path: string) {
    this.#core = core;
    this.#handle = handle;
    this.path = path;
  }

  get closed(): boolean {
    return this.#closing !== null;
  }

  /**
   * Reads up to `length` bytes into `buffer` at `offset`, from file `position` (the current
   * position when null: after every earlier read and write at the current position, in call
   * order). Resolves with 0 bytes at the end of the file.
   *
   * @example
   * const [a, b] = await Promise.all([file.read(x), file.read(y)]);  // x gets the first bytes
   */
  async read<T extends Uint8Array>(
    buffer: T,
    offset = 0,
    length?: number,
    position: number | null = null,
    options: FileOperationOptions = {},
  ): Promise<{ bytesRead: number; buffer: T }> {
    const target = this.#slice('buffer', buffer, offset, length, position);
    const bytesRead = await this.#submit('read', options, (read) => this.#core.fileTransfer(read, false, target, position ?? -1));
    return { bytesRead, buffer };
  }

  /**
   * Writes `length` bytes of `buffer` from `offset`, at file `position` (the current position when
   * null — or the end for a file opened to append — after every earlier read and write at the
   * current position, in call order).
   */
  async write<T extends Uint8Array>(
    buffer: T,
    offset = 0,
    length?: number,
    position: number | null = null,
    options: FileOperationOptions = {},
  ): Promise<{ bytesWritten: number; buffer: T }> {
    const source = this.#slice('buffer', buffer, offset, length, position);
    const bytesWritten = await this.#submit('write', options, (write) => this.#core.fileTransfer(write, true, source, position ?? -1));
    return { bytesWritten, buffer };
  }

  /** Flushes data and metadata to the device (fsync). */
  async sync(options: FileOperationOptions = {}): Promise<void> {
    await this.#submit('fsync', options, (sync) => this.#core.fileSync(sync, false));
  }

  /** Flushes data to the device (fdatasync). */
  async datasync(options: FileOperationOptions = {}): Promise<void> {
    await this.#submit('fdatasync', options, (sync) => this.#core.fileSync(sync, true));
  }

  /** Closes the file once the operations in flight on it are done. Closing twice is harmless. */
  close(): Promise<void> {
    if (this.#closing === null) {
      this.#closing = this.#core.closed
        ? Promise.resolve()
        : this.#closeNow();
    }
    return this.#closing;
  }

  #closeNow(): Promise<void> {
    const close = new FileOperation('close', this.#handle, undefined, this.path);
    return promiseOf(close, this.#core.fileClose(close)).then(() => undefined);
  }

  #submit(syscall: string, options: FileOperationOptions, start: (operation: Operation) => number): Promise<number> {
    validateObject('options', options);
    const { signal } = options;  // read once: what is validated is what is used
    validateAbortSignal('options.signal', signal);
    if (this.#closing !== null) return Promise.reject(codedError('ERR_FILE_CLOSED', 'File is closed'));
    const operation = new FileOperation(syscall, this.#handle, signal);
    return promiseOf(operation, start(operation));
  }

  #slice(name: string, buffer: Uint8Array, offset: number, length: number | undefined, position: number | null): Uint8Array {
    validateBuffer(name, buffer);
    // The view's own fields through the intrinsic getters, and a plain Uint8Array over them: not
    // subarray(), whose species constructor the caller chooses (a 4-byte write then wrote 1 MiB of
    // other bytes), nor a subclass's `length`, which could claim bytes past the end.
    const count = validateRange(lengthOf(buffer), offset, length);
    if (position !== null) validateInteger('position', position, 0, Number.MAX_SAFE_INTEGER);
    return new Uint8Array(bufferOf(buffer), byteOffsetOf(buffer) + offset, count);
  }
}
