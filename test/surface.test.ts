// Node's socket and server surface: socket options, ref/unref, async disposal, leaving a for-await
// early, listen's signal, connect's family/localAddress/autoSelectFamily, loud failure when a
// plain Socket reaches Node's stream users, and byte counters.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline as pipelineCallback, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { SocketOption } from '../lib/binding.js';
import { open, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends, listenEcho, outcome, randomBytes, readBytes } from './helpers.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'liveness.mjs');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'twinloop-surface-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The option as the kernel has it, read through the loop's test-only getter. */
function option(socket: Socket, kind: number): number {
  return socket.core.socketOption(socket.handle, kind);
}

type Exit = { exited: true; code: number | null; output: string } | { exited: false; output: string };

/**
 * Runs the liveness fixture in `mode`. Once it printed 'ready', waits up to `waitMs` for it to
 * exit by itself; still running then, it is killed and reported as not exited.
 */
async function runLiveness(backend: string, mode: string, waitMs: number): Promise<Exit> {
  const child = spawn(process.execPath, [fixture, backend, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exited = false;
  child.stdout.on('data', (chunk: Buffer) => (output += chunk));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk));
  const exit = once(child, 'exit').then(([code]) => {
    exited = true;
    return code as number | null;
  });
  // Setting up may take a while on a loaded machine; 20 s bound it.
  const setUp = Date.now();
  while (!output.includes('ready') && !exited && Date.now() - setUp < 20_000) await new Promise((resolve) => setTimeout(resolve, 20));
  const timer = new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), waitMs));
  const result = await Promise.race([exit, timer]);
  if (result === 'running') {
    child.kill('SIGKILL');
    await exit;
    return { exited: false, output };
  }
  return { exited: true, code: result, output };
}

