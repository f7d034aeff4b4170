// A twinloop echo server on one backend through one API, for the benchmark.
//
//   tsx bench/servers/twinloop-server.ts --backend epoll --api net|reactor|proactor|native [--workers N]
//
// With `--workers N`, N worker threads each run a loop and the server on the same port with
// SO_REUSEPORT (./threads.ts); the native echo runs on one thread only.
// `native` is the ceiling: the same backend echoing from C++ (native/binding/native_echo.cc),
// with no JavaScript on the data path.
import { parseArgs } from 'node:util';

// The built package (dist/, by the package's own name), as users run it. tsx's transform of lib/
// keeps function names by wrapping every closure the library makes in a defineProperty call,
// which reshapes objects on the hot path and cost the proactor API a third of its CPU per op.
import { open, type BackendName, type Loop, type Server, type Socket } from 'twinloop';
import { nativeEchoPath } from '../lib/paths.js';
import { serveControl, type Counters } from './control.js';
import { serveOnThreads } from './threads.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'auto' },
    api: { type: 'string', default: 'net' },
    host: { type: 'string', default: '127.0.0.1' },
    workers: { type: 'string', default: '1' },
  },
});
const host = values.host;
let connections = 0;

// The reactor's read buffer: big enough that one read takes a whole 64 KiB message, as the net
// layer's reads do.
const kReadBuffer = 64 * 1024;
// How long accepting waits after a failure such as EMFILE, instead of spinning.
const kAcceptRetryMs = 100;
// Accepts kept in flight by the proactor server, as proactor servers post several AcceptEx: with
// one, each connection waits a whole turn of the loop for the next accept to be submitted, and
// thousands of connecting clients starve in the backlog.
const kAcceptsInFlight = 64;

interface Listen {
  port: number;
  reusePort: boolean;
}

async function netEcho(loop: Loop, where: Listen): Promise<Server> {
  return loop.listen({ host, ...where }, async (socket) => {
    connections += 1;
    try {
      for await (const chunk of socket) await socket.write(chunk);
    } finally {
      connections -= 1;
    }
  });
}

async function reactorEcho(loop: Loop, where: Listen): Promise<Server> {
  const { reactor } = loop;
  const server = await loop.listen({ host, ...where });
  const buffer = Buffer.allocUnsafe(kReadBuffer);  // shared: a write that cannot finish copies its rest
  // Two callbacks a connection, made once, and nothing else of its own but the bytes it could not
  // send yet: what a server that holds many connections would write.
  const serve = (socket: Socket): void => {
    connections += 1;
    let unsent: Buffer | null = null;
    const onWritable = (): void => {
      try {
        unsent = sendSome(loop, socket, unsent!);
        if (unsent !== null) return;
        reactor.unwatch(socket, 'writable');
        reactor.watch(socket, 'readable', onReadable);
      } catch {
        closeConnection(socket);  // a peer that resets mid-echo closes its connection, not the server
      }
    };
    const onReadable = (): void => {
      try {
        const n = reactor.tryRead(socket, buffer);
        if (n === null) return;
        if (n === 0) return closeConnection(socket);
        const rest = sendSome(loop, socket, buffer, n);
        if (rest === null) return;
        unsent = Buffer.from(rest);
        reactor.unwatch(socket, 'readable');
        reactor.watch(socket, 'writable', onWritable);
      } catch {
        closeConnection(socket);
      }
    };
    reactor.watch(socket, 'readable', onReadable);
  };
  reactor.watch(server, 'readable', () => {
    for (let socket = reactor.tryAccept(server); socket !== null; socket = reactor.tryAccept(server)) serve(socket);
  });
  return server;
}

// Writes what the socket takes of the first `length` bytes of `bytes` (an offset and a length
// rather than a subarray per chunk): the rest, or null once all of it is sent.
function sendSome(loop: Loop, socket: Socket, bytes: Buffer, length = bytes.length): Buffer | null {
  const n = loop.reactor.tryWrite(socket, bytes, 0, length) ?? 0;
  return n === length ? null : bytes.subarray(n, length);
}

function closeConnection(socket: Socket): void {
  connections -= 1;
  socket.close();
}

async function proactorEcho(loop: Loop, where: Listen): Promise<Server> {
  const { proactor } = loop;
  const server = await loop.listen({ host, ...where });
  const serve = (socket: Socket): void => {
    connections += 1;
    // The pooled read: the loop picks the memory when bytes arrive, so a connection waiting holds
    // no buffer of its own (a 64 KiB one each would be most of an idle server's memory). The two
    // completions are made once per connection, not per operation, as a server that cares about
    // its allocation rate would write them.
    const onWritten = (error: Error | null): void => (error ? closeConnection(socket) : proactor.read(socket, onRead));
    const onRead = (error: Error | null, chunk?: Buffer | null): void => {
      if (error || !chunk) return closeConnection(socket);
      proactor.write(socket, chunk, onWritten);
    };
    proactor.read(socket, onRead);
  };
  const accept = (): void =>
    proactor.accept(server, (error, socket) => {
      if (error) return void setTimeout(accept, kAcceptRetryMs);
      serve(socket!);
      accept();
    });
  for (let i = 0; i < kAcceptsInFlight; i++) accept();
  return server;
}

interface NativeEcho {
  port(): number;
  info(): Record<string, unknown>;
  stats(): Record<string, number> & { connections: number };
}

const workers = Number(values.workers);
if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`--workers must be a positive integer, got '${values.workers}'`);
if (values.api === 'native') {
  if (workers !== 1) throw new RangeError('the native echo runs on one thread: --workers must be 1');
  // A .so, not a .node, so that node-gyp-build never mistakes it for the twinloop addon.
  const addon = { exports: {} as { NativeEcho: new (backend: string, host: string, port: number) => NativeEcho } };
  process.dlopen(addon, nativeEchoPath);
  const { NativeEcho } = addon.exports;
  const echo = new NativeEcho(values.backend, host, 0);
  serveControl({ port: echo.port(), info: echo.info() }, () => {
    const { connections: open, ...loop } = echo.stats();
    return { connections: open, loop };
  });
} else {
  const servers = { net: netEcho, reactor: reactorEcho, proactor: proactorEcho };
  const start = servers[values.api as keyof typeof servers];
  if (start === undefined) throw new RangeError(`--api must be net, reactor, proactor or native, got '${values.api}'`);
  await serveOnThreads(workers, async (port, reusePort) => {
    const loop = open({ backend: values.backend as BackendName | 'auto' });
    const server = await start(loop, { port, reusePort });
    const counters = (): Counters => ({ connections, loop: { ...loop.stats() } });
    return { port: server.port, info: { ...loop.info }, counters };
  });
}
