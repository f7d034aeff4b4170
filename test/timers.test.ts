// Timers, cancellation (AbortSignal on every promise-returning call) and timeouts (connect,
// idle, deadline) on every backend. Times are asserted only as lower bounds ("never early"):
// how late a timer may be belongs to bench/, not to a test on a shared machine.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop, type Server, type Socket, type SystemError } from '../lib/index.js';
import { backends, openFdCount, outcome, readAll, readBytes, sha256 } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const aborted = { name: 'AbortError', code: 'ABORT_ERR' };
const pattern = (length: number, byte: number): Buffer => Buffer.alloc(length, byte);

describe.each(backends)('timers and cancellation on %s', (backend) => {
  let loop: Loop;
  beforeEach(() => {
    loop = open({ backend });
  });
  afterEach(async () => {
    await loop.close();
  });

  /** A listener whose connections are handed out one by one, never read unless the test does. */
  async function pair(): Promise<{ server: Server; client: Socket; peer: Socket }> {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const accepted = loop.proactor.accept(server);
    const client = await loop.connect({ host: '127.0.0.1', port: server.port });
    return { server, client, peer: await accepted };
  }

  describe('timers', () => {
    it('fire in deadline order, equal deadlines in start order, and never early', async () => {
      const delays = [60, 10, 30, 10, 0, 30, 1];
      const fired: number[] = [];
      const start = performance.now();
      const elapsed = await Promise.all(
        delays.map(async (delay, index) => {
          await loop.sleep(delay);
          fired.push(index);
          return performance.now() - start;
        }),
      );
      const expected = delays.map((delay, index) => ({ delay, index })).sort((a, b) => a.delay - b.delay || a.index - b.index);
      expect(fired).toEqual(expected.map(({ index }) => index));
      delays.forEach((delay, index) => expect(elapsed[index]).toBeGreaterThanOrEqual(delay));
    });

    it('a cancelled timer never fires, and the timers around it still do', async () => {
      const controllers = Array.from({ length: 1000 }, () => new AbortController());
      const sleeps = controllers.map((controller, index) => outcome(loop.sleep(20 + (index % 7), { signal: controller.signal })));
      const reason = new Error('changed my mind');
      controllers.forEach((controller, index) => index % 10 !== 0 && controller.abort(reason));
      const results = await Promise.all(sleeps);
      results.forEach((result, index) => {
        expect(result).toEqual(index % 10 === 0 ? { value: undefined } : aborted);
      });
      // The earliest deadline was cancelled many times over: later timers are still armed right.
      const start = performance.now();
      await loop.sleep(15);
      expect(performance.now() - start).toBeGreaterThanOrEqual(15);
    });

    it('aborting a sleep rejects with an AbortError whose cause is the reason', async () => {
      const controller = new AbortController();
      const sleeping = loop.sleep(60_000, { signal: controller.signal });
      const reason = new Error('shutting down');
      setTimeout(() => controller.abort(reason), 10);
      await expect(sleeping).rejects.toMatchObject({ ...aborted, cause: reason });
    });

    it('an already-aborted signal rejects at once, before anything is submitted', async () => {
      const signal = AbortSignal.abort('no');
      const { server, client, peer } = await pair();
      const buffer = Buffer.alloc(16);
      for (const call of [
        () => loop.sleep(10, { signal }),
        () => loop.connect({ host: '127.0.0.1', port: server.port, signal }),
        () => loop.proactor.read(client, buffer, { signal }),
        () => loop.proactor.write(client, Buffer.from('lost'), { signal }),
        () => loop.proactor.accept(server, { signal }),
        () => client.read({ signal }),
        () => client.write('lost', { signal }),
      ]) {
        await expect(call()).rejects.toMatchObject({ ...aborted, cause: 'no' });
      }
      // Nothing was consumed or sent: the next bytes go to the next read, and none of 'lost' left.
      await peer.write('after');
      expect(String(await readBytes(client, 5))).toBe('after');
      client.close();
      expect(String(await readAll(peer))).toBe('');
    });
  });

  describe('AbortSignal on operations in flight', () => {
    it('aborting a proactor read that would never complete rejects, and the next read gets the bytes', async () => {
      const { client, peer } = await pair();
      const controller = new AbortController();
      const buffer = Buffer.alloc(64);
      const reading = loop.proactor.read(client, buffer, { signal: controller.signal });
      await loop.sleep(20);
      controller.abort();
      expect(await outcome(reading)).toEqual(aborted);
      await peer.write('hello');
      const n = await loop.proactor.read(client, buffer);
      expect(String(buffer.subarray(0, n))).toBe('hello');
    });

    it('aborting the streaming read() loses no byte: a chunk that arrives later goes to the next read()', async () => {
      const { client, peer } = await pair();
      const controller = new AbortController();
      const reading = client.read({ signal: controller.signal });
      await loop.sleep(20);
      controller.abort();
      expect(await outcome(reading)).toEqual(aborted);
      await peer.write('kept');
      expect(String(await client.read())).toBe('kept');
      // An abort after the read resolved changes nothing.
      const late = new AbortController();
      const next = client.read({ signal: late.signal });
      await peer.write('also');
      expect(String(await next)).toBe('also');
      late.abort();
    });

    it('aborting a proactor accept rejects, and the next accept gets the next connection', async () => {
      const server = await loop.listen({ host: '127.0.0.1', port: 0 });
      const controller = new AbortController();
      const accepting = loop.proactor.accept(server, { signal: controller.signal });
      await loop.sleep(20);
      controller.abort();
      expect(await outcome(accepting)).toEqual(aborted);
      const accepted = loop.proactor.accept(server);
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const peer = await accepted;
      await client.write('hi');
      expect(String(await readBytes(peer, 2))).toBe('hi');
    });

    it('aborting a queued write withdraws it whole: the peer never sees it, and later writes carry on', async () => {
      const { client, peer } = await pair();
      const first = pattern(32 * 1024 * 1024, 0x61);  // more than the socket buffers hold
      const writingFirst = client.write(first);
      await loop.sleep(20);  // the first write is with the kernel and stalled
      const controller = new AbortController();
      const second = client.write(pattern(1024, 0x62), { signal: controller.signal });
      const third = client.write(pattern(1024, 0x63));
      controller.abort();
      expect(await outcome(second)).toEqual(aborted);
      expect(client.closed).toBe(false);
      const received = readBytes(peer, first.length + 1024);
      await writingFirst;
      await third;
      const bytes = await received;
      expect(bytes.length).toBe(first.length + 1024);
      expect(sha256(bytes)).toBe(sha256(first, pattern(1024, 0x63)));
    });

    it('aborting a big write to a peer that does not read rejects, closes the socket and lets go of the buffer', async () => {
      const { client, peer } = await pair();
      let big: Buffer | null = pattern(64 * 1024 * 1024, 0x7a);
      const collected = new WeakRef(big);
      const controller = new AbortController();
      const writing = client.write(big, { signal: controller.signal });
      big = null;
      await loop.sleep(30);
      controller.abort();
      const error = (await writing.catch((caught: unknown) => caught)) as Error & { code: string; bytesWritten: number };
      expect(error).toMatchObject(aborted);
      // Part of it had gone out, so the stream is torn: the socket is closed, and the peer got
      // exactly the bytes the error reports, then the end of the stream.
      expect(error.bytesWritten).toBeGreaterThan(0);
      expect(error.bytesWritten).toBeLessThan(64 * 1024 * 1024);
      expect(client.closed).toBe(true);
      const prefix = await readAll(peer);
      expect(prefix.length).toBe(error.bytesWritten);
      expect(prefix.every((byte) => byte === 0x7a)).toBe(true);
      await new Promise((resolve) => setImmediate(resolve));
      gc();
      expect(collected.deref() === undefined).toBe(true);  // not the buffer itself: a diff of 64 MiB
    });

    it('a proactor write cancelled half-sent reports what was sent, later writes fail with EPIPE, and the buffer is let go', async () => {
      const { client, peer } = await pair();
      const controller = new AbortController();
      let big: Buffer | null = pattern(64 * 1024 * 1024, 0x41);
      const collected = new WeakRef(big);
      const writing = loop.proactor.write(client, big, { signal: controller.signal });
      big = null;
      await loop.sleep(30);
      controller.abort();
      const error = (await writing.catch((caught: unknown) => caught)) as Error & { bytesWritten: number };
      expect(error).toMatchObject(aborted);
      expect(error.bytesWritten).toBeGreaterThan(0);
      await expect(loop.proactor.write(client, Buffer.from('more'))).rejects.toMatchObject({ code: 'EPIPE' });
      client.close();
      expect((await readAll(peer)).length).toBe(error.bytesWritten);
      await new Promise((resolve) => setImmediate(resolve));
      gc();
      expect(collected.deref() === undefined).toBe(true);  // the error, which is still held, keeps no buffer
    });
  });

  describe('timeouts', () => {
    // A listener with backlog 0 that never accepts: once one connection waits in its queue,
    // Linux drops further SYNs (the queue is full), so a connect hangs — all on 127.0.0.1.
    async function blackhole(): Promise<{ port: number; waiting: Socket[] }> {
      const server = await loop.listen({ host: '127.0.0.1', port: 0, backlog: 0 });
      const waiting: Socket[] = [];
      for (let i = 0; i < 4; ++i) {
        const result = await outcome(loop.connect({ host: '127.0.0.1', port: server.port, connectTimeout: 100 }));
        if (!('value' in result)) break;
        waiting.push(result.value);
      }
      return { port: server.port, waiting };
    }

    it('connectTimeout to a peer that never answers rejects with ETIMEDOUT and closes the socket', async () => {
      const { port } = await blackhole();
      const before = openFdCount();
      const start = performance.now();
      const error = (await loop.connect({ host: '127.0.0.1', port, connectTimeout: 150 }).catch((caught: unknown) => caught)) as SystemError;
      expect(performance.now() - start).toBeGreaterThanOrEqual(150);
      expect(error).toMatchObject({ code: 'ETIMEDOUT', syscall: 'connect', address: '127.0.0.1', port });
      expect(openFdCount()).toBe(before);
    });

    it('aborting a connect in flight rejects with an AbortError and closes the socket', async () => {
      const { port } = await blackhole();
      const before = openFdCount();
      const controller = new AbortController();
      const connecting = loop.connect({ host: '127.0.0.1', port, signal: controller.signal });
      await loop.sleep(30);
      controller.abort();
      expect(await outcome(connecting)).toEqual(aborted);
      expect(openFdCount()).toBe(before);
    });

    it('an idle timeout drops a client that connects and sends nothing', async () => {
      const seen: string[] = [];
      const server = await loop.listen({ host: '127.0.0.1', port: 0, idleTimeout: 150 }, async (socket) => {
        try {
          for await (const chunk of socket) await socket.write(chunk);
        } catch (error) {
          seen.push((error as SystemError).code);
          throw error;
        }
      });
      const start = performance.now();
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      expect(await client.read()).toBeNull();  // the server closed it
      expect(performance.now() - start).toBeGreaterThanOrEqual(150);
      expect(seen).toEqual(['ETIMEDOUT']);
    });

    it('an idle timeout keeps a connection that moves bytes, as Node counts every byte', async () => {
      const server = await loop.listen({ host: '127.0.0.1', port: 0, idleTimeout: 150 }, async (socket) => {
        for await (const chunk of socket) await socket.write(chunk);
      });
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      for (let i = 0; i < 8; ++i) {  // 400 ms in all, more than twice the timeout
        await client.write('x');
        expect(String(await client.read())).toBe('x');
        await loop.sleep(50);
      }
    });

    it('a deadline drops a slowloris that trickles its request slower than allowed', async () => {
      const seen: string[] = [];
      const server = await loop.listen({ host: '127.0.0.1', port: 0, idleTimeout: 1000 }, async (socket) => {
        socket.setDeadline(250);  // the whole request must arrive within 250 ms
        try {
          let request = '';
          while (!request.endsWith('\n\n')) request += String(await socket.read());
          socket.setDeadline(0);
          await socket.write('ok');
        } catch (error) {
          seen.push((error as SystemError).code);
        }
      });
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const start = performance.now();
      const request = 'GET / HTTP/1.1\nHost: x\n\n';
      let sent = 0;
      while (sent < request.length && !client.closed) {
        const result = await outcome(client.write(request[sent]!));  // far faster than the idle timeout
        if (!('value' in result)) break;
        ++sent;
        await loop.sleep(25);
        if (performance.now() - start > 2000) break;
      }
      expect(await outcome(readAll(client))).toMatchObject({ value: Buffer.alloc(0) });
      expect(sent).toBeLessThan(request.length);
      expect(seen).toEqual(['ETIMEDOUT']);
    });

    it('an idle timeout drops a peer that stopped reading: the stalled write rejects with ETIMEDOUT', async () => {
      const { client, peer } = await pair();
      peer.setIdleTimeout(150);
      const timedOut = new Promise((resolve) => peer.once('timeout', resolve));
      const big = pattern(64 * 1024 * 1024, 0x2e);
      await expect(peer.write(big)).rejects.toMatchObject({ code: 'ETIMEDOUT', syscall: 'write' });
      await timedOut;
      expect(peer.closed).toBe(true);
      client.close();
    });

    it('setIdleTimeout on a client: its pending read rejects with ETIMEDOUT and it is closed', async () => {
      const { client } = await pair();
      const start = performance.now();
      client.setIdleTimeout(100);
      await expect(client.read()).rejects.toMatchObject({ code: 'ETIMEDOUT', syscall: 'read' });
      expect(performance.now() - start).toBeGreaterThanOrEqual(100);
      expect(client.closed).toBe(true);
      await expect(client.read()).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    });

    it('setIdleTimeout(0) turns it off again', async () => {
      const { client, peer } = await pair();
      client.setIdleTimeout(50);
      client.setIdleTimeout(0);
      await loop.sleep(200);
      expect(client.closed).toBe(false);
      await peer.write('still here');
      expect(String(await readBytes(client, 10))).toBe('still here');
    });
  });

  it('rejects bad arguments with the argument named', () => {
    expect(() => loop.sleep(-1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => loop.sleep('1' as unknown as number)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => loop.sleep(1, { signal: {} as AbortSignal })).toThrow(/options\.signal/);
  });
});
