import { getSystemErrorMap } from 'node:util';

import { native } from './binding.js';
import type { LoopCore } from './core.js';
import {
  abortError,
  codedError,
  invalidArgValue,
  loopClosed,
  readBufferGone,
  systemError,
  type SystemError,
  validateAbortSignal,
  validateBuffer,
  validateInteger,
  validateObject,
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

// Bits of the native fileOpen() flags (native/binding/addon.cc).
const kRead = 1;
const kWrite = 2;
const kCreate = 4;
const kTruncate = 8;
const kAppend = 16;
const kExclusive = 32;
const kDirect = 64;

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

const { ECANCELED, EFAULT } = native.errors;

/**
 * Submits one file operation of `file` (-1: an open) and settles when it completes. Aborting
 * `signal` cancels it where it waits (the kernel, or the thread pool's syscall); it rejects with
 * an AbortError only if it really was cancelled — one the kernel had done resolves with its
 * result — and only once it is over. Pending when the
 * loop closes, it rejects with ERR_LOOP_CLOSED.
 */
function submitFileOperation(
  core: LoopCore,
  syscall: string,
  path: string | undefined,
  file: number,
  signal: AbortSignal | undefined,
  start: (id: number) => number,
): Promise<number> {
  if (signal?.aborted) return Promise.reject(abortError(signal));
  if (core.closed) return Promise.reject(loopClosed());
  const id = core.nextOperationId();
  const rc = start(id);
  if (rc < 0) return Promise.reject(fileError(rc, syscall, path));
  return new Promise((resolve, reject) => {
    // Not LoopCore.cancel: a file handle is not a socket handle, files have a cancel of their own.
    const onAbort = (): void => cancelFileOperation(core, file, id);
    signal?.addEventListener('abort', onAbort, { once: true });
    core.expect(
      id,
      (result) => {
        signal?.removeEventListener('abort', onAbort);
        if (result >= 0) resolve(result);
        else if (result === ECANCELED && signal?.aborted) reject(abortError(signal));
        else if (result === ECANCELED && core.closed) reject(loopClosed());
        else if (result === EFAULT && syscall === 'read') reject(readBufferGone());
        else reject(fileError(result, syscall, path));
      },
    );
  });
}

/** Asks the backend to cancel file operation `id`; its completion follows as an event. */
function cancelFileOperation(core: LoopCore, file: number, id: number): void {
  if (!core.closed) core.native.fileCancel(file, id);
}

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
  validateObject('options', options);
  const flags: unknown = options.flags ?? 'r';
  if (typeof flags !== 'string' || !Object.hasOwn(flagBits, flags)) throw invalidArgValue('options.flags', `one of ${Object.keys(flagBits).join(', ')}`, flags);
  const mode = options.mode ?? 0o666;
  validateInteger('options.mode', mode, 0, 0o7777);
  validateAbortSignal('options.signal', options.signal);
  const bits = flagBits[flags as OpenFlags] | (options.direct === true ? kDirect : 0);
  const handle = await submitFileOperation(core, 'open', path, -1, options.signal, (id) =>
    core.native.fileOpen(path, bits, mode, id),
  );
  return new File(core, handle, path);
}

/**
 * An open regular file, shaped like `node:fs/promises`' FileHandle. On the proactor backends
 * each operation is submitted to the kernel; on the reactor backends it runs on the loop's thread
 * pool (a regular file is always "ready", so readiness cannot wait for it).
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
   * position when null). Resolves with 0 bytes at the end of the file.
   */
  async read<T extends Uint8Array>(
    buffer: T,
    offset = 0,
    length = buffer.byteLength - offset,
    position: number | null = null,
    options: FileOperationOptions = {},
  ): Promise<{ bytesRead: number; buffer: T }> {
    const target = this.#slice('buffer', buffer, offset, length, position);
    const bytesRead = await this.#submit('read', options, (id) =>
      this.#core.native.fileRead(this.#handle, target, position ?? -1, id),
    );
    return { bytesRead, buffer };
  }

  /** Writes `length` bytes of `buffer` from `offset`, at file `position` (current when null). */
  async write<T extends Uint8Array>(
    buffer: T,
    offset = 0,
    length = buffer.byteLength - offset,
    position: number | null = null,
    options: FileOperationOptions = {},
  ): Promise<{ bytesWritten: number; buffer: T }> {
    const source = this.#slice('buffer', buffer, offset, length, position);
    const bytesWritten = await this.#submit('write', options, (id) =>
      this.#core.native.fileWrite(this.#handle, source, position ?? -1, id),
    );
    return { bytesWritten, buffer };
  }

  /** Flushes data and metadata to the device (fsync). */
  async sync(options: FileOperationOptions = {}): Promise<void> {
    await this.#submit('fsync', options, (id) => this.#core.native.fileSync(this.#handle, false, id));
  }

  /** Flushes data to the device (fdatasync). */
  async datasync(options: FileOperationOptions = {}): Promise<void> {
    await this.#submit('fdatasync', options, (id) => this.#core.native.fileSync(this.#handle, true, id));
  }

  /** Closes the file once the operations in flight on it are done. Closing twice is harmless. */
  close(): Promise<void> {
    if (this.#closing === null) {
      this.#closing = this.#core.closed
        ? Promise.resolve()
        : submitFileOperation(this.#core, 'close', this.path, this.#handle, undefined, (id) =>
            this.#core.native.fileClose(this.#handle, id),
          ).then(() => undefined);
    }
    return this.#closing;
  }

  #submit(syscall: string, options: FileOperationOptions, start: (id: number) => number): Promise<number> {
    validateObject('options', options);
    validateAbortSignal('options.signal', options.signal);
    if (this.#closing !== null) return Promise.reject(codedError('ERR_FILE_CLOSED', 'File is closed'));
    return submitFileOperation(this.#core, syscall, undefined, this.#handle, options.signal, start);
  }

  #slice(name: string, buffer: Uint8Array, offset: number, length: number, position: number | null): Uint8Array {
    validateBuffer(name, buffer);
    validateInteger('offset', offset, 0, buffer.byteLength);
    validateInteger('length', length, 0, buffer.byteLength - offset);
    if (position !== null) validateInteger('position', position, 0, Number.MAX_SAFE_INTEGER);
    return buffer.subarray(offset, offset + length);
  }
}