describe.each(backends)('%s: socket surface', (backend) => {
  let loop: Loop;
  let server: Server;
  let accepted: Socket[];

  beforeEach(async () => {
    loop = open({ backend });
    accepted = [];
    server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
      accepted.push(socket);
      for await (const chunk of socket) await socket.write(chunk);
    });
  });
  afterEach(async () => {
    await loop.close();
  });

  async function acceptedSocket(): Promise<Socket> {
    while (accepted.length === 0) await loop.sleep(1);
    return accepted[0]!;
  }

  describe('setNoDelay / setKeepAlive', () => {
    it('TCP_NODELAY starts on, on both sides, and setNoDelay(false) really turns it off', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const peer = await acceptedSocket();
      for (const socket of [client, peer]) {
        expect(option(socket, SocketOption.noDelay)).toBe(1);
        expect(socket.setNoDelay(false)).toBe(socket);
        expect(option(socket, SocketOption.noDelay)).toBe(0);
        socket.setNoDelay();
        expect(option(socket, SocketOption.noDelay)).toBe(1);
      }
      // Still a working connection after the changes.
      await client.write('after');
      expect((await readBytes(client, 5)).toString()).toBe('after');
    });

    it('setKeepAlive turns SO_KEEPALIVE on and off, the delay rounded up to whole seconds', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      expect(option(client, SocketOption.keepAlive)).toBe(0);
      expect(client.setKeepAlive(true, 1500)).toBe(client);
      expect(option(client, SocketOption.keepAlive)).toBe(1);
      expect(option(client, SocketOption.keepAliveIdle)).toBe(2);
      client.setKeepAlive(true, 60_000);
      expect(option(client, SocketOption.keepAliveIdle)).toBe(60);
      client.setKeepAlive(true);  // no delay: the one set stays
      expect(option(client, SocketOption.keepAliveIdle)).toBe(60);
      client.setKeepAlive(false);
      expect(option(client, SocketOption.keepAlive)).toBe(0);
      client.setKeepAlive();  // Node's default is enable = false
      expect(option(client, SocketOption.keepAlive)).toBe(0);
    });

    it('the stream forwards both to the socket', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const stream = client.stream();
      expect(stream.setNoDelay(false)).toBe(stream);
      expect(option(client, SocketOption.noDelay)).toBe(0);
      expect(stream.setKeepAlive(true, 3000)).toBe(stream);
      expect(option(client, SocketOption.keepAlive)).toBe(1);
      expect(option(client, SocketOption.keepAliveIdle)).toBe(3);
      stream.destroy();
    });

    it('a bad initialDelay throws; a closed socket ignores both, as Node', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      expect(() => client.setKeepAlive(true, -1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      expect(() => client.setKeepAlive(true, '5' as unknown as number)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      client.close();
      expect(client.setNoDelay(false)).toBe(client);
      expect(client.setKeepAlive(true, 1000)).toBe(client);
    });

    it('on a Unix socket both are no-ops', async () => {
      const socketPath = path.join(dir, `options-${backend}.sock`);
      const unixServer = await listenEcho(loop, { path: socketPath });
      const client = await loop.connect({ path: socketPath });
      expect(client.setNoDelay(false).setKeepAlive(true, 1000)).toBe(client);
      await client.write('unix');
      expect((await readBytes(client, 4)).toString()).toBe('unix');
      unixServer.close();
    });
  });

  describe('bytesRead / bytesWritten', () => {
    it('count what the kernel took and what arrived', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      expect([client.bytesRead, client.bytesWritten]).toEqual([0, 0]);
      const payload = randomBytes(300_000);
      const reading = readBytes(client, payload.length);
      await client.write(payload.subarray(0, 100));
      await client.write(payload.subarray(100));
      expect(client.bytesWritten).toBe(payload.length);
      expect((await reading).equals(payload)).toBe(true);
      expect(client.bytesRead).toBe(payload.length);
      const peer = await acceptedSocket();
      // The client can hold every byte before the server's loop has taken its last write's
      // completion (on threads, the connection's own thread sent it): give that a moment.
      for (let turn = 0; turn < 1000 && peer.bytesWritten < payload.length; turn++) await loop.sleep(1);
      expect(peer.bytesRead).toBe(payload.length);
      expect(peer.bytesWritten).toBe(payload.length);
    });
  });

  describe('for await', () => {
    it('break after the first chunk closes the socket; the server sees the end', async () => {
      const seen: Array<number | string> = [];
      const ended = new Promise<void>((resolve) => {
        void loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
          await socket.write('first');
          try {
            for (;;) {
              const chunk = await socket.read();
              if (chunk === null) break;
              seen.push(chunk.length);
            }
            seen.push('eof');
          } catch (error) {
            seen.push((error as { code: string }).code);  // an RST would be as good an end
          }
          resolve();
        }).then((breakServer) => {
          void loop.connect({ host: '127.0.0.1', port: breakServer.port }).then(async (client) => {
            const chunks: string[] = [];
            for await (const chunk of client) {
              chunks.push(chunk.toString());
              break;
            }
            seen.push(chunks.join(''));
            seen.push(client.closed ? 'closed' : 'open');
          });
        });
      });
      await ended;
      expect(seen).toEqual(['first', 'closed', 'eof']);
    });

    it('running to the end leaves the socket open, and the handler pattern still echoes', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      await client.write('echo me');
      await client.end();
      const chunks: Buffer[] = [];
      for await (const chunk of client) chunks.push(chunk);
      expect(Buffer.concat(chunks).toString()).toBe('echo me');
      expect(client.closed).toBe(false);
    });

    it("the iterator's throw() closes the socket and rejects with the error", async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const iterator = client[Symbol.asyncIterator]();
      const failure = new Error('stop');
      await expect(iterator.throw!(failure)).rejects.toBe(failure);
      expect(client.closed).toBe(true);
    });
  });

  describe('Symbol.asyncDispose', () => {
    it('closes a socket, a server and the loop', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      await client[Symbol.asyncDispose]();
      expect(client.closed).toBe(true);
      await server[Symbol.asyncDispose]();
      expect(server.closed).toBe(true);
      await loop[Symbol.asyncDispose]();
      expect(loop.closed).toBe(true);
    });

    it('await using closes at the end of the block', async () => {
      let kept: Socket | undefined;
      {
        await using client = await loop.connect({ host: '127.0.0.1', port: server.port });
        kept = client;
        expect(client.closed).toBe(false);
      }
      expect(kept.closed).toBe(true);
    });
  });

  describe('listen signal', () => {
    it('aborting closes the server', async () => {
      const controller = new AbortController();
      const listener = await loop.listen({ host: '127.0.0.1', port: 0, signal: controller.signal }, () => {});
      const { port } = listener;
      controller.abort();
      expect(listener.closed).toBe(true);
      expect(await outcome(loop.connect({ host: '127.0.0.1', port }))).toEqual({ name: 'Error', code: 'ECONNREFUSED' });
    });

    it('an aborted signal rejects with an AbortError and listens nothing', async () => {
      const socketPath = path.join(dir, `aborted-${backend}.sock`);
      const signal = AbortSignal.abort();
      expect(await outcome(loop.listen({ path: socketPath, signal }))).toEqual({ name: 'AbortError', code: 'ABORT_ERR' });
      expect(existsSync(socketPath)).toBe(false);
      await expect(loop.listen({ port: 0, signal: 'no' as unknown as AbortSignal })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    });

    it('a server closed first forgets the signal', async () => {
      const controller = new AbortController();
      const listener = await loop.listen({ host: '127.0.0.1', port: 0, signal: controller.signal });
      listener.close();
      controller.abort();  // nothing left to close: no throw
      expect(listener.closed).toBe(true);
    });
  });

  describe('connect: family, localAddress, autoSelectFamily', () => {
    const both = [
      { address: '::1', family: 6 },
      { address: '127.0.0.1', family: 4 },
    ];
    // A resolver that knows 'twin.test' as both loopbacks, in the given order, as dns.lookup
    // filters by family.
    const lookupWith =
      (addresses: typeof both) =>
      (_host: string, options: { family: number }, callback: (error: Error | null, addresses: typeof both) => void): void =>
        callback(null, addresses.filter((entry) => options.family === 0 || entry.family === options.family));

    // Whether nothing holds `port` on `host` (listening there succeeds).
    const portFree = (host: string, port: number): Promise<boolean> =>
      new Promise((resolve) => {
        const probe = net.createServer();
        probe.once('error', () => resolve(false));
        probe.listen({ host, port }, () => probe.close(() => resolve(true)));
      });
    // A server on one loopback whose port is free on the other: tests running beside this one
    // listen on ephemeral ports too, and one on the other loopback's same port would answer.
    async function listenAlone(host: string): Promise<Server> {
      for (let attempt = 1; ; attempt += 1) {
        const server = await listenEcho(loop, { host });
        if (attempt === 10 || (await portFree(host === '::1' ? '127.0.0.1' : '::1', server.port))) return server;
        server.close();
      }
    }

    for (const listenOn of ['127.0.0.1', '::1']) {
      for (const order of [both, [...both].reverse()]) {
        it(`a name that resolves to both loopbacks reaches a server on ${listenOn} only (${order[0]!.address} first)`, async () => {
          const only = await listenAlone(listenOn);
          const client = await loop.connect({ host: 'twin.test', port: only.port, lookup: lookupWith(order) });
          expect(client.remoteAddress).toBe(listenOn);
          await client.write('hello');
          expect((await readBytes(client, 5)).toString()).toBe('hello');
        });
      }
    }

    it("'localhost' through dns.lookup reaches a server on the address it resolves to", async () => {
      const client = await loop.connect({ host: 'localhost', port: server.port });
      expect(client.remoteAddress).toBe('127.0.0.1');
    });

    it('family: 6 to an IPv4-only listener fails ECONNREFUSED', async () => {
      const attempt = loop.connect({ host: 'twin.test', port: server.port, family: 6, lookup: lookupWith(both) });
      expect(await outcome(attempt)).toEqual({ name: 'Error', code: 'ECONNREFUSED' });
    });

    it('autoSelectFamily: false tries the first address only', async () => {
      const attempt = loop.connect({ host: 'twin.test', port: server.port, autoSelectFamily: false, lookup: lookupWith(both) });
      expect(await outcome(attempt)).toEqual({ name: 'Error', code: 'ECONNREFUSED' });
    });

    it('every address refused: an AggregateError with the code of the first', async () => {
      const port = server.port;
      server.close();
      const error = (await loop.connect({ host: 'twin.test', port, lookup: lookupWith(both) }).catch((caught: unknown) => caught)) as AggregateError & {
        code: string;
      };
      expect(error).toBeInstanceOf(AggregateError);
      expect(error.code).toBe('ECONNREFUSED');
      expect(error.errors.map((each: { address: string }) => each.address)).toEqual(['::1', '127.0.0.1']);
    });

    it('an attempt not answered within autoSelectFamilyAttemptTimeout gives way to the next address', async () => {
      // A listener whose queue (backlog 0) is full: the kernel drops further SYNs unanswered.
      // The same port on 127.0.0.1 answers (tried a few times, in case another process has it).
      let full!: Server;
      let reachable: Server | undefined;
      for (let i = 0; i < 5 && reachable === undefined; i++) {
        full = await loop.listen({ host: '::1', port: 0, backlog: 0 });
        reachable = await loop
          .listen({ host: '127.0.0.1', port: full.port }, async (socket) => {
            for await (const chunk of socket) await socket.write(chunk);
          })
          .catch(() => undefined);
        if (reachable === undefined) full.close();
      }
      const { port } = full;
      let unanswered = false;
      for (let i = 0; i < 20 && !unanswered; i++) {
        const attempt = await outcome(loop.connect({ host: '::1', port, connectTimeout: 300 }));
        unanswered = 'code' in attempt && attempt.code === 'ETIMEDOUT';
      }
      expect(unanswered).toBe(true);
      const client = await loop.connect({ host: 'twin.test', port, lookup: lookupWith(both), autoSelectFamilyAttemptTimeout: 100 });
      expect(client.remoteAddress).toBe('127.0.0.1');
      reachable!.close();
      full.close();
    });

    it('localAddress binds the socket before connecting', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port, localAddress: '127.0.0.1' });
      expect(client.address().address).toBe('127.0.0.1');
      const peer = await acceptedSocket();
      expect(peer.remotePort).toBe(client.address().port);
      // Of a name's addresses, only those of the local address's family are tried.
      const v6 = await listenEcho(loop, { host: '::1' });
      const dual = await loop.connect({ host: 'twin.test', port: v6.port, localAddress: '::1', lookup: lookupWith([...both].reverse()) });
      expect(dual.address().address).toBe('::1');
    });

    it('bad family, localAddress and lookup throw, naming the option', async () => {
      const port = server.port;
      await expect(loop.connect({ port, family: 5 as 4 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('options.family') });
      await expect(loop.connect({ port, localAddress: 'nowhere' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('options.localAddress') });
      await expect(loop.connect({ path: '/tmp/x', localAddress: '127.0.0.1' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      await expect(loop.connect({ port, lookup: 'dns' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
      await expect(loop.connect({ port, autoSelectFamilyAttemptTimeout: 0 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
      // A local address of the other family than the peer's: the kernel's refusal.
      const mismatch = await outcome(loop.connect({ host: '127.0.0.1', port, localAddress: '::1' }));
      expect(mismatch).toMatchObject({ name: 'Error' });
    });
  });

  describe("a plain Socket given to Node's stream users", () => {
    it('stream.pipeline into it fails at once, pointing at socket.stream()', async () => {
      const file = path.join(dir, `pipeline-${backend}`);
      writeFileSync(file, randomBytes(64 * 1024));
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const source = createReadStream(file);
      await expect(pipeline(source, client as never)).rejects.toThrow(/socket\.stream\(\)/);
      source.destroy();
      const again = createReadStream(file);
      expect(() => pipelineCallback(again, client as never, () => {})).toThrow(TypeError);
      again.destroy();
    });

    it("node:http's 'connection' throws instead of never answering", async () => {
      const httpServer = http.createServer(() => {});
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      expect(() => httpServer.emit('connection', client)).toThrow(/socket\.stream\(\)/);
      httpServer.close();
    });

    it('tls.connect({ socket }) throws too', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      expect(() => tls.connect({ socket: client as never })).toThrow(/socket\.stream\(\)/);
    });

    it('pipeline out of it fails at once as well; Readable.from(socket) works', async () => {
      const payload = randomBytes(200_000);
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const chunks: Buffer[] = [];
      const sink = (): Writable =>
        new Writable({
          write(chunk: Buffer, _encoding, callback) {
            chunks.push(chunk);
            callback();
          },
        });
      await expect(pipeline(client as never, sink())).rejects.toThrow(/socket\.stream\(\)/);
      await client.write(payload);
      await client.end();
      await pipeline(Readable.from(client), sink());
      expect(Buffer.concat(chunks).equals(payload)).toBe(true);
    });

    it('events it does emit can still be listened to', async () => {
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const closed = once(client, 'close');
      client.on('timeout', () => {});
      client.close();
      await closed;
      expect(() => client.once('end', () => {})).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    });
  });

  describe('ref / unref (in a child process)', () => {
    // Bounded waits: an exit is awaited up to 10 s; staying alive is watched for 1 s.
    const exits = ['server-unref', 'socket-unref', 'stream-unref', 'loop-unref', 'unref-still-delivers'];
    const staysAlive = ['referenced', 'server-unref-ref', 'socket-unref-ref', 'loop-unref-ref'];

    it.each(exits)('%s: the process exits by itself', async (mode) => {
      const result = await runLiveness(backend, mode, 10_000);
      expect(result).toMatchObject({ exited: true, code: 0 });
      expect(result.output).toContain('ready');
      if (mode === 'unref-still-delivers') expect(result.output).toContain('echoed');
    });

    it.each(staysAlive)('%s: the process stays alive', async (mode) => {
      const result = await runLiveness(backend, mode, 1000);
      expect(result.output).toContain('ready');
      expect(result.exited).toBe(false);
    });
  });
});
