// The two patterns themselves, each on every backend: the reactor API (watch, then try*) and the
// proactor API (submit, then completion). Together with the backends this is the 2×2 comparison.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends, listenEcho, openFdCount, randomBytes, readBytes, sha256 } from './helpers.js';

/** An echo server written with the reactor API only. */
function reactorEcho(loop: Loop, server: Server): void {
  loop.reactor.watch(server, 'readable', () => {
    let socket: Socket | null;
    while ((socket = loop.reactor.tryAccept(server)) !== null) serve(socket);
  });
  function serve(socket: Socket): void {
    const buffer = Buffer.alloc(64 * 1024);
    let pending: Buffer | null = null;  // bytes read but not yet written
    const flush = (): void => {
      while (pending !== null) {
        const n = loop.reactor.tryWrite(socket, pending);
        if (n === null) return;  // full: the writable watcher calls flush again
        pending = n === pending.length ? null : pending.subarray(n);
      }
      loop.reactor.unwatch(socket, 'writable');
      loop.reactor.watch(socket, 'readable', onReadable);
    };
    const onReadable = (): void => {
      const n = loop.reactor.tryRead(socket, buffer);
      if (n === null) return;
      if (n === 0) return socket.close();
      pending = Buffer.from(buffer.subarray(0, n));
      // Stop reading until this chunk is out: that is the reactor's back-pressure.
      loop.reactor.unwatch(socket, 'readable');
      loop.reactor.watch(socket, 'writable', flush);
    };
    loop.reactor.watch(socket, 'readable', onReadable);
  }
}

/** An echo server written with the proactor API only. */
function proactorEcho(loop: Loop, server: Server): void {
  const acceptNext = (): void => {
    loop.proactor.accept(server, (error, socket) => {
      if (error) return;  // server closed
      acceptNext();
      void serve(socket!);
    });
  };
  acceptNext();
  async function serve(socket: Socket): Promise<void> {
    const buffer = Buffer.alloc(64 * 1024);
    try {
      for (let n = await loop.proactor.read(socket, buffer); n > 0; n = await loop.proactor.read(socket, buffer)) {
        await loop.proactor.write(socket, buffer.subarray(0, n));
      }
    } catch {
      // The test is over: its client has every byte, and the loop closed with this connection's
      // last write completion not yet delivered (an unhandled rejection, once in a few runs).
    }
    socket.close();
  }
}

/** Sends `payload` with the given API and returns what came back. */
async function roundTrip(loop: Loop, api: 'reactor' | 'proactor', port: number, payload: Buffer): Promise<Buffer> {
  const socket = await loop.connect({ host: '127.0.0.1', port });
  const received = Buffer.alloc(payload.length);
  let got = 0;
  if (api === 'proactor') {
    const reading = (async () => {
      while (got < payload.length) {
        const n = await loop.proactor.read(socket, received.subarray(got));
        if (n === 0) break;
        got += n;
      }
    })();
    for (let offset = 0; offset < payload.length; offset += 256 * 1024) {
      const written = await loop.proactor.write(socket, payload.subarray(offset, offset + 256 * 1024));
      expect(written).toBe(Math.min(256 * 1024, payload.length - offset));
    }
    await reading;
  } else {
    await new Promise<void>((resolve, reject) => {
      let sent = 0;
      loop.reactor.watch(socket, 'writable', () => {
        const n = loop.reactor.tryWrite(socket, payload.subarray(sent));
        if (n !== null) sent += n;
        if (sent === payload.length) loop.reactor.unwatch(socket, 'writable');
      });
      loop.reactor.watch(socket, 'readable', () => {
        try {
          const n = loop.reactor.tryRead(socket, received.subarray(got));
          if (n === null) return;
          got += n;
          if (n === 0 || got === payload.length) {
            loop.reactor.unwatch(socket);
            resolve();
          }
        } catch (error) {
          reject(error);
        }
      });
    });
  }
  socket.close();
  return received.subarray(0, got);
}

