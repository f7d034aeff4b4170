import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';

import { availableBackends, type Loop, type Server, type Socket } from '../lib/index.js';
import { native, type NativeLoop } from '../lib/binding.js';

/** Every backend this host really has: each suite runs once per backend. */
export const backends = availableBackends();

/** Open descriptors of this process (Linux has /proc, macOS and BSD /dev/fd). */
export function openFdCount(): number {
  return readdirSync(existsSync('/proc/self/fd') ? '/proc/self/fd' : '/dev/fd').length;
}

export function sha256(...chunks: Uint8Array[]): string {
  const hash = createHash('sha256');
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest('hex');
}

/** Sizes spread evenly on a log scale between `min` and `max` bytes. */
export function logUniformSize(min: number, max: number): number {
  return Math.round(Math.exp(Math.log(min) + Math.random() * (Math.log(max) - Math.log(min))));
}

export { randomBytes };

/** An echo server on 127.0.0.1 written the way users would: for-await and write. */
export function listenEcho(loop: Loop, options: { host?: string; path?: string } = {}): Promise<Server> {
  const endpoint = options.path !== undefined ? { path: options.path } : { host: options.host ?? '127.0.0.1', port: 0 };
  return loop.listen(endpoint, async (socket) => {
    for await (const chunk of socket) await socket.write(chunk);
  });
}

/** Settles `promise` into what a test can compare: the value, or the error's name and code. */
export async function outcome<T>(promise: Promise<T>): Promise<{ value: T } | { name: string; code: unknown }> {
  try {
    return { value: await promise };
  } catch (error) {
    const { name, code } = error as Error & { code?: unknown };
    return { name, code };
  }
}

/** Reads until `length` bytes arrived (or EOF) and returns them. */
export async function readBytes(socket: Socket, length: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  while (total < length) {
    const chunk = await socket.read();
    if (chunk === null) break;
    chunks.push(chunk);
    total += chunk.length;
  }
  return Buffer.concat(chunks);
}

/** Reads until EOF. */
export async function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of socket) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** A port nothing listens on (bound, then released). */
export async function closedPort(loop: Loop): Promise<number> {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 });
  const { port } = server;
  server.close();
  return port;
}

/**
 * A native loop object of its own, for the tests of the native boundary itself (what lib/ never
 * sends it): LoopCore alone calls the loop's own one. Close it after use.
 */
export function rawNativeLoop(backend: string): NativeLoop {
  return new native.NativeLoop(backend, new Int32Array(64), Buffer.alloc(64 * 1024), () => {});
}
