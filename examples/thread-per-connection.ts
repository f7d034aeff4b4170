// Thread per connection: the model reactors and proactors were invented to beat. An echo server on
// the `threads` backend, through the same net layer as every other backend: each connection gets
// a native thread of its own doing blocking recv/send, and the listener one doing blocking accept;
// what they complete reaches this loop in batches, as on epoll or io_uring.
//
//   npx tsx examples/thread-per-connection.ts [--clients 4] [--messages 3] [--backend threads]
//
// The clients use node:net, so that every thread counted here is the server's. `--backend epoll`
// runs the same program on a reactor, for comparison. Where the `threads` backend is not in this
// build, it says so in one line and exits 0.
import { existsSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import { parseArgs } from 'node:util';

import { availableBackends, open, type BackendName, type Loop } from 'twinloop';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'threads' },
    clients: { type: 'string', default: '4' },
    messages: { type: 'string', default: '3' },
  },
});
const clients = Number(values.clients);
const messages = Number(values.messages);

let loop: Loop;
try {
  loop = open({ backend: values.backend as BackendName });
} catch (error) {
  console.log(`backend '${values.backend}' is unavailable in this build; available: ${availableBackends().join(', ')} (${(error as Error).message.split('\n')[0]})`);
  process.exit(0);
}

// Threads of this process now (Linux /proc; null elsewhere).
const threadCount = (): number | null => (existsSync('/proc/self/task') ? readdirSync('/proc/self/task').length : null);
const contextSwitches = (): number => {
  const usage = process.resourceUsage();
  return usage.voluntaryContextSwitches + usage.involuntaryContextSwitches;
};

const { backend, pattern } = loop.info;
console.log(`backend ${backend}, pattern: ${pattern}`);
const threadsAtStart = threadCount();

let served = 0;
const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
  const id = ++served;
  console.log(`[server] connection ${id} accepted from port ${socket.remotePort}${threadCount() === null ? '' : `; the process has ${threadCount()} threads`}`);
  let bytes = 0;
  for await (const chunk of socket) {
    bytes += chunk.length;
    await socket.write(chunk);
  }
  console.log(`[server] connection ${id}: the client closed after ${bytes} bytes echoed`);
});
const threadsListening = threadCount();
console.log(`[server] listening on 127.0.0.1:${server.port}${threadsListening === null ? '' : `; threads: ${threadsAtStart} before listen, ${threadsListening} after`}`);

// The clients: all connect first, so that every connection is open at once, then each sends its
// messages one round trip at a time and checks the echo.
const sockets = await Promise.all(
  Array.from({ length: clients }, async () => {
    const socket = net.connect({ host: '127.0.0.1', port: server.port });
    await once(socket, 'connect');
    return socket;
  }),
);
// Wait until the server has taken every connection: its handler counts them.
while (served < clients) await loop.sleep(5);
const threadsConnected = threadCount();
if (threadsConnected !== null && threadsListening !== null) {
  console.log(`${clients} connections open: the process has ${threadsConnected} threads, ${threadsConnected - threadsListening} more than with none (${((threadsConnected - threadsListening) / clients).toFixed(1)} per connection)`);
}

const switchesBefore = contextSwitches();
const statsBefore = loop.stats();
const started = performance.now();
await Promise.all(
  sockets.map(async (socket, c) => {
    for (let i = 1; i <= messages; i++) {
      const message = Buffer.from(`client ${c + 1} message ${i}`);
      socket.write(message);
      let echoed = Buffer.alloc(0);
      while (echoed.length < message.length) echoed = Buffer.concat([echoed, (await once(socket, 'data'))[0] as Buffer]);
      if (!echoed.equals(message)) throw new Error(`client ${c + 1} got ${JSON.stringify(String(echoed))} back for ${JSON.stringify(String(message))}`);
      console.log(`[client ${c + 1}] sent and got back ${JSON.stringify(String(message))}`);
    }
  }),
);
const ms = performance.now() - started;
const roundTrips = clients * messages;
const stats = loop.stats();
const switches = contextSwitches() - switchesBefore;
console.log(`${roundTrips} round trips in ${ms.toFixed(1)} ms, every byte verified`);
console.log(
  `loop.stats() over them: ${stats.syscalls - statsBefore.syscalls} syscalls, ${stats.wakes - statsBefore.wakes} wakes, ${stats.batches - statsBefore.batches} batches (one call into JavaScript each); ` +
    `${switches} context switches of the whole process (${(switches / roundTrips).toFixed(1)} per round trip, clients included)`,
);

for (const socket of sockets) socket.end();
await Promise.all(sockets.map((socket) => once(socket, 'close')));
server.close();
await loop.close();
console.log(`closed${threadCount() === null ? '' : `: the process has ${threadCount()} threads again`}`);