describe.each(backends)('patterns on %s', (backend) => {
  let loop: Loop;
  beforeEach(() => {
    loop = open({ backend });
  });
  afterEach(async () => {
    await loop.close();
  });

  describe.each(['reactor', 'proactor'] as const)('%s API', (api) => {
    it('serves an echo that returns 8 MiB from 10 clients byte for byte', async () => {
      const server = await loop.listen({ host: '127.0.0.1', port: 0 });
      (api === 'reactor' ? reactorEcho : proactorEcho)(loop, server);
      const payloads = Array.from({ length: 10 }, () => randomBytes(800 * 1024));
      const echoed = await Promise.all(payloads.map((payload) => roundTrip(loop, api, server.port, payload)));
      echoed.forEach((bytes, i) => expect(sha256(bytes)).toBe(sha256(payloads[i]!)));
    });

    it('talks to the net layer of the same loop', async () => {
      const server = await listenEcho(loop);
      const payload = randomBytes(3 * 1024 * 1024);
      expect(sha256(await roundTrip(loop, api, server.port, payload))).toBe(sha256(payload));
    });
  });

  it('reactor: tryRead returns null when nothing is ready, 0 at EOF', async () => {
    let peer: Socket | undefined;
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
      peer = socket;
    });
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    expect(loop.reactor.tryRead(socket, Buffer.alloc(16))).toBeNull();
    await expect.poll(() => peer).toBeDefined();
    await peer!.end();
    const n = await new Promise<number | null>((resolve) =>
      loop.reactor.watch(socket, 'readable', () => resolve(loop.reactor.tryRead(socket, Buffer.alloc(16)))),
    );
    expect(n).toBe(0);
  });

  it('reactor: readiness repeats while data stays unread (level-triggered)', async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
      await socket.write('abcdef');
    });
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    const parts: string[] = [];
    await new Promise<void>((resolve) => {
      loop.reactor.watch(socket, 'readable', () => {
        const buffer = Buffer.alloc(2);  // read only part: the rest must be reported again
        const n = loop.reactor.tryRead(socket, buffer);
        if (n) parts.push(buffer.toString('latin1', 0, n));
        if (parts.join('') === 'abcdef') resolve();
      });
    });
    expect(parts.join('')).toBe('abcdef');
  });

  it('a batch reaches JavaScript 64 events at a time, with the microtasks they queue run in between', async () => {
    const count = 100;  // ready at once, so one drain takes them all (its batch holds 1 024)
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const clients = await Promise.all(Array.from({ length: count }, () => loop.connect({ host: '127.0.0.1', port: server.port })));
    const peers = await Promise.all(clients.map(() => loop.proactor.accept(server)));
    await Promise.all(clients.map((client) => client.write('x')));  // a resolved write is in the peer's queue
    let delivered = 0;
    const deliveredAtMicrotask: number[] = [];
    await new Promise<void>((resolve) => {
      for (const peer of peers) {
        loop.reactor.watch(peer, 'readable', () => {
          loop.reactor.unwatch(peer, 'readable');
          delivered += 1;
          queueMicrotask(() => deliveredAtMicrotask.push(delivered));
          if (delivered === count) setImmediate(resolve);
        });
      }
    });
    expect(deliveredAtMicrotask).toHaveLength(count);
    // The first event's microtask ran before the 65th event was delivered, not after the batch.
    expect(deliveredAtMicrotask[0]).toBeLessThanOrEqual(64);
    for (const socket of [...clients, ...peers]) socket.close();
  });

  it('proactor: a write completes only once the kernel has taken every byte', async () => {
    let peer: Socket | undefined;
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
      peer = socket;
    });
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    const payload = randomBytes(24 * 1024 * 1024);  // larger than the kernel's socket buffers
    let completed = false;
    const write = loop.proactor.write(socket, payload).then((n) => {
      completed = true;
      return n;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(completed).toBe(false);
    await expect.poll(() => peer).toBeDefined();
    const received = await readBytes(peer!, payload.length);
    expect(await write).toBe(payload.length);
    expect(sha256(received)).toBe(sha256(payload));
  });

  it('proactor: closing sockets with reads and writes in flight fails them with ERR_SOCKET_CLOSED and leaks no descriptor', async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, () => {});
    const before = process.platform === 'win32' ? 0 : openFdCount();
    for (let round = 0; round < 20; round++) {
      const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
      const read = loop.proactor.read(socket, Buffer.alloc(1024));
      const write = loop.proactor.write(socket, randomBytes(8 * 1024 * 1024));
      await new Promise((resolve) => setTimeout(resolve, 5));
      socket.close();
      // The two completions may come in either order, each in its own turn: wait on both at
      // once so that neither is an unhandled rejection while the other is awaited.
      const closed = expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' });
      expect(await Promise.allSettled([read, write])).toEqual([
        { status: 'rejected', reason: closed },
        { status: 'rejected', reason: closed },
      ]);
    }
    // The server side of each connection is still open (its handler kept it): close the server's
    // loop-side sockets by closing the loop, then every descriptor must be gone.
    await loop.close();
    if (process.platform !== 'win32') expect(openFdCount()).toBeLessThanOrEqual(before - 1);
  });

  it('proactor: the callback form reports errors as the first argument, never synchronously', async () => {
    const server = await listenEcho(loop);
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    socket.close();
    let synchronous = true;
    const args = await new Promise<unknown[]>((resolve) => {
      loop.proactor.read(socket, Buffer.alloc(8), (...received) => resolve(received));
      synchronous = false;
    });
    expect(synchronous).toBe(false);
    expect(args).toHaveLength(1);  // the error alone, as Node calls back
    expect(args[0]).toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });

  it('proactor: the pooled read (no buffer) echoes 8 MiB from 10 clients byte for byte, then null at EOF', async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const served: Promise<void>[] = [];
    const acceptNext = (): void => {
      loop.proactor.accept(server, (error, socket) => {
        if (error) return;
        acceptNext();
        served.push((async () => {
          for (let chunk = await loop.proactor.read(socket!); chunk !== null; chunk = await loop.proactor.read(socket!)) {
            expect(chunk.length).toBeGreaterThan(0);
            await loop.proactor.write(socket!, chunk);
          }
          socket!.close();
        })());
      });
    };
    acceptNext();
    const payloads = Array.from({ length: 10 }, () => randomBytes(800 * 1024));
    const echoed = await Promise.all(payloads.map((payload) => roundTrip(loop, 'proactor', server.port, payload)));
    echoed.forEach((bytes, i) => expect(sha256(bytes)).toBe(sha256(payloads[i]!)));
    await Promise.all(served);  // every server loop saw null: the clients closed
  });

  it('proactor: the pooled read calls back never synchronously, keeps bytes an abort left, and is the only reader', async () => {
    const server = await listenEcho(loop);
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    const aborted = new AbortController();
    const withdrawn = loop.proactor.read(socket, { signal: aborted.signal });
    aborted.abort();
    await expect(withdrawn).rejects.toMatchObject({ name: 'AbortError' });
    await loop.proactor.write(socket, Buffer.from('hello'));
    await new Promise((resolve) => setTimeout(resolve, 50));  // the echo is back, waiting in the loop
    let synchronous = true;
    const chunk = await new Promise<Buffer | null>((resolve, reject) => {
      loop.proactor.read(socket, (error, bytes) => (error ? reject(error) : resolve(bytes!)));
      synchronous = false;
    });
    expect(synchronous).toBe(false);
    expect(chunk?.toString()).toBe('hello');
    // The socket is now read without a buffer: a buffer read is refused, not interleaved.
    await expect(loop.proactor.read(socket, Buffer.alloc(8))).rejects.toMatchObject({ code: 'ERR_SOCKET_BUSY' });
    expect(() => loop.proactor.read(socket, new ArrayBuffer(8) as unknown as Uint8Array)).toThrow(/buffer/);
    socket.close();
    await expect(loop.proactor.read(socket)).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });

  it('proactor: callbacks of writes made inside a batch come after their caller returns, in order, and one that throws costs the others nothing', async () => {
    const server = await listenEcho(loop);
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    const closed = await loop.connect({ host: '127.0.0.1', port: server.port });
    closed.close();
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    const caught: unknown[] = [];
    process.on('uncaughtException', (error) => caught.push(error));
    const order: string[] = [];
    let closedArgs: unknown[] = [];
    try {
      await new Promise<void>((resolve) => {
        let waiting = 2;  // c's callback and the closed socket's: in flight or done at once, by backend
        const settled = (): void => void (--waiting === 0 && setImmediate(resolve));
        loop.proactor.read(socket, () => {
          loop.proactor.write(socket, Buffer.from('a'), (...args) => order.push(`a ${JSON.stringify(args)}`));
          loop.proactor.write(socket, Buffer.from('b'), () => {
            order.push('b');
            throw new Error('thrown by b');
          });
          loop.proactor.write(socket, Buffer.from('c'), () => {
            order.push('c');
            settled();
          });
          loop.proactor.read(closed, Buffer.alloc(1), (...args) => {
            closedArgs = args;
            settled();
          });
          order.push('read callback returned');
        });
        void loop.proactor.write(socket, Buffer.from('x'));  // the echo's reply is the read's batch
      });
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.removeAllListeners('uncaughtException');
      for (const listener of listeners) process.on('uncaughtException', listener);
    }
    expect(order).toEqual(['read callback returned', 'a [null,1]', 'b', 'c']);
    expect(closedArgs).toHaveLength(1);  // the error alone, as Node calls back
    expect(closedArgs[0]).toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
    expect(caught).toEqual([expect.objectContaining({ message: 'thrown by b' })]);
    socket.close();
  });

  it('proactor: an accept in flight fails cleanly when its server closes', async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const accept = loop.proactor.accept(server);
    server.close();
    await expect(accept).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });

  it('an exception thrown by a callback reaches uncaughtException without losing other events', async () => {
    const server = await listenEcho(loop);
    const a = await loop.connect({ host: '127.0.0.1', port: server.port });
    const b = await loop.connect({ host: '127.0.0.1', port: server.port });
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    const caught: unknown[] = [];
    process.on('uncaughtException', (error) => caught.push(error));
    try {
      loop.reactor.watch(a, 'writable', () => {
        loop.reactor.unwatch(a, 'writable');
        throw new Error('boom');
      });
      await b.write('ok');
      expect((await readBytes(b, 2)).toString()).toBe('ok');
      await expect.poll(() => caught.length).toBe(1);
      expect((caught[0] as Error).message).toBe('boom');
    } finally {
      process.removeAllListeners('uncaughtException');
      for (const listener of listeners) process.on('uncaughtException', listener);
    }
  });
});
