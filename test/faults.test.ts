// Fault tolerance (issue #6): nothing lost, nothing crashes, on every backend. Scenarios that need
// a process of their own (a low descriptor limit, an environment variable read when the backend
// opens, an RSS the test runner's heap would blur) run test/fixtures/faults-child.mjs against dist/.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop, type Socket, type SystemError } from '../lib/index.js';
import { backends, openFdCount, randomBytes, readBytes, sha256 } from './helpers.js';

const underAddressSanitizer = (process.env.LD_PRELOAD ?? '').includes('libasan');
const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/faults-child.mjs', import.meta.url));

/** A fault scenario in a child process: read its JSON reports, send it commands. */
class Child {
  readonly process: ChildProcessWithoutNullStreams;
  readonly #reports: AsyncIterator<string>;
  #stderr = '';

  constructor(backend: string, scenario: string, options: { env?: Record<string, string>; nofile?: number; nodeArgs?: string[] } = {}) {
    const node = [...(options.nodeArgs ?? []), fixture, distEntry, backend, scenario];
    const [command, args] =
      options.nofile === undefined ? [process.execPath, node] : ['prlimit', [`--nofile=${options.nofile}:${options.nofile}`, process.execPath, ...node]];
    this.process = spawn(command, args, { env: { ...process.env, ...options.env } });
    this.process.stderr.on('data', (data: Buffer) => (this.#stderr += data.toString()));
    this.#reports = readline.createInterface({ input: this.process.stdout })[Symbol.asyncIterator]();
  }

  async report<T>(): Promise<T> {
    const line = await this.#reports.next();
    if (line.done) throw new Error(`the child exited without reporting: ${this.#stderr}`);
    return JSON.parse(line.value) as T;
  }

  command(text: string): void {
    this.process.stdin.write(`${text}\n`);
  }

  /** Resolves with the exit code (stderr attached to the error if it is not 0). */
  exit(): Promise<number> {
    this.process.stdin.end();  // its command reader lets go of the event loop
    return new Promise((resolve, reject) => {
      const done = (code: number | null): void => {
        if (code === 0) resolve(0);
        else reject(new Error(`the child exited with ${code}: ${this.#stderr}`));
      };
      if (this.process.exitCode !== null) done(this.process.exitCode);
      else this.process.once('exit', done);
    });
  }
}

function connectNet(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => resolve(socket));
    socket.once('error', reject);
  });
}

function readNet(socket: net.Socket, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      total += chunk.length;
      if (total >= length) resolve(Buffer.concat(chunks));
    });
    socket.once('error', reject);
    socket.once('end', () => resolve(Buffer.concat(chunks)));
  });
}

/** Runs `task` for 0..count-1 with at most `concurrency` at once. */
async function boundedAll<T>(count: number, concurrency: number, task: (index: number) => Promise<T>): Promise<T[]> {
  const results = new Array<T>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const index = next++;
        results[index] = await task(index);
      }
    }),
  );
  return results;
}

