// Callbacks: an echo server and its client driven by the Proactor API's Node-style callbacks —
// submit an operation, get called with (error, result) once the kernel has done it. No promise
// is awaited on the data path; each callback submits the next operation.
//
//   npx tsx examples/callbacks.ts [--backend auto|epoll|io_uring|kqueue|iocp] [--messages 3]
//
// On a proactor backend (io_uring, IOCP) the kernel does each read and write and reports its
// completion; on a reactor (epoll, kqueue) the loop waits for readiness, makes the non-blocking
// call itself, then calls back the same way. The output says which one ran.
import { callbackify, parseArgs } from 'node:util';

import { open, type BackendName, type ConnectOptions, type Server, type Socket } from 'twinloop';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'auto' },
    messages: { type: 'string', default: '3' },
  },
});
const messages = Number(values.messages);

const loop = open({ backend: values.backend as BackendName | 'auto' });
const { backend, pattern } = loop.info;
console.log(`backend ${backend}, native pattern: ${pattern}; the Proactor API used here is ${pattern === 'proactor' ? 'its native one' : `emulated on the ${pattern}`}`);

const { proactor } = loop;

// The server: one accept in flight; each connection reads, writes back what it read, reads again.
function serve(server: Server): void {
  proactor.accept(server, (error, socket) => {
    if (error) return console.error(`[server] accept failed: ${error.message}`);
    console.log('[server] accept completed: a connection');
    echo(socket!, Buffer.alloc(64 * 1024));
  });
}

function echo(socket: Socket, buffer: Buffer): void {
  proactor.read(socket, buffer, (error, n) => {
    if (error) return console.error(`[server] read failed: ${error.message}`);
    if (n === 0) {
      console.log('[server] read completed with 0 bytes: the client closed; closing the connection and the server');
      socket.close();
      return finish();
    }
    console.log(`[server] read completed: ${n} bytes, already in the buffer: ${JSON.stringify(String(buffer.subarray(0, n)))}`);
    proactor.write(socket, buffer.subarray(0, n), (error, written) => {
      if (error) return console.error(`[server] write failed: ${error.message}`);
      console.log(`[server] write completed: ${written} bytes echoed`);
      echo(socket, buffer);
    });
  });
}

// The client: sends message i, reads its echo, then sends message i + 1.
function talk(socket: Socket, i: number): void {
  if (i === messages) {
    console.log(`[client] all ${messages} echoes received; closing`);
    socket.close();
    return;
  }
  const message = Buffer.from(`hello #${i + 1}`);
  proactor.write(socket, message, (error, written) => {
    if (error) return console.error(`[client] write failed: ${error.message}`);
    console.log(`[client] write completed: ${written} bytes sent: ${JSON.stringify(String(message))}`);
    const reply = Buffer.alloc(64);
    proactor.read(socket, reply, (error, n) => {
      if (error) return console.error(`[client] read failed: ${error.message}`);
      const echoed = reply.subarray(0, n);
      // One small message on loopback arrives whole; a real protocol would frame its messages.
      console.log(`[client] read completed: ${n} bytes: ${JSON.stringify(String(echoed))}${echoed.equals(message) ? ', the same bytes' : ', DIFFERENT bytes'}`);
      if (!echoed.equals(message)) process.exitCode = 1;
      talk(socket, i + 1);
    });
  });
}

let listening: Server;
function finish(): void {
  listening.close();
  const stats = loop.stats();
  console.log(`loop.stats(): ${stats.syscalls} syscalls, ${stats.events} events, ${stats.wakes} wakes, ${stats.batches} batches (each one call into JavaScript)`);
  void loop.close().then(() => console.log('loop closed'));
}

// listen() and connect() return promises (the Proactor API has accept but no connect):
// callbackify gives them the same Node-style callback shape as the rest.
const listen = callbackify((options: { host: string; port: number }) => loop.listen(options));
const connect = callbackify((options: ConnectOptions) => loop.connect(options));

listen({ host: '127.0.0.1', port: 0 }, (error, server) => {
  if (error) throw error;
  listening = server;
  console.log(`[server] listening on 127.0.0.1:${server.port}; accept submitted`);
  serve(server);
  connect({ host: '127.0.0.1', port: server.port }, (error, socket) => {
    if (error) throw error;
    console.log('[client] connected');
    talk(socket, 0);
  });
});
