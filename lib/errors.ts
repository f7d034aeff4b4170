// Errors shaped like Node's own: argument errors name the argument, system errors carry
// code/errno/syscall.
import { getSystemErrorMap, getSystemErrorName, types } from 'node:util';

/** An operating-system failure, with the fields Node's own system errors have. */
export interface SystemError extends Error {
  /** The errno name, e.g. `'ECONNREFUSED'`. */
  code: string;
  /** The negative errno number, as Node reports it. */
  errno: number;
  /** The system call that failed, e.g. `'connect'`. */
  syscall: string;
  address?: string;
  port?: number;
}

export function systemError(errno: number, syscall: string, address?: string, port?: number): SystemError {
  const code = errnoName(errno);
  const where = address === undefined ? '' : port === undefined || port === 0 ? ` ${address}` : ` ${address}:${port}`;
  const error = new Error(`${syscall} ${code}${where}`) as SystemError;
  error.code = code;
  error.errno = errno;
  error.syscall = syscall;
  if (address !== undefined) error.address = address;
  if (port !== undefined && port !== 0) error.port = port;
  Error.captureStackTrace(error, systemError);
  return error;
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(errno);
  } catch {
    return `Unknown system error ${errno}`;
  }
}

/** An Error with a Node-style `code` (`ERR_SOCKET_CLOSED`, `ERR_LOOP_CLOSED`, …). */
export function codedError(code: string, message: string): Error & { code: string } {
  const error = new Error(message) as Error & { code: string };
  error.code = code;
  return error;
}

export const socketClosed = (): Error & { code: string } => codedError('ERR_SOCKET_CLOSED', 'Socket is closed');
export const loopClosed = (): Error & { code: string } => codedError('ERR_LOOP_CLOSED', 'The loop is closed');

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return `type string ('${value.length > 25 ? `${value.slice(0, 25)}...` : value}')`;
  if (typeof value === 'object') return `an instance of ${(value as object).constructor?.name ?? 'Object'}`;
  if (typeof value === 'function') return 'function';
  return `type ${typeof value} (${String(value)})`;
}

export function invalidArgType(name: string, expected: string, value: unknown): TypeError {
  const error = new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(value)}`) as TypeError & {
    code: string;
  };
  error.code = 'ERR_INVALID_ARG_TYPE';
  return error;
}

export function invalidArgValue(name: string, expected: string, value: unknown): TypeError {
  const error = new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(value)}`) as TypeError & {
    code: string;
  };
  error.code = 'ERR_INVALID_ARG_VALUE';
  return error;
}

export function outOfRange(name: string, range: string, value: unknown): RangeError {
  const error = new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${String(value)}`) as RangeError & {
    code: string;
  };
  error.code = 'ERR_OUT_OF_RANGE';
  return error;
}

export function validateInteger(name: string, value: unknown, min: number, max: number): asserts value is number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < min || value > max) throw outOfRange(name, `an integer >= ${min} and <= ${max}`, value);
}

/**
 * The length of the part of a view of `size` bytes that `offset` and `length` name, as node:fs's
 * read and write take them (`length` omitted: the rest of the view); a RangeError names the one
 * out of range.
 */
export function validateRange(size: number, offset: unknown, length: unknown): number {
  validateInteger('offset', offset, 0, size);
  const count = length ?? size - offset;
  validateInteger('length', count, 0, size - offset);
  return count;
}

export function validatePort(name: string, value: unknown): asserts value is number {
  validateInteger(name, value, 0, 65535);
}

// A brand check, not `instanceof`: Object.create(Uint8Array.prototype) is an instance without
// being a typed array, and failed natively with a bare TypeError. A V8 builtin: no allocation.
const { isUint8Array } = types;

export function validateBuffer(name: string, value: unknown): asserts value is Uint8Array {
  if (!isUint8Array(value)) throw invalidArgType(name, 'an instance of Buffer or Uint8Array', value);
}

/**
 * A string the kernel or the resolver reads as a C string, up to its first NUL: 'secret\0.txt'
 * would open 'secret', 'localhost\0.evil' resolve localhost. Refused, as node:fs refuses such a path.
 */
export function validateWithoutNullBytes(name: string, value: string): void {
  if (value.includes('\0')) throw invalidArgValue(name, 'a string without null bytes', value);
}

export function validateFunction(name: string, value: unknown): asserts value is (...args: never[]) => unknown {
  if (typeof value !== 'function') throw invalidArgType(name, 'of type function', value);
}

export function validateObject(name: string, value: unknown): asserts value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) throw invalidArgType(name, 'of type object', value);
}

/** The error an aborted operation rejects with, as Node makes it: name AbortError, code ABORT_ERR. */
export function abortError(signal: AbortSignal): Error {
  const error = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string };
  error.name = 'AbortError';
  error.code = 'ABORT_ERR';
  return error;
}

export function validateAbortSignal(name: string, signal: unknown): asserts signal is AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgType(name, 'an instance of AbortSignal', signal);
}

/** The TypeError for a socket or server passed to a loop that did not open it. */
export function foreignHandle(name: string): TypeError {
  const error = new TypeError(`The "${name}" argument belongs to another loop: a handle is valid only on the loop that opened it`) as TypeError & {
    code: string;
  };
  error.code = 'ERR_INVALID_ARG_VALUE';
  return error;
}

/** A buffer to read into: a 0-byte read would resolve 0, which is what EOF looks like. */
export function validateReadBuffer(name: string, value: unknown): asserts value is Uint8Array {
  validateBuffer(name, value);
  if (value.length === 0) throw outOfRange(`${name}.length`, '>= 1 (a read of 0 bytes cannot be told from EOF)', 0);
}

/** The negative errno the backends return for `name` (`'EBUSY'`), on this platform; 0 if none. */
export function errnoOf(name: string): number {
  for (const [errno, [errnoName]] of getSystemErrorMap()) if (errnoName === name) return errno;
  return 0;
}

/**
 * What a pattern API's read of a socket the net layer reads gets: once `socket.read()` (or for
 * await) has read a socket, the bytes it holds for you come first, so nothing else may read it.
 */
export function socketReadBusy(api: string): Error & { code: string } {
  return codedError(
    'ERR_SOCKET_BUSY',
    `${api} cannot read this socket: it is read without a buffer (socket.read(), for await, or loop.proactor.read(socket)), and a socket is read through one API only`,
  );
}

/**
 * A read whose buffer was detached, transferred or shrunk while the kernel filled memory of the
 * loop's own (see native/core/byte_pool.h): the bytes it read had nowhere to go.
 */
export function readBufferGone(): Error & { code: string } {
  return codedError(
    'ERR_INVALID_STATE',
    'The buffer of this read was detached, transferred or shrunk while the read was in flight: the bytes read could not be delivered',
  );
}