describe.each(backends)('faults on %s', (backend) => {
  let loop: Loop;
  beforeEach(() => {
    loop = open({ backend });
  });
  afterEach(async () => {
    await loop.close();
  });

  it('out of descriptors (EMFILE): accept backs off without spinning, reports EMFILE, and recovers', async () => {
    const child = new Child(backend, 'emfile', { nofile: 256 });
    const { port } = await child.report<{ port: number }>();
    // The kernel completes these handshakes into the accept queue; the server cannot take them.
    const clients = await Promise.all(Array.from({ length: 20 }, () => connectNet(port)));
    const echoes = clients.map((client, i) => {
      const message = Buffer.from(`hello ${i}`);
      client.write(message);
      return readNet(client, message.length).then((echoed) => echoed.equals(message));
    });
    child.command('connected');
    const during = await child.report<{ cpuFraction: number; errorsWhileFull: number; codes: string[] }>();
    // Backing off 100 ms between attempts: about 10 failed accepts a second, not a spinning core
    // (~1.0). The child's CPU counts its JIT and GC threads: 0.34 in a loaded full run.
    expect(during.cpuFraction).toBeLessThan(0.5);
    expect(during.errorsWhileFull).toBeGreaterThanOrEqual(1);
    expect(during.errorsWhileFull).toBeLessThanOrEqual(30);
    expect(during.codes).toEqual(['EMFILE']);
    // The descriptors were freed: every waiting client is accepted and echoed.
    expect(await Promise.all(echoes)).toEqual(clients.map(() => true));
    for (const client of clients) client.destroy();
    child.command('done');
    expect(await child.exit()).toBe(0);
  });

  it('1 000 clients resetting mid-transfer leave the server serving, the others intact, and no descriptor behind', async () => {
    let handlersDone = 0;
    const serverErrors = new Map<string, number>();
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
      try {
        for await (const chunk of socket) await socket.write(chunk);
      } catch (error) {
        const code = (error as SystemError).code;
        serverErrors.set(code, (serverErrors.get(code) ?? 0) + 1);
      } finally {
        handlersDone++;
      }
    });
    const baseline = openFdCount();
    const resetters = 1000;
    const survivors = 50;

    const resetting = boundedAll(resetters, 100, async () => {
      const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
      const payload = randomBytes(256 * 1024);
      void socket.write(payload).catch(() => {});  // still in flight when the RST goes
      await socket.read();  // mid-transfer: the echo has started coming back
      socket.resetAndDestroy();
    });
    const surviving = boundedAll(survivors, survivors, async () => {
      const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
      const payload = randomBytes(1024 * 1024);
      const received = readBytes(socket, payload.length);
      for (let offset = 0; offset < payload.length; offset += 64 * 1024) await socket.write(payload.subarray(offset, offset + 64 * 1024));
      const echoed = await received;
      socket.close();
      return echoed.length === payload.length && sha256(echoed) === sha256(payload);
    });
    await resetting;
    // A lost byte shows as a reader waiting for ever: fail with that, not with the test's timeout.
    const stalled = new Promise<string>((resolve) => setTimeout(() => resolve('a surviving connection stalled with bytes missing'), 20_000).unref());
    expect(await Promise.race([surviving, stalled])).toEqual(Array.from({ length: survivors }, () => true));
    await expect.poll(() => handlersDone, { timeout: 10_000 }).toBe(resetters + survivors);
    // Every reset reached the server as an error: ECONNRESET, or EPIPE where a send came after the
    // recv had already taken the reset (seen on io_uring, whose recv is always armed).
    for (const code of serverErrors.keys()) expect(['ECONNRESET', 'EPIPE']).toContain(code);
    expect([...serverErrors.values()].reduce((sum, count) => sum + count, 0)).toBe(resetters);
    expect(openFdCount()).toBe(baseline);

    // And the server still serves.
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    await socket.write('after the storm');
    expect((await readBytes(socket, 15)).toString()).toBe('after the storm');
  });

  it('a peer that never reads: awaited writes stall with one chunk queued, and RSS stays flat while 1 GiB is offered', async () => {
    const child = new Child(backend, 'neverReads', { nodeArgs: ['--expose-gc'] });
    const result = await child.report<{ accepted: number; acceptedGrowth: number; rssGrowth: number; writableLength: number; maxWritableLength: number }>();
    // Only what the kernel's socket buffers hold (a few MiB on loopback) left the writer.
    expect(result.accepted).toBeLessThan(64 * 1024 * 1024);
    expect(result.acceptedGrowth).toBe(0);
    // Queued in the library: never more than the one chunk being awaited.
    expect(result.maxWritableLength).toBeLessThanOrEqual(1024 * 1024);
    expect(result.rssGrowth).toBeLessThan(16 * 1024 * 1024);
    expect(await child.report<{ writer: string }>()).toEqual({ writer: 'ERR_SOCKET_CLOSED' });
    expect(await child.exit()).toBe(0);
  });

  it('a peer that never reads: writableNeedDrain turns true past writableHighWaterMark when writes are not awaited', async () => {
    let peer: Socket | undefined;
    const server = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
      peer = socket;  // never reads
    });
    const highWaterMark = 256 * 1024;
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port, writableHighWaterMark: highWaterMark });
    const chunk = randomBytes(64 * 1024);
    const writes: Promise<void>[] = [];
    let offered = 0;
    while (!socket.writableNeedDrain && offered < 256 * 1024 * 1024) {
      writes.push(socket.write(chunk).catch(() => {}));
      offered += chunk.length;
      if (writes.length % 16 === 0) await new Promise((resolve) => setImmediate(resolve));  // let the kernel take what it can
    }
    expect(socket.writableNeedDrain).toBe(true);
    expect(socket.writableLength).toBeGreaterThan(highWaterMark);
    expect(socket.writableLength).toBeLessThanOrEqual(highWaterMark + chunk.length);
    // The kernel's buffers took the rest: a bounded amount, not the 256 MiB the loop may offer.
    expect(offered).toBeLessThan(64 * 1024 * 1024);
    // Once the peer reads, every queued byte arrives in order.
    await expect.poll(() => peer).toBeDefined();
    const received = readBytes(peer!, offered);
    await Promise.all(writes);
    expect(socket.writableNeedDrain).toBe(false);
    const bytes = await received;
    expect(bytes.length).toBe(offered);
    for (let offset = 0; offset < offered; offset += chunk.length) {
      if (!bytes.subarray(offset, offset + chunk.length).equals(chunk)) throw new Error(`chunk at ${offset} differs`);
    }
  });

  // The default suite runs 10 000 cycles (about 1.3 s per backend); `npm run test:churn` runs the
  // full 100 000 (about 10 s per backend on 2 cores).
  const cycles = Number(process.env.TWINLOOP_CHURN_CYCLES ?? 10_000);
  it(`${cycles.toLocaleString('en')} connect/close cycles leave the descriptor count, the JS heap and RSS flat`, async () => {
    const round = cycles / 10;
    // A young generation of fixed size: V8 growing its semi-spaces would otherwise add 16-32 MiB of
    // RSS in steps (Node's own net shows the same), hiding what we look for.
    const child = new Child(backend, 'churn', {
      nodeArgs: ['--expose-gc', '--max-semi-space-size=1'],
      env: { CYCLES: String(cycles), ROUND: String(round) },
    });
    type Report = { cycles: number; fds: number; rss: number; heapUsed: number };
    const reports: Report[] = [];
    for (let i = 0; i < 10; i++) reports.push(await child.report<Report>());
    expect(await child.exit()).toBe(0);
    // The first round warms up pools, tables and the JIT; from then on nothing may accumulate.
    const [warm, settled, ...rest] = reports as [Report, Report, ...Report[]];
    for (const report of [settled, ...rest]) expect(report.fds, `descriptors after ${report.cycles} cycles`).toBe(warm.fds);
    const last = rest.at(-1)!;
    expect(last.heapUsed - warm.heapUsed).toBeLessThan(1024 * 1024);
    // Measured: flat within ±2 MiB (malloc's arenas breathe). A leak of 1 KiB per connection would
    // add 8 MiB over the 8 rounds at 10 000 cycles; at 100 000, 100 B per connection would.
    // Under AddressSanitizer (npm run test:sanitizers) freed memory waits in a 256 MiB quarantine,
    // so RSS says nothing there; descriptors and the heap still do.
    if (!underAddressSanitizer) expect(Math.max(...rest.map((report) => report.rss)) - settled.rss).toBeLessThan(8 * 1024 * 1024);
    // threads starts and joins a thread per connection: 36-45 s for 100 000 cycles on a quiet
    // 2-core machine, over 60 s on a busy one. The figure asserted is memory, not time.
  }, Math.max(60_000, cycles * 2));
});

