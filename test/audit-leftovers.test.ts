// What the hostile-caller audit left over: a keep-alive delay past the kernel's limit, a fake
// buffer taken for the options of a read, NUL bytes in host names, and closing a loop with a
// million operations in flight.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { SocketOption } from '../lib/binding.js';
import { open, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends } from './helpers.js';

/** The option as the kernel has it, read through the loop's test-only getter. */
function option(socket: Socket, kind: number): number {
  return socket.core.socketOption(socket.handle, kind);
}

describe.each(backends)('%s: audit leftovers', (backend) => {
  let loop: Loop;
  let server: Server;
  let client: Socket;
  let peer: Socket;

  beforeEach(async () => {
    loop = open({ backend });
    server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const accepted = loop.proactor.accept(server);
    client = await loop.connect({ host: '127.0.0.1', port: server.port });
    peer = await accepted;
  });
  afterEach(async () => {
    await loop.close();
  });

  it('setKeepAlive with a delay past the kernel\'s maximum turns keep-alive on, as late as the kernel allows', () => {
    const longest = 2 ** 31 - 1;
    expect(client.setKeepAlive(true, longest)).toBe(client);
    expect(option(client, SocketOption.keepAlive)).toBe(1);
    // Linux's MAX_TCP_KEEPIDLE; macOS, the BSDs and Windows take the delay as asked.
    expect(option(client, SocketOption.keepAliveIdle)).toBe(process.platform === 'linux' ? 32_767 : Math.ceil(longest / 1000));
    client.setKeepAlive(true, 32_768_000);
    expect(option(client, SocketOption.keepAliveIdle)).toBe(process.platform === 'linux' ? 32_767 : 32_768);
  });

  it('setKeepAlive still refuses a negative, NaN or too long delay, naming initialDelay', () => {
    const outOfRange = expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining('"initialDelay"') });
    for (const delay of [-1, Number.NaN, 2 ** 31]) expect(() => client.setKeepAlive(true, delay)).toThrow(outOfRange);
  });

  it('proactor.read refuses a second argument that is neither a Uint8Array nor plain options, naming the buffer, and leaves the socket unread', async () => {
    const refused = expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('"buffer"') });
    class ReadOptions {
      signal = new AbortController().signal;
    }
    const notBuffers: object[] = [
      Object.create(Uint8Array.prototype) as object,
      Object.create(Uint8Array.prototype, { length: { value: 5 } }) as object,
      { length: 5 },
      [1, 2, 3],
      new DataView(new ArrayBuffer(5)),
      new ArrayBuffer(5),
      new ReadOptions(),
    ];
    for (const value of notBuffers) {
      expect(() => loop.proactor.read(client, value as Uint8Array)).toThrow(refused);
      expect(() => loop.proactor.read(client, value as Uint8Array, () => {})).toThrow(refused);
    }
    // No pooled read took the socket: a read into a buffer still may (else ERR_SOCKET_BUSY).
    await peer.write('ok');
    const buffer = new Uint8Array(2);
    expect(await loop.proactor.read(client, buffer)).toBe(2);
    expect(Buffer.from(buffer).toString()).toBe('ok');
  });

  it('proactor.read takes a plain object, with or without a prototype, as its options', async () => {
    await peer.write('one');
    expect(String(await loop.proactor.read(client, { signal: new AbortController().signal }))).toBe('one');
    await peer.write('two');
    expect(String(await loop.proactor.read(client, Object.create(null) as object))).toBe('two');
  });

  it('a host name with a NUL byte is refused up front, naming the argument, instead of resolved up to the NUL', async () => {
    const refused = expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('"options.host"') });
    let looked = 0;
    const lookup = (): void => void (looked += 1);
    await expect(loop.connect({ host: '127.0.0.1\0.evil.example', port: server.port })).rejects.toThrow(refused);
    await expect(loop.connect({ host: 'localhost\0.evil', port: server.port })).rejects.toThrow(refused);
    await expect(loop.connect({ host: 'localhost\0.evil', port: server.port, lookup })).rejects.toThrow(refused);
    expect(looked).toBe(0);
    await expect(loop.listen({ host: '127.0.0.1\0x', port: 0 })).rejects.toThrow(refused);
    await expect(loop.listen({ host: 'localhost\0.evil', port: 0 })).rejects.toThrow(refused);
  });

  it('closing the loop with 100 000 timers and 1000 reads in flight fails each, those of a kind with one shared error', async () => {
    const failures = (promises: Promise<unknown>[]) => Promise.all(promises.map((promise) => promise.then(() => undefined, (error: unknown) => error)));
    const sleeps: Promise<unknown>[] = [];
    for (let i = 0; i < 100_000; i++) sleeps.push(loop.sleep(600_000));
    const reads: Promise<unknown>[] = [];
    for (let i = 0; i < 1000; i++) reads.push(loop.proactor.read(client, new Uint8Array(1)));
    await loop.close();
    const sleepErrors = await failures(sleeps);
    const readErrors = await failures(reads);
    expect(sleepErrors.every((error) => (error as { code?: unknown }).code === 'ERR_LOOP_CLOSED')).toBe(true);
    expect(readErrors.every((error) => (error as { code?: unknown }).code === 'ERR_SOCKET_CLOSED')).toBe(true);
    expect(new Set(sleepErrors).size).toBe(1);
    expect(new Set(readErrors).size).toBe(1);
  });
});
