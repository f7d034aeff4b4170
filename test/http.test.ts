// serve(): node:http, https, http2 and the frameworks on a twinloop listener, on every backend.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import express from 'express';
import Fastify from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, serve, type Loop, type SocketStream } from '../lib/index.js';
import { backends, outcome, randomBytes, sha256 } from './helpers.js';

const MiB = 1024 * 1024;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = path.join(root, 'test', 'fixtures');
const run = promisify(execFile);
const key = readFileSync(path.join(fixtures, 'localhost-key.pem'));
const cert = readFileSync(path.join(fixtures, 'localhost-cert.pem'));

interface Reply {
  status: number;
  body: Buffer;
  reused: boolean;
}

/** One request through node:http's client; the body is collected whole. */
function request(options: http.RequestOptions, body?: Buffer | ((req: http.ClientRequest) => void)): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', ...options }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (typeof body === 'function') body(req);
    else req.end(body);
  });
}

/** Reads from a node:net socket until `predicate` holds for everything received so far. */
async function readUntil(socket: net.Socket, predicate: (text: string) => boolean): Promise<string> {
  let text = '';
  for await (const chunk of socket) {
    text += String(chunk);
    if (predicate(text)) break;
  }
  return text;
}

describe.each(backends)('serve() on %s', (backend) => {
  let loop: Loop;
  let agent: http.Agent;
  beforeEach(() => {
    loop = open({ backend });
    agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  });
  afterEach(async () => {
    agent.destroy();
    await loop.close();
  });

  describe('node:http', () => {
    it('answers a GET and a keep-alive second request on the same connection, as a listening server', async () => {
      const server = http.createServer((req, res) => res.end(`hello ${req.url}`));
      let connections = 0;
      server.on('connection', () => (connections += 1));
      const listening = once(server, 'listening');
      const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
      await listening;
      expect(server.listening).toBe(true);
      expect(server.address()).toEqual({ address: '127.0.0.1', family: 'IPv4', port: listener.port });
      const first = await request({ port: listener.port, path: '/one', agent });
      expect({ ...first, body: String(first.body) }).toEqual({ status: 200, body: 'hello /one', reused: false });
      const second = await request({ port: listener.port, path: '/two', agent });
      expect({ ...second, body: String(second.body) }).toEqual({ status: 200, body: 'hello /two', reused: true });
      expect(connections).toBe(1);
    });

    it('answers two pipelined requests sent in one write, in order', async () => {
      const server = http.createServer((req, res) => {
        // The first answer is the slower one: order must come from the protocol, not from timing.
        if (req.url === '/first') setTimeout(() => res.end('one'), 20);
        else res.end('two');
      });
      const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
      const client = net.connect(listener.port, '127.0.0.1');
      client.write('GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n');
      const text = await readUntil(client, (received) => /one[\s\S]*HTTP\/1\.1 200[\s\S]*\r\n\r\ntwo$/.test(received));
      client.destroy();
      expect(text.startsWith('HTTP/1.1 200 OK')).toBe(true);
      expect(text.indexOf('one')).toBeLessThan(text.lastIndexOf('two'));
      expect(text.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
    });

    it('receives a 64 MiB streamed POST whole (SHA-256)', async () => {
      const server = http.createServer((req, res) => {
        const hash = createHash('sha256');
        let length = 0;
        req.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          length += chunk.length;
        });
        req.on('end', () => res.end(`${length} ${hash.digest('hex')}`));
      });
      const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
      const piece = randomBytes(MiB);
      const pieces = 64;
      const reply = await request({ port: listener.port, method: 'POST', path: '/upload', agent }, (req) => {
        let sent = 0;
        const more = (): void => {
          while (sent < pieces) {
            sent += 1;
            if (!req.write(piece)) {
              req.once('drain', more);
              return;
            }
          }
          req.end();
        };
        more();
      });
      expect(reply.status).toBe(200);
      expect(String(reply.body)).toBe(`${pieces * MiB} ${sha256(...Array.from({ length: pieces }, () => piece))}`);
    });

    it('a client that reads slowly bounds what the server queues for a 64 MiB response', async () => {
      const piece = randomBytes(MiB);
      const pieces = 64;
      let largest = 0;
      const server = http.createServer((_req, res) => {
        const stream = res.socket as unknown as SocketStream;
        let sent = 0;
        const more = (): void => {
          while (sent < pieces) {
            sent += 1;
            const ok = res.write(piece);
            largest = Math.max(largest, res.writableLength + stream.writableLength + stream.socket.writableLength);
            if (!ok) {
              res.once('drain', more);
              return;
            }
          }
          res.end();
        };
        more();
      });
      const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
      const hash = createHash('sha256');
      let received = 0;
      await new Promise<void>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port: listener.port, agent }, (res) => {
          let chunks = 0;
          res.on('data', (chunk: Buffer) => {
            hash.update(chunk);
            received += chunk.length;
            if (++chunks % 16 === 0) {  // a slow reader
              res.pause();
              setTimeout(() => res.resume(), 2);
            }
          });
          res.on('end', resolve);
          res.on('error', reject);
        }).on('error', reject);
      });
      expect(received).toBe(pieces * MiB);
      expect(hash.digest('hex')).toBe(sha256(...Array.from({ length: pieces }, () => piece)));
      // One piece in node:http's buffer, one in the stream's, one the socket is sending.
      expect(largest).toBeLessThan(4 * MiB);
    });

    it('a peer that resets mid-body fails that request with ECONNRESET, and the server serves the next', async () => {
      let failed!: (error: Error & { code?: string }) => void;
      const failure = new Promise<Error & { code?: string }>((resolve) => (failed = resolve));
      const server = http.createServer((req, res) => {
        if (req.url !== '/upload') {
          res.end('still serving');
          return;
        }
        req.on('error', failed);
        req.resume();
      });
      const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
      const client = await loop.connect({ host: '127.0.0.1', port: listener.port });
      await client.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${MiB}\r\n\r\n`);
      await client.write(randomBytes(100_000));
      await loop.sleep(20);
      client.resetAndDestroy();
      expect((await failure).code).toBe('ECONNRESET');
      const next = await request({ port: listener.port, path: '/', agent });
      expect({ status: next.status, body: String(next.body) }).toEqual({ status: 200, body: 'still serving' });
    });

    it('server.close(callback) stops accepting, closes idle keep-alive connections, lets a request finish, then calls back', async () => {
      let finishInFlight!: () => void;
      let arrived!: () => void;
      const inFlightArrived = new Promise<void>((resolve) => (arrived = resolve));
      const server = http.createServer((req, res) => {
        if (req.url !== '/slow') {
          res.end('fast');
          return;
        }
        finishInFlight = () => res.end('slow');
        arrived();
      });
      const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
      const { port } = listener;
      // An idle keep-alive connection...
      expect((await request({ port, path: '/', agent })).status).toBe(200);
      const idleSocket = (agent.freeSockets[Object.keys(agent.freeSockets)[0]!] ?? [])[0]!;
      const idleClosed = once(idleSocket, 'close');
      // ...and a request in flight on another (which then closes: with keep-alive, node:http would
      // keep it for its keepAliveTimeout, on net as here).
      const slow = request({ port, path: '/slow', headers: { connection: 'close' } });
      await inFlightArrived;
      let closedCalledBack = false;
      const closed = new Promise<Error | undefined>((resolve) => server.close((error) => {
        closedCalledBack = true;
        resolve(error);
      }));
      expect(server.listening).toBe(false);
      expect(listener.closed).toBe(true);
      await idleClosed;
      expect(await outcome(loop.connect({ host: '127.0.0.1', port }))).toMatchObject({ code: 'ECONNREFUSED' });
      expect(closedCalledBack).toBe(false);  // the slow request still holds its connection
      finishInFlight();
      const reply = await slow;
      expect({ status: reply.status, body: String(reply.body) }).toEqual({ status: 200, body: 'slow' });
      expect(await closed).toBeUndefined();
    });

    it('closing the twinloop listener or the loop closes the node server', async () => {
      const server = http.createServer((_req, res) => res.end());
      const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
      const closed = once(server, 'close');
      listener.close();
      await closed;
      expect(server.listening).toBe(false);
      const again = http.createServer((_req, res) => res.end());
      await serve(loop, again, { host: '127.0.0.1', port: 0 });
      const closedAgain = once(again, 'close');
      await loop.close();
      await closedAgain;
      expect(again.listening).toBe(false);
    });

    it('serves on a Unix socket path, which server.address() reports', async () => {
      const socketPath = path.join(tmpdir(), `twinloop-http-${process.pid}-${backend}.sock`);
      const server = http.createServer((req, res) => res.end(`unix ${req.url}`));
      await serve(loop, server, { path: socketPath });
      expect(server.address()).toBe(socketPath);
      const reply = await request({ socketPath, path: '/here' });
      expect({ status: reply.status, body: String(reply.body) }).toEqual({ status: 200, body: 'unix /here' });
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it("honours maxConnections: a connection beyond it is closed and 'drop' emitted", async () => {
      const server = http.createServer((_req, res) => res.end('ok'));
      server.maxConnections = 1;
      const dropped = once(server, 'drop');
      const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
      expect((await request({ port: listener.port, path: '/', agent })).status).toBe(200);  // holds the one connection
      const second = net.connect(listener.port, '127.0.0.1');
      const [drop] = (await dropped) as [{ remoteAddress: string }];
      expect(drop.remoteAddress).toBe('127.0.0.1');
      await once(second, 'close');
      expect(await new Promise((resolve) => server.getConnections((_error, count) => resolve(count)))).toBe(1);
    });

    it('refuses a server that is not a net.Server, or one that already listens', async () => {
      await expect(serve(loop, {} as net.Server, { port: 0 })).rejects.toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('"server"') });
      const server = http.createServer();
      await serve(loop, server, { host: '127.0.0.1', port: 0 });
      await expect(serve(loop, server, { host: '127.0.0.1', port: 0 })).rejects.toMatchObject({ code: 'ERR_SERVER_ALREADY_LISTEN' });
      expect(() => server.listen(0)).toThrow(expect.objectContaining({ code: 'ERR_SERVER_ALREADY_LISTEN' }));
    });
  });

  it('https: node:https and tls.connect({ socket: stream }) over a twinloop socket, with the test certificate', async () => {
    const server = https.createServer({ key, cert }, (req, res) => res.end(`secure ${req.url}`));
    const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
    const viaNet = await new Promise<string>((resolve, reject) => {
      https.get({ host: '127.0.0.1', port: listener.port, path: '/net', ca: cert, servername: 'localhost' }, (res) => {
        res.setEncoding('utf8');
        let body = '';
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });
    expect(viaNet).toBe('secure /net');
    // The client's TCP connection is twinloop's too: TLS runs over its Duplex.
    const socket = await loop.connect({ host: '127.0.0.1', port: listener.port });
    const secure = tls.connect({ socket: socket.stream(), ca: cert, servername: 'localhost' });
    await once(secure, 'secureConnect');
    expect(secure.authorized).toBe(true);
    const reply = await request({ path: '/duplex', createConnection: () => secure, headers: { connection: 'close' } });
    expect({ status: reply.status, body: String(reply.body) }).toEqual({ status: 200, body: 'secure /duplex' });
  });

  it.each(['secure', 'plain'] as const)('http2 (%s): a GET through http2.connect', async (kind) => {
    const onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.end(`h2 ${headers[':path']}`);
    };
    const server = kind === 'secure' ? http2.createSecureServer({ key, cert }) : http2.createServer();
    server.on('stream', onStream);
    const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
    const session = kind === 'secure'
      ? http2.connect(`https://localhost:${listener.port}`, { ca: cert, host: '127.0.0.1' } as http2.SecureClientSessionOptions)
      : http2.connect(`http://127.0.0.1:${listener.port}`);
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const req = session.request({ ':path': '/two' });
        req.setEncoding('utf8');
        let text = '';
        req.on('data', (chunk: string) => (text += chunk));
        req.on('end', () => resolve(text));
        req.on('error', reject);
        req.end();
      });
      expect(body).toBe('h2 /two');
    } finally {
      session.close();
    }
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('express: http.createServer(app) answers a GET', async () => {
    const app = express();
    app.get('/hello/:name', (req, res) => {
      res.json({ hello: req.params.name });
    });
    const server = http.createServer(app);
    const listener = await serve(loop, server, { host: '127.0.0.1', port: 0 });
    const reply = await request({ port: listener.port, path: '/hello/express', agent });
    expect(reply.status).toBe(200);
    expect(JSON.parse(String(reply.body))).toEqual({ hello: 'express' });
  });

  it("fastify: app.server after app.ready() answers a GET, and sees its address", async () => {
    const app = Fastify();
    app.get('/hello/:name', async (req) => ({ hello: (req.params as { name: string }).name }));
    await app.ready();
    const listener = await serve(loop, app.server, { host: '127.0.0.1', port: 0 });
    expect(app.server.address()).toMatchObject({ port: listener.port });
    const reply = await request({ port: listener.port, path: '/hello/fastify', agent });
    expect(reply.status).toBe(200);
    expect(JSON.parse(String(reply.body))).toEqual({ hello: 'fastify' });
    agent.destroy();
    await app.close();
  });
});

describe.each(backends)('examples/http.ts on %s', (backend) => {
  it('runs as written and exits 0', async () => {
    // Added to what the environment already disables, so that `auto` picks this backend.
    const others = [process.env.TWINLOOP_DISABLE_BACKENDS, ...backends.filter((name) => name !== backend)];
    const tsx = path.join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'tsx.cmd' : 'tsx');
    const { stdout } = await run(tsx, [path.join(root, 'examples', 'http.ts')], {
      cwd: root,
      timeout: 30_000,
      env: { ...process.env, TWINLOOP_DISABLE_BACKENDS: others.filter(Boolean).join(',') },
    });
    expect(stdout).toBe(`hello from ${backend}\n\n`);
  });
});

describe('the README', () => {
  it('shows examples/http.ts verbatim in its node:http section', () => {
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    const block = /## node:http on twinloop\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBe(readFileSync(path.join(root, 'examples', 'http.ts'), 'utf8'));
  });
});
