// An HTTP/1.1 server for the HTTP benchmark: GET /hello answers a 13-byte body, GET /16k a 16 KiB
// one, both with Content-Length, on keep-alive connections.
//
//   tsx bench/servers/http-server.ts --api node:http --backend node          node:http on Node's net
//   tsx bench/servers/http-server.ts --api node:http --backend epoll [--workers N]
//   tsx bench/servers/http-server.ts --api minimal --backend io_uring [--workers N]
//
// `node:http` runs Node's own HTTP server, on `net` or on a twinloop listener. `minimal` is a
// keep-alive responder written on twinloop's `Socket` (no node:http, no stream.Duplex): the
// transport's ceiling with a JavaScript handler.
import http from 'node:http';
import { parseArgs } from 'node:util';

// The built package, as users run it (see twinloop-server.ts).
import { open, serve, type BackendName, type Socket } from 'twinloop';
import { serveControl } from './control.js';
import { serveOnThreads, type Listening } from './threads.js';

const { values } = parseArgs({
  options: {
    api: { type: 'string', default: 'node:http' },
    backend: { type: 'string', default: 'node' },
    host: { type: 'string', default: '127.0.0.1' },
    workers: { type: 'string', default: '1' },
  },
});
const host = values.host;
const workers = Number(values.workers);
if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`--workers must be a positive integer, got '${values.workers}'`);

const hello = Buffer.from('hello world!\n');
const big = Buffer.alloc(16 * 1024, 'x');
const bodyFor = (url: string | undefined): Buffer => (url === '/16k' ? big : hello);

let connections = 0;
let requests = 0;

function nodeHttpServer(): http.Server {
  const server = http.createServer((request, response) => {
    requests += 1;
    const body = bodyFor(request.url);
    response.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    response.end(body);
  });
  server.on('connection', (socket: { once(event: 'close', listener: () => void): unknown }) => {
    connections += 1;
    socket.once('close', () => (connections -= 1));
  });
  return server;
}

// The minimal responder's whole answers, built once: status line, headers and body.
const responseFor = (body: Buffer): Buffer =>
  Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n`), body]);
const helloResponse = responseFor(hello);
const bigResponse = responseFor(big);
const notAllowed = Buffer.from('HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
const tooLarge = Buffer.from('HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
const headEnd = Buffer.from('\r\n\r\n');
const get = Buffer.from('GET ');
const bigPath = Buffer.from('/16k ');
// A head longer than this is refused, so a client that never ends its head cannot grow memory.
const kMaxHead = 8 * 1024;

const startsWith = (chunk: Buffer, at: number, prefix: Buffer): boolean =>
  chunk.length - at >= prefix.length && chunk.compare(prefix, 0, prefix.length, at, at + prefix.length) === 0;

/**
 * HTTP/1.1 keep-alive on a twinloop Socket: every complete head (ending "\r\n\r\n") in what
 * arrived is one request, so pipelined requests are answered together, in order, in one write.
 * GET only (so no request body to skip); the connection lasts until the client closes it.
 */
async function minimalResponder(socket: Socket): Promise<void> {
  connections += 1;
  let partial: Buffer | null = null;  // the start of a head that the next chunk completes
  try {
    for await (const received of socket) {
      const chunk: Buffer = partial === null ? received : Buffer.concat([partial, received]);
      partial = null;
      const answers: Buffer[] = [];
      let start = 0;
      for (let end = chunk.indexOf(headEnd, start); end !== -1; end = chunk.indexOf(headEnd, start)) {
        if (!startsWith(chunk, start, get)) return void (await socket.write(Buffer.concat([...answers, notAllowed])));
        answers.push(startsWith(chunk, start + get.length, bigPath) ? bigResponse : helloResponse);
        requests += 1;
        start = end + headEnd.length;
      }
      if (start < chunk.length) {
        if (chunk.length - start > kMaxHead) return void (await socket.write(Buffer.concat([...answers, tooLarge])));
        partial = Buffer.from(chunk.subarray(start));  // a copy: the chunk's memory is not kept alive
      }
      if (answers.length > 0) await socket.write(answers.length === 1 ? answers[0]! : Buffer.concat(answers));
    }
  } finally {
    connections -= 1;
  }
}

if (values.backend === 'node') {
  if (values.api !== 'node:http') throw new RangeError(`on Node's net only node:http runs, got --api '${values.api}'`);
  if (workers !== 1) throw new RangeError("node:http on Node's net runs on one thread: --workers must be 1");
  const server = nodeHttpServer();
  server.listen(0, host, () => {
    const { port } = server.address() as { port: number };
    serveControl({ port, info: { server: 'node:http on net', node: process.version } }, () => ({ connections, requests }));
  });
} else {
  if (values.api !== 'node:http' && values.api !== 'minimal') throw new RangeError(`--api must be node:http or minimal, got '${values.api}'`);
  const api = values.api;
  await serveOnThreads(workers, async (port, reusePort): Promise<Listening> => {
    const loop = open({ backend: values.backend as BackendName });
    let server;
    if (api === 'minimal') server = await loop.listen({ host, port, reusePort }, minimalResponder);
    else {
      // node:http meets twinloop as users run it: serve() instead of httpServer.listen().
      server = await serve(loop, nodeHttpServer(), { host, port, reusePort });
    }
    return { port: server.port, info: { ...loop.info, api }, counters: () => ({ connections, requests, loop: { ...loop.stats() } }) };
  });
}
