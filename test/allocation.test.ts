// What a round trip allocates on the JavaScript heap, counted by V8's sampling heap profiler with
// the objects that scavenges collected: at thousands of connections an echo's cost grows with
// the memory it streams through the cache (docs/patterns.md), so the callback APIs keep a budget.
// One defect this guards against: a function whose closures share a context allocates it on
// every call, whichever path the call takes.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { loadgenPath } from '../bench/lib/paths.js';
import { open, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends } from './helpers.js';

const execFileAsync = promisify(execFile);
const kWarmupRoundTrips = 20_000;
const kRoundTrips = 20_000;

// Bytes a round trip may allocate. The Proactor API's echo allocates a Buffer per chunk and, where
// the write stays in flight (io_uring), its operation: ~250 bytes on epoll and ~430 on io_uring
// (~480 while an operation in flight made a completion closing over its callback), against ~710
// on both before its per-call contexts went. The Reactor API's echo allocates nothing. The net
// layer's `for await` echo pays two awaits and a promise a round trip (~870 bytes); where the
// write stays in flight, its promise and operation too: ~1 220 bytes on io_uring, against ~1 400
// when each write's promise made an executor and a completion closing over its resolving functions.
const budgets: Record<string, Record<Api, number>> = {
  epoll: { reactor: 32, proactor: 400, net: 1000 },
  kqueue: { reactor: 32, proactor: 400, net: 1000 },
  io_uring: { reactor: 32, proactor: 470, net: 1350 },
};

type Api = 'reactor' | 'proactor' | 'net';
/** Starts an echo server on `loop`, calling `served` once per round trip. */
type Echo = (loop: Loop, served: () => void) => Promise<Server>;

const listen = (loop: Loop): Promise<Server> => loop.listen({ host: '127.0.0.1', port: 0 });

const reactorEcho: Echo = async (loop, served) => {
  const server = await listen(loop);
  const { reactor } = loop;
  const buffer = Buffer.allocUnsafe(64 * 1024);
  const serve = (socket: Socket): void => {
    reactor.watch(socket, 'readable', () => {
      const n = reactor.tryRead(socket, buffer);
      if (n === null) return;
      if (n === 0) return socket.close();
      served();
      reactor.tryWrite(socket, buffer, 0, n);  // 64 bytes: the kernel takes them whole
    });
  };
  reactor.watch(server, 'readable', () => {
    for (let socket = reactor.tryAccept(server); socket !== null; socket = reactor.tryAccept(server)) serve(socket);
  });
  return server;
};

const proactorEcho: Echo = async (loop, served) => {
  const server = await listen(loop);
  const { proactor } = loop;
  const serve = (socket: Socket): void => {
    const onWritten = (error: Error | null): void => (error ? socket.close() : proactor.read(socket, onRead));
    const onRead = (error: Error | null, chunk?: Buffer | null): void => {
      if (error || !chunk) return socket.close();
      served();
      proactor.write(socket, chunk, onWritten);
    };
    proactor.read(socket, onRead);
  };
  const accept = (): void => proactor.accept(server, (error, socket) => {
    if (!error) serve(socket!);
    if (!server.closed) accept();
  });
  accept();
  return server;
};

const netEcho: Echo = (loop, served) =>
  loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
    for await (const chunk of socket) {
      served();
      await socket.write(chunk);
    }
  });

const echoes: Record<Api, Echo> = { reactor: reactorEcho, proactor: proactorEcho, net: netEcho };

async function bytesPerRoundTrip(backend: (typeof backends)[number], echo: Echo): Promise<number> {
  const loop = open({ backend });
  const session = new Session();
  try {
    let roundTrips = 0;
    const server = await echo(loop, () => void (roundTrips += 1));
    const load = (requests: number): Promise<unknown> =>
      execFileAsync(loadgenPath, ['--host', '127.0.0.1', '--port', String(server.port), '--connections', '50', '--requests', String(requests), '--duration', '30']);
    await load(kWarmupRoundTrips);  // the JIT compiles the echo's path meanwhile
    session.connect();
    await session.post('HeapProfiler.startSampling', { samplingInterval: 128, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    const before = roundTrips;
    await load(kRoundTrips);
    const { profile } = await session.post('HeapProfiler.stopSampling');
    const total = (node: typeof profile.head): number => node.selfSize + node.children.reduce((sum, child) => sum + total(child), 0);
    return total(profile.head) / (roundTrips - before);
  } finally {
    session.disconnect();
    loop.close();
  }
}

describe.skipIf(!existsSync(loadgenPath))('JavaScript heap allocated per round trip', () => {
  describe.each(backends.filter((backend) => backend in budgets))('%s', (backend) => {
    it.each(['reactor', 'proactor', 'net'] as const)('%s echo: within its budget', async (api) => {
      const bytes = await bytesPerRoundTrip(backend, echoes[api]);
      expect(bytes).toBeLessThan(budgets[backend]![api]);
    }, 60_000);
  });
});
