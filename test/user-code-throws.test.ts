// User code that throws, or misbehaves, in the middle of the library's own bookkeeping: a 'close'
// or 'timeout' listener, a pooled read's callback, an AbortSignal's addEventListener, an options
// getter. Whatever it does, the loop goes on (or closes) whole: every operation settles, every
// descriptor is given back, other sockets keep their events, and the throw is reported as Node
// reports one from any callback ('uncaughtException').
import net from 'node:net';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop, type Socket } from '../lib/index.js';
import { backends, openFdCount, outcome, readAll } from './helpers.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What `promise` came to within `ms`: its outcome, or 'pending' (a hang, without a test timeout). */
async function within<T>(promise: Promise<T>, ms = 2000): Promise<Awaited<ReturnType<typeof outcome<T>>> | 'pending'> {
  return Promise.race([outcome(promise), delay(ms).then(() => 'pending' as const)]);
}

/** Runs `body` with 'uncaughtException' caught, and returns what was reported meanwhile. */
async function reported(body: () => Promise<void>): Promise<unknown[]> {
  const listeners = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  const caught: unknown[] = [];
  process.on('uncaughtException', (error) => caught.push(error));
  try {
    await body();
    await tick();
  } finally {
    process.removeAllListeners('uncaughtException');
    for (const listener of listeners) process.on('uncaughtException', listener);
  }
  return caught;
}

const thrown = (message: string): unknown => expect.objectContaining({ message });