// io_uring only: a completion queue and a provided-buffer pool are io_uring's own resources; the
// reactors have neither (epoll reports readiness, and the read goes straight into the arena).
describe.skipIf(!backends.includes('io_uring'))('faults only io_uring has', () => {
  it('io_uring: a 16-entry completion queue overflows under 2 000 simultaneous receives and no byte is lost', async () => {
    const child = new Child('io_uring', 'burst', { env: { TWINLOOP_IO_URING_CQ_ENTRIES: '16', CONNECTIONS: '2000', BYTES: String(64 * 1024) } });
    const result = await child.report<{ intact: number; connections: number; overflowSeen: number }>();
    expect(result.overflowSeen).toBeGreaterThan(0);  // the kernel did put completions on its overflow list
    expect(result.intact).toBe(result.connections);
    expect(await child.exit()).toBe(0);
  });

  it('io_uring: 4 000 simultaneous 64-byte receives pack into a few provided buffers, not one each', async () => {
    const child = new Child('io_uring', 'burst', { env: { CONNECTIONS: '4000', BYTES: '64' } });
    const result = await child.report<{ features: string[]; intact: number; connections: number; rssGrowth: number }>();
    expect(result.intact).toBe(result.connections);
    const incremental = result.features.includes('incremental-buffers');  // Linux 6.12 and later
    // When every recv took a whole 8 KiB buffer for its 64 bytes, the pool grew to thousands of
    // them at once: RSS grew 24-25 MiB. Consumed incrementally (Linux 6.12), the bytes fill four
    // 64 KiB buffers: 8-10 MiB, the rest of the burst (sockets, writes, JavaScript) included.
    if (incremental && !underAddressSanitizer) expect(result.rssGrowth).toBeLessThan(16 * 1024 * 1024);
    expect(await child.exit()).toBe(0);
  });

  it('io_uring: a 64 KiB message arrives in one or two receives where buffers are consumed incrementally, not one per 8 KiB', async () => {
    const loop = open({ backend: 'io_uring' });
    try {
      const messages = 20;
      const message = randomBytes(64 * 1024);
      const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
        let received = 0;
        for await (const chunk of socket) {
          received += chunk.length;
          if (received % message.length === 0) await socket.write('+');  // the ack of each whole message
        }
      });
      const client = await connectNet(server.address().port);
      const acks = readNet(client, messages);
      const before = loop.stats().events;
      for (let i = 0; i < messages; i++) {
        client.write(message);
        await new Promise((resolve) => client.once('data', resolve));
      }
      expect((await acks).length).toBe(messages);
      // Per message: its receives and the ack's write. Each recv took at most 8 KiB before: 9.
      const eventsPerMessage = (loop.stats().events - before) / messages;
      if (loop.info.features.includes('incremental-buffers')) expect(eventsPerMessage).toBeLessThanOrEqual(4);
      client.destroy();
    } finally {
      loop.close();
    }
  });

  it('io_uring: a pool of 4 provided buffers runs dry (ENOBUFS) under 50 × 1 MiB echo and no byte is lost', async () => {
    const child = new Child('io_uring', 'echoChecksummed', { env: { TWINLOOP_IO_URING_BUFFERS: '4', CONNECTIONS: '50', BYTES: String(1 << 20) } });
    const result = await child.report<{ features: string[]; intact: number; connections: number }>();
    // 64 KiB buffers where the kernel consumes them incrementally, 8 KiB where each recv takes one whole.
    const size = result.features.includes('incremental-buffers') ? 64 : 8;
    expect(result.features).toContain(`provided-buffer-ring:4x${size}KiB`);
    expect(result.intact).toBe(result.connections);
    expect(await child.exit()).toBe(0);
  });
});
