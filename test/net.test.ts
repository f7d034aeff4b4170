// The net layer (listen/connect/read/write/end/close) on every backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop, type SystemError } from '../lib/index.js';
import { backends, closedPort, listenEcho, logUniformSize, randomBytes, readAll, readBytes, sha256 } from './helpers.js';

describe.each(backends)('net layer on %s', (backend) => {
  let loop: Loop;
  beforeEach(() => {
    loop = open({ backend });
  });
  afterEach(async () => {
    await loop.close();
  });

  it('reports the backend it runs on', () => {
    expect(loop.info.backend).toBe(backend);
    expect(['reactor', 'proactor', 'thread-per-connection']).toContain(loop.info.pattern);
    expect(loop.info.emulatedPattern).not.toBe(loop.info.pattern);
  });

  it('echoes 10 000 messages of 1 B to 256 KiB (log-uniform) over 50 connections, byte for byte', async () => {
    const server = await listenEcho(loop);
    const connections = 50;
    const messagesPerConnection = 200;
    const results = await Promise.all(
      Array.from({ length: connections }, async () => {
        const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
        const messages = Array.from({ length: messagesPerConnection }, () => randomBytes(logUniformSize(1, 256 * 1024)));
        const total = messages.reduce((sum, message) => sum + message.length, 0);
        const received = readBytes(socket, total);
        for (const message of messages) await socket.write(message);
        const echoed = await received;
        socket.close();
        return { sent: sha256(...messages), echoed: sha256(echoed), total, length: echoed.length };
      }),
    );
    for (const result of results) {
      expect(result.length).toBe(result.total);
      expect(result.echoed).toBe(result.sent);
    }
  });

  it('moves 64 MiB each way on one connection without losing or reordering a byte', async () => {
    const server = await listenEcho(loop);
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    const payload = randomBytes(64 * 1024 * 1024);
    const received = readBytes(socket, payload.length);
    for (let offset = 0; offset < payload.length; offset += 1024 * 1024) {
      await socket.write(payload.subarray(offset, offset + 1024 * 1024));
    }
    const echoed = await received;
    expect(echoed.length).toBe(payload.length);
    expect(sha256(echoed)).toBe(sha256(payload));
  });

  it('half-close: end() gives the peer EOF, and the peer can still write back', async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
      const request = await readAll(socket);  // until the client's FIN
      await socket.write(Buffer.concat([Buffer.from('got '), request]));
    });
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    await socket.write('hello');
    await socket.end();
    await expect(socket.write('more')).rejects.toMatchObject({ code: 'ERR_STREAM_WRITE_AFTER_END' });
    const reply = await readAll(socket);
    expect(reply.toString()).toBe('got hello');
  });

  it('a peer reset is ECONNRESET on that socket while the server keeps serving others', async () => {
    const serverErrors: string[] = [];
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
      try {
        for await (const chunk of socket) await socket.write(chunk);
      } catch (error) {
        serverErrors.push((error as SystemError).code);
      }
    });
    const victim = await loop.connect({ host: '127.0.0.1', port: server.port });
    await victim.write('ping');
    expect((await victim.read())?.toString()).toBe('ping');
    await victim.write('unread');  // unread data makes the reset certain to surface
    victim.resetAndDestroy();
    await expect.poll(() => serverErrors).toEqual(['ECONNRESET']);

    const other = await loop.connect({ host: '127.0.0.1', port: server.port });
    await other.write('still here');
    expect((await readBytes(other, 10)).toString()).toBe('still here');
  });

  it('the async iterator: next() called again before the first settles gets the next chunk, in order, then done', async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
      await socket.write('one');
      await new Promise((resolve) => setTimeout(resolve, 20));  // two chunks, not one
      await socket.write('two');
      await socket.end();
    });
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    const iterator = socket[Symbol.asyncIterator]();
    const [first, second] = await Promise.all([iterator.next(), iterator.next()]);
    expect([first.value?.toString(), second.value?.toString()]).toEqual(['one', 'two']);
    expect(await iterator.next()).toEqual({ done: true, value: undefined });
  });

  it('a server that resets is ECONNRESET for the client', async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
      await socket.read();
      socket.resetAndDestroy();
    });
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    await socket.write('x');
    await expect(readAll(socket)).rejects.toMatchObject({ code: 'ECONNRESET', syscall: 'read', errno: expect.any(Number) });
  });

  it('connecting to a closed port fails with ECONNREFUSED', async () => {
    const port = await closedPort(loop);
    const error = await loop.connect({ host: '127.0.0.1', port }).catch((e: SystemError) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect', address: '127.0.0.1', port });
    expect((error as Error).message).toBe(`connect ECONNREFUSED 127.0.0.1:${port}`);
  });

  it('listening on a port in use fails with EADDRINUSE', async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    await expect(loop.listen({ host: '127.0.0.1', port: server.port })).rejects.toMatchObject({
      code: 'EADDRINUSE',
      syscall: 'listen',
    });
  });

  it('echoes over IPv6 loopback and reports both addresses', async () => {
    const server = await listenEcho(loop, { host: '::1' });
    expect(server.address()).toMatchObject({ family: 'IPv6', address: '::1' });
    const socket = await loop.connect({ host: '::1', port: server.port });
    expect(socket.remotePort).toBe(server.port);
    expect(socket.remoteAddress).toBe('::1');
    await socket.write('six');
    expect((await readBytes(socket, 3)).toString()).toBe('six');
  });

  it('resolves host names such as localhost', async () => {
    const server = await listenEcho(loop, { host: '127.0.0.1' });
    const socket = await loop.connect({ host: 'localhost', port: server.port }).catch(() => null);
    if (socket === null) return;  // localhost resolved to ::1 only; covered by the IPv6 test
    await socket.write('name');
    expect((await readBytes(socket, 4)).toString()).toBe('name');
  });

  // Windows' AcceptEx/ConnectEx take no AF_UNIX sockets: the IOCP backend has no Unix sockets.
  it.skipIf(process.platform === 'win32')('echoes over a Unix domain socket', async () => {
    const directory = mkdtempSync(path.join(tmpdir(), 'twinloop-'));
    try {
      const socketPath = path.join(directory, 'echo.sock');
      const server = await listenEcho(loop, { path: socketPath });
      expect(server.port).toBe(0);
      const socket = await loop.connect({ path: socketPath });
      const payload = randomBytes(300_000);
      const received = readBytes(socket, payload.length);
      await socket.write(payload);
      expect(sha256(await received)).toBe(sha256(payload));
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  it('a slow reader pauses the socket instead of buffering without bound', async () => {
    const payload = randomBytes(16 * 1024 * 1024);
    let writesDone = false;
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
      await socket.write(payload);
      writesDone = true;
    });
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port, readableHighWaterMark: 64 * 1024 });
    const first = await socket.read();
    expect(first).not.toBeNull();
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Reading paused at the high-water mark: the rest waits in the kernel, so the server's write
    // of 16 MiB cannot have completed.
    expect(writesDone).toBe(false);
    const rest = await readAll(socket);
    expect(sha256(first!, rest)).toBe(sha256(payload));
  });

  it('a closed socket used again is a clear error, never a crash', async () => {
    const server = await listenEcho(loop);
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    socket.close();
    socket.close();  // closing twice is harmless
    expect(socket.closed).toBe(true);
    await expect(socket.write('x')).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED', message: 'Socket is closed' });
    await expect(socket.end()).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
    expect(await socket.read()).toBeNull();
    expect(() => socket.address()).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' }));
    expect(() => loop.reactor.tryRead(socket, Buffer.alloc(4))).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' }));
    await expect(loop.proactor.read(socket, Buffer.alloc(4))).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });

  it('closing a socket with a write in flight fails that write with ERR_SOCKET_CLOSED', async () => {
    // A server that never reads: the client's big write cannot finish.
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, () => {});
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    const write = socket.write(randomBytes(32 * 1024 * 1024));
    const pendingRead = socket.read();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(socket.writableLength).toBeGreaterThan(0);
    socket.close();
    await expect(write).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
    expect(await pendingRead).toBeNull();
    expect(socket.writableLength).toBe(0);
  });

  it('rejects bad arguments with TypeError or RangeError naming the argument', async () => {
    await expect(loop.listen({ host: '127.0.0.1', port: 70000 })).rejects.toThrow(RangeError);
    await expect(loop.listen({ host: '127.0.0.1', port: 70000 })).rejects.toThrow(/"options\.port"/);
    await expect(loop.listen({ host: '127.0.0.1', port: -1 })).rejects.toThrow(RangeError);
    await expect(loop.listen({ host: '127.0.0.1', port: 1.5 })).rejects.toThrow(RangeError);
    await expect(loop.listen({ host: '127.0.0.1', port: '80' as unknown as number })).rejects.toThrow(/"options\.port".*number/);
    await expect(loop.listen(null as never)).rejects.toThrow(TypeError);
    await expect(loop.listen({ port: 0 }, 'handler' as never)).rejects.toThrow(/"handler"/);
    await expect(loop.connect({ host: '127.0.0.1', port: 0 })).rejects.toThrow(RangeError);
    await expect(loop.connect({ path: '' })).rejects.toThrow(/"options\.path"/);
    const server = await listenEcho(loop);
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    expect(() => socket.write(42 as never)).toThrow(/"data"/);
    expect(() => loop.reactor.tryRead(socket, 'buf' as never)).toThrow(/"buffer"/);
    expect(() => loop.reactor.tryRead({} as never, Buffer.alloc(1))).toThrow(/"socket"/);
    expect(() => loop.reactor.watch(socket, 'sideways' as never, () => {})).toThrow(/"readiness"/);
    expect(() => loop.reactor.watch(socket, 'readable', 5 as never)).toThrow(/"callback"/);
    expect(() => loop.proactor.read(socket, new ArrayBuffer(4) as never)).toThrow(/"buffer"/);
    expect(() => loop.proactor.accept(socket as never)).toThrow(/"server"/);
    expect(() => open({ backend: 'select' as never })).toThrow(/"options\.backend"/);
    expect(() => open({ batchSize: 0 })).toThrow(RangeError);
  });
});