describe.each(backends)('user code that throws, on %s', (backend) => {
  let loop: Loop;
  beforeEach(() => {
    loop = open({ backend });
  });
  afterEach(async () => {
    await loop.close();
  });

  async function pair(on = loop): Promise<{ client: Socket; peer: Socket }> {
    const server = await on.listen({ host: '127.0.0.1', port: 0 });
    const accepted = on.proactor.accept(server);
    const client = await on.connect({ host: '127.0.0.1', port: server.port });
    return { client, peer: await accepted };
  }

  describe('during loop.close()', () => {
    it("a 'close' listener that throws is reported, and the loop still closes: pending operations fail and every descriptor is given back", async () => {
      const before = openFdCount();
      const own = open({ backend });
      const caught = await reported(async () => {
        const { client } = await pair(own);
        client.on('close', () => {
          throw new Error('close listener threw');
        });
        const sleeping = own.sleep(60_000);
        await own.close();
        expect(await within(sleeping)).toEqual({ name: 'Error', code: 'ERR_LOOP_CLOSED' });
      });
      expect(caught).toEqual([thrown('close listener threw')]);
      expect(own.closed).toBe(true);
      expect(openFdCount()).toBe(before);
    });

    it("a pooled read's callback that throws when the loop closes under it is reported, and the loop still closes", async () => {
      const before = openFdCount();
      const own = open({ backend });
      const caught = await reported(async () => {
        const { client } = await pair(own);
        own.proactor.read(client, () => {
          throw new Error('pooled callback threw');
        });
        await delay(20);  // the read now waits for data: close() calls it back synchronously
        const sleeping = own.sleep(60_000);
        await own.close();
        expect(await within(sleeping)).toEqual({ name: 'Error', code: 'ERR_LOOP_CLOSED' });
      });
      expect(caught).toEqual([thrown('pooled callback threw')]);
      expect(openFdCount()).toBe(before);
    });

    it("a throwing pooled read's callback costs the reads waiting after it their end of the stream", async () => {
      const caught = await reported(async () => {
        const { client } = await pair();
        loop.proactor.read(client, () => {
          throw new Error('first callback threw');
        });
        const second = loop.proactor.read(client);
        await delay(20);
        client.close();
        expect(await within(second)).toEqual({ value: null });
      });
      expect(caught).toEqual([thrown('first callback threw')]);
    });
  });

  it("a 'close' listener that throws when a torn write closes its socket is reported, and the write still fails with what was sent", async () => {
    const caught = await reported(async () => {
      const { client, peer } = await pair();
      client.on('close', () => {
        throw new Error('close listener threw');
      });
      const controller = new AbortController();
      const writing = client.write(Buffer.alloc(64 * 1024 * 1024, 0x7a), { signal: controller.signal });
      await loop.sleep(30);
      controller.abort();
      const result = await within(writing.catch((error: unknown) => ({ error })));
      expect(result).toMatchObject({ value: { error: { code: 'ABORT_ERR' } } });
      const { bytesWritten } = (result as { value: { error: { bytesWritten: number } } }).value.error;
      expect(bytesWritten).toBeGreaterThan(0);
      expect(client.closed).toBe(true);
      expect((await readAll(peer)).length).toBe(bytesWritten);
    });
    expect(caught).toEqual([thrown('close listener threw')]);
  });

  describe('an AbortSignal that misbehaves', () => {
    it('one whose addEventListener throws fails its read with that error, and the loop, its later operations and the bytes are unharmed', async () => {
      const { client, peer } = await pair();
      const signal = new AbortController().signal;
      signal.addEventListener = () => {
        throw new Error('listener refused');
      };
      const first = Buffer.alloc(16);
      const refused = await within(loop.proactor.read(client, first, { signal }).catch((error: unknown) => ({ error })));
      expect(refused).toEqual({ value: { error: thrown('listener refused') } });
      expect(await within(loop.sleep(1))).toEqual({ value: undefined });
      expect(await within(loop.proactor.write(peer, Buffer.from('hello')))).toEqual({ value: 5 });
      const buffer = Buffer.alloc(16);
      const n = await loop.proactor.read(client, buffer);
      expect(String(buffer.subarray(0, n))).toBe('hello');
      expect(first.every((byte) => byte === 0)).toBe(true);
    });

    it("one whose addEventListener submits an operation whose own signal's addEventListener closes the loop fails both instead of leaving the outer one pending", async () => {
      const { client } = await pair();
      const outer = new AbortController().signal;
      const inner = new AbortController().signal;
      let sleeping: Promise<void> | undefined;
      const addOuter = outer.addEventListener.bind(outer);
      outer.addEventListener = (...args: Parameters<AbortSignal['addEventListener']>) => {
        sleeping = loop.sleep(60_000, { signal: inner });
        addOuter(...args);
      };
      const addInner = inner.addEventListener.bind(inner);
      inner.addEventListener = (...args: Parameters<AbortSignal['addEventListener']>) => {
        void loop.close();
        addInner(...args);
      };
      const reading = loop.proactor.read(client, Buffer.alloc(16), { signal: outer });
      expect(await within(reading)).toEqual({ name: 'Error', code: 'ERR_SOCKET_CLOSED' });
      expect(await within(sleeping!)).toEqual({ name: 'Error', code: 'ERR_LOOP_CLOSED' });
    });

    it('one whose removeEventListener throws is reported, and the read it belonged to still completes with its bytes', async () => {
      const { client, peer } = await pair();
      const { signal } = new AbortController();
      signal.removeEventListener = () => {
        throw new Error('removal refused');
      };
      const buffer = Buffer.alloc(16);
      let reading: Promise<number> | undefined;
      const caught = await reported(async () => {
        reading = loop.proactor.read(client, buffer, { signal });
        await loop.proactor.write(peer, Buffer.from('bytes'));
        expect(await within(reading)).toEqual({ value: 5 });
      });
      expect(caught).toEqual([thrown('removal refused')]);
      expect(String(buffer.subarray(0, 5))).toBe('bytes');
    });

    it('an options.signal getter that answers a signal, then something else, is read once: the read and the loop go on', async () => {
      const { client, peer } = await pair();
      let reads = 0;
      const options = {
        get signal() {
          return ++reads === 1 ? new AbortController().signal : ({ aborted: false } as AbortSignal);
        },
      };
      const buffer = Buffer.alloc(16);
      const reading = loop.proactor.read(client, buffer, options);
      expect(await within(loop.sleep(1))).toEqual({ value: undefined });
      await loop.proactor.write(peer, Buffer.from('hi'));
      expect(await within(reading)).toEqual({ value: 2 });
      expect(reads).toBe(1);
    });

    it('one whose addEventListener closes the loop fails the read as the close fails every read in flight, instead of leaving it pending', async () => {
      const { client } = await pair();
      const { signal } = new AbortController();
      const add = signal.addEventListener.bind(signal);
      signal.addEventListener = (...args: Parameters<AbortSignal['addEventListener']>) => {
        void loop.close();
        add(...args);
      };
      const reading = loop.proactor.read(client, Buffer.alloc(16), { signal });
      expect(await within(reading)).toEqual({ name: 'Error', code: 'ERR_SOCKET_CLOSED' });
      expect(loop.closed).toBe(true);
    });
  });

  it("a 'timeout' listener that throws is reported, and the loop's other idle timeouts still fire", async () => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const a = await loop.connect({ host: '127.0.0.1', port: server.port });
    const b = await loop.connect({ host: '127.0.0.1', port: server.port });
    const events: string[] = [];
    const caught = await reported(async () => {
      a.on('timeout', () => {
        events.push('a timeout');
        throw new Error('timeout listener threw');
      });
      a.on('close', () => events.push('a close'));
      b.on('timeout', () => events.push('b timeout'));
      a.setIdleTimeout(50);
      b.setIdleTimeout(200);
      await delay(800);
    });
    expect(caught).toEqual([thrown('timeout listener threw')]);
    expect(events).toEqual(['a timeout', 'a close', 'b timeout']);
    expect([a.closed, b.closed]).toEqual([true, true]);
  });

  it('server.close() inside a connection handler closes the connections accepted in the same batch: every client sees the end, no descriptor stays open', async () => {
    const before = openFdCount();
    let served = 0;
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
      served += 1;
      socket.close();
      server.close();
    });
    const { port } = server;
    const ended: Promise<void>[] = [];
    const clients: net.Socket[] = [];
    for (let i = 0; i < 10; i++) {
      const client = net.connect(port, '127.0.0.1');
      client.on('error', () => {});
      ended.push(new Promise((resolve) => client.once('close', () => resolve())));
      clients.push(client);
    }
    // (A backend that accepts as they come may have closed the server before the last ones connect.)
    await Promise.all(clients.map((client) => new Promise((resolve) => (client.once('connect', resolve), client.once('close', resolve)))));
    // Busy, so that every connection reaches the backlog before the loop accepts: one batch.
    const start = Date.now();
    while (Date.now() - start < 100);
    for (const client of clients) client.resume();
    expect(await within(Promise.all(ended))).not.toBe('pending');
    expect(served).toBe(1);
    for (const client of clients) client.destroy();
    await tick();
    expect(openFdCount()).toBe(before);
  });

  it("an options getter that shrinks a resizable buffer to nothing gets the buffer's RangeError, not a read of 0 taken for EOF", async () => {
    const { client, peer } = await pair();
    await loop.proactor.write(peer, Buffer.from('waiting'));
    // Node 20 has resizable ArrayBuffers; the TypeScript lib this project builds with does not name them yet.
    const Resizable = ArrayBuffer as unknown as new (length: number, options: { maxByteLength: number }) => ArrayBuffer & { resize(length: number): void };
    const resizable = new Resizable(16, { maxByteLength: 64 });
    const options = {
      get signal() {
        resizable.resize(0);
        return undefined;
      },
    };
    expect(() => loop.proactor.read(client, new Uint8Array(resizable), options)).toThrow(RangeError);
    const buffer = Buffer.alloc(16);
    expect(String(buffer.subarray(0, await loop.proactor.read(client, buffer)))).toBe('waiting');
  });
});
