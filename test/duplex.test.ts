// socket.stream(): a real stream.Duplex for Node's own stream users (pipeline, node:http, tls).
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends, randomBytes, readAll, sha256 } from './helpers.js';

const MiB = 1024 * 1024;
let dir: string;
let file: string;
let fileBytes: Buffer;
const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const certificate = { key: readFileSync(path.join(fixtures, 'localhost-key.pem')), cert: readFileSync(path.join(fixtures, 'localhost-cert.pem')) };

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'twinloop-duplex-'));
  file = path.join(dir, 'payload');
  fileBytes = randomBytes(8 * MiB + 123);
  writeFileSync(file, fileBytes);
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe.each(backends)('socket.stream() on %s', (backend) => {
  let loop: Loop;
  beforeEach(() => {
    loop = open({ backend });
  });
  afterEach(async () => {
    await loop.close();
  });

  /** A listener whose connections are handed out one by one. */
  async function pair(): Promise<{ server: Server; client: Socket; peer: Socket }> {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const accepted = loop.proactor.accept(server);
    const client = await loop.connect({ host: '127.0.0.1', port: server.port });
    return { server, client, peer: await accepted };
  }

  it('is made on demand and the same stream on every call', async () => {
    const { client } = await pair();
    const stream = client.stream();
    expect(client.stream()).toBe(stream);
    expect(stream.socket).toBe(client);
    expect(stream.remoteAddress).toBe('127.0.0.1');
    expect(stream.remoteFamily).toBe('IPv4');
    expect(stream.remotePort).toBe(client.remotePort);
    expect(stream.localAddress).toBe('127.0.0.1');
    expect(stream.localPort).toBe(client.address().port);
    expect(stream.address()).toEqual(client.address());
    expect(stream.setNoDelay(true).setKeepAlive(true, 1000).ref().unref()).toBe(stream);
  });

  it('a plain Socket handed to Node\'s stream users fails loudly instead of hanging', async () => {
    const { client } = await pair();
    const notAStream = { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('socket.stream()') };
    await expect(pipeline(createReadStream(file), client as unknown as NodeJS.WritableStream)).rejects.toMatchObject(notAStream);
    expect(() => http.createServer().emit('connection', client)).toThrow(expect.objectContaining(notAStream));
    expect(() => client.on('data', () => {})).toThrow(expect.objectContaining(notAStream));
    expect(client.once('close', () => {})).toBe(client);  // its own events still work
  });

  it('pipeline(file, stream) delivers every byte, sends FIN and settles', async () => {
    const { client, peer } = await pair();
    const received = readAll(peer);
    const stream = client.stream();
    const sent = pipeline(createReadStream(file), stream);
    const bytes = await received;  // EOF: the stream's end() became the socket's FIN
    expect(sha256(bytes)).toBe(sha256(fileBytes));
    await peer.end();              // the peer's FIN ends the readable side too
    stream.resume();
    await sent;
    expect(stream.bytesWritten).toBe(fileBytes.length);
  });

  it('pipeline(stream, file) settles at EOF with identical bytes', async () => {
    const { client, peer } = await pair();
    const target = path.join(dir, `copy-${backend}`);
    const stream = client.stream();
    const copied = pipeline(stream, createWriteStream(target));
    await peer.write(fileBytes);
    await peer.end();
    await copied;
    expect(sha256(readFileSync(target))).toBe(sha256(fileBytes));
    expect(stream.bytesRead).toBe(fileBytes.length);
  });

  it('half-close: after the peer ends, the stream can still write back', async () => {
    const { client, peer } = await pair();
    const stream = client.stream();
    const closed = once(stream, 'close');
    await peer.write('question');
    await peer.end();
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    await once(stream, 'end');  // (for await would destroy the stream at the end)
    expect(Buffer.concat(chunks).toString()).toBe('question');
    stream.end('answer');
    expect((await readAll(peer)).toString()).toBe('answer');
    await closed;
    expect(client.closed).toBe(true);
  });

  it('a slow peer bounds what the writer queues while 64 MiB are offered', async () => {
    const { client, peer } = await pair();
    const stream = client.stream();
    const chunk = randomBytes(MiB);
    const total = 64 * MiB;
    let largest = 0;
    const source = Readable.from((function* () {
      for (let offered = 0; offered < total; offered += MiB) {
        largest = Math.max(largest, stream.writableLength + client.writableLength);
        yield chunk;
      }
    })());
    const sent = pipeline(source, stream);
    let received = 0;
    let reads = 0;
    const hash = createHash('sha256');
    for (;;) {
      const piece = await peer.read();
      if (piece === null) break;
      received += piece.length;
      hash.update(piece);
      if (++reads % 16 === 0) await loop.sleep(1);  // a slow reader
    }
    expect(received).toBe(total);
    expect(hash.digest('hex')).toBe(sha256(...Array.from({ length: 64 }, () => chunk)));
    expect(largest).toBeLessThan(4 * MiB);
    await peer.end();
    stream.resume();
    await sent;
  });

  it('a paused stream stops reading, so the peer stalls instead of memory growing', async () => {
    const { client, peer } = await pair();
    const stream = client.stream();
    stream.pause();
    const payload = randomBytes(64 * MiB);
    let accepted = 0;
    const writing = (async () => {
      for (let offset = 0; offset < payload.length; offset += MiB) {
        await peer.write(payload.subarray(offset, offset + MiB));
        accepted += MiB;
      }
      await peer.end();
    })();
    await loop.sleep(300);
    expect(accepted).toBeLessThan(32 * MiB);  // socket buffers on both sides, and the stream's own
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    await writing;
    expect(sha256(...chunks)).toBe(sha256(payload));
  });

  it('a peer reset destroys the stream with ECONNRESET and its errno and syscall', async () => {
    const { client, peer } = await pair();
    const stream = client.stream();
    const closed = new Promise((resolve) => stream.once('close', resolve));  // (once() would reject on 'error')
    stream.resume();
    await client.write('unread');  // unread data makes the reset certain to surface
    await loop.sleep(20);
    peer.resetAndDestroy();
    const [error] = (await once(stream, 'error')) as [Error & { code: string; errno: number; syscall: string }];
    expect(error.code).toBe('ECONNRESET');
    expect(error.errno).toBeLessThan(0);
    expect(error.syscall).toBe('read');
    await closed;
    expect(client.closed).toBe(true);
  });

  it('destroy() closes the socket, and closing the socket destroys the stream', async () => {
    const first = await pair();
    first.client.stream().destroy();
    expect(first.client.closed).toBe(true);
    expect(await readAll(first.peer)).toHaveLength(0);
    const second = await pair();
    const stream = second.client.stream();
    second.client.close();
    await once(stream, 'close');
    expect(stream.destroyed).toBe(true);
  });

  it('closing the socket under a stream with writes in flight destroys it without an error', async () => {
    const { client } = await pair();  // the peer reads nothing: writes stay in flight
    const stream = client.stream();
    const errors: Error[] = [];
    stream.on('error', (error) => errors.push(error));
    const chunk = randomBytes(MiB);
    while (stream.write(chunk));
    const closed = once(stream, 'close');
    client.close();
    await closed;
    expect(errors).toEqual([]);
    expect(stream.destroyed).toBe(true);
  });

  it("setTimeout emits 'timeout' after silence and leaves the connection open", async () => {
    const { client, peer } = await pair();
    const stream = client.stream();
    stream.resume();
    let calls = 0;
    stream.setTimeout(50, () => (calls += 1));
    expect(stream.timeout).toBe(50);
    await once(stream, 'timeout');
    expect(calls).toBe(1);
    expect(client.closed).toBe(false);
    const data = once(stream, 'data');  // before writing: the chunk may arrive in the write's own batch
    await peer.write('still here');
    const [chunk] = (await data) as [Buffer];
    expect(chunk.toString()).toBe('still here');
    stream.setTimeout(0);
  });

  describe('node:http', () => {
    let httpServer: http.Server;
    let agent: http.Agent;
    beforeEach(() => {
      agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    });
    afterEach(() => {
      agent.destroy();
    });

    function request(port: number, options: http.RequestOptions, body?: Buffer): Promise<{ status: number; body: string; reused: boolean }> {
      return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, agent, ...options }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString(), reused: req.reusedSocket }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(body);
      });
    }

    it('answers a GET, a keep-alive second request on the same connection, and a 100 kB POST', async () => {
      let connections = 0;
      httpServer = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => res.end(req.method === 'POST' ? sha256(Buffer.concat(chunks)) : `hello ${req.url}`));
      });
      const listener = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
        connections += 1;
        httpServer.emit('connection', socket.stream());
      });
      const first = await request(listener.port, { path: '/one' });
      expect(first).toMatchObject({ status: 200, body: 'hello /one', reused: false });
      const second = await request(listener.port, { path: '/two' });
      expect(second).toMatchObject({ status: 200, body: 'hello /two', reused: true });
      const payload = randomBytes(100_000);
      const posted = await request(listener.port, { method: 'POST', path: '/upload', headers: { 'content-length': payload.length } }, payload);
      expect(posted).toMatchObject({ status: 200, body: sha256(payload), reused: true });
      expect(connections).toBe(1);
    });
  });

  it('tls.connect({ socket: stream }) exchanges data with a tls.Server fed its connections', async () => {
    const tlsServer = tls.createServer(certificate, (secure) => secure.pipe(secure));  // echo
    const listener = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
      tlsServer.emit('connection', socket.stream());
    });
    const client = await loop.connect({ host: '127.0.0.1', port: listener.port });
    const secure = tls.connect({ socket: client.stream(), ca: certificate.cert, servername: 'localhost' });
    await once(secure, 'secureConnect');
    expect(secure.authorized).toBe(true);
    const message = randomBytes(MiB);
    const chunks: Buffer[] = [];
    let length = 0;
    const echoed = new Promise<void>((resolve) => {
      secure.pipe(new Writable({
        write(chunk: Buffer, _encoding, callback) {
          chunks.push(chunk);
          length += chunk.length;
          if (length === message.length) resolve();
          callback();
        },
      }));
    });
    secure.write(message);
    await echoed;
    expect(sha256(...chunks)).toBe(sha256(message));
    secure.destroy();
  });
});
