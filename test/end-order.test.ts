// end() sends FIN only after every write made before it has gone out, whichever API made the write
// and whether or not it was awaited: the peer gets every byte, in order, then EOF. A write made
// after end() fails with ERR_STREAM_WRITE_AFTER_END, from every API, and puts no byte on the wire.
// The peer is Node's own `net`, so that what arrives is judged by a socket outside twinloop.
import { once } from 'node:events';
import * as net from 'node:net';

import { afterEach, describe, expect, it } from 'vitest';

import { open, type Loop, type Socket } from '../lib/index.js';
import { backends, outcome } from './helpers.js';

// More than the socket buffers take at once on loopback (epoll lost ~4 MiB of 8 MiB), so that
// part of each write is still queued in the loop when end() is called.
const kBig = 8 * 1024 * 1024;

function pattern(length: number, seed: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 131 + (i >>> 13) + seed) & 0xff;
  return bytes;
}

interface Peer {
  /** Every byte received, once the peer has read EOF (rejects on a reset or after 20 s). */
  received: Promise<Buffer>;
  close(): void;
}

// A node:net server on 127.0.0.1 that takes one connection and reads it to EOF.
async function listenPeer(): Promise<{ port: number; peer: Peer }> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  let accepted: net.Socket | undefined;
  const received = new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the peer saw no EOF within 20 s')), 20_000);
    server.once('connection', (socket) => {
      accepted = socket;
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      socket.on('end', () => {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks));
      });
    });
  });
  received.catch(() => {});
  const { port } = server.address() as net.AddressInfo;
  return { port, peer: { received, close: () => (accepted?.destroy(), server.close()) } };
}

// Compared by length and first differing offset: a failure names where the stream went wrong
// instead of printing megabytes.
function expectSameBytes(actual: Buffer, expected: Buffer): void {
  let differsAt = -1;
  const common = Math.min(actual.length, expected.length);
  for (let i = 0; i < common; i++) {
    if (actual[i] !== expected[i]) {
      differsAt = i;
      break;
    }
  }
  expect({ length: actual.length, differsAt }).toEqual({ length: expected.length, differsAt: -1 });
}

describe.each(backends)('end() after writes on %s', (backend) => {
  let loop: Loop;
  let peer: Peer | undefined;
  afterEach(async () => {
    peer?.close();
    peer = undefined;
    await loop?.close();
  });

  async function connect(): Promise<Socket> {
    loop = open({ backend });
    const listening = await listenPeer();
    peer = listening.peer;
    return loop.connect({ host: '127.0.0.1', port: listening.port });
  }

  it('sends FIN only after an un-awaited proactor write has gone out whole', async () => {
    const socket = await connect();
    const data = pattern(kBig, 1);
    const written = outcome(loop.proactor.write(socket, data));
    const ended = outcome(socket.end());
    expectSameBytes(await peer!.received, data);
    expect(await written).toEqual({ value: kBig });
    expect(await ended).toEqual({ value: undefined });
  });

  it('sends FIN only after several un-awaited proactor writes, in order', async () => {
    const socket = await connect();
    const pieces = [pattern(kBig / 2, 2), pattern(1000, 3), pattern(kBig / 2, 4)];
    const written = pieces.map((piece) => outcome(loop.proactor.write(socket, piece)));
    const ended = outcome(socket.end());
    expectSameBytes(await peer!.received, Buffer.concat(pieces));
    expect(await Promise.all(written)).toEqual(pieces.map((piece) => ({ value: piece.length })));
    expect(await ended).toEqual({ value: undefined });
  });

  it('sends FIN only after an un-awaited socket.write has gone out whole', async () => {
    const socket = await connect();
    const data = pattern(kBig, 5);
    const written = outcome(socket.write(data));
    const ended = outcome(socket.end());
    expectSameBytes(await peer!.received, data);
    expect(await written).toEqual({ value: undefined });
    expect(await ended).toEqual({ value: undefined });
  });

  it('end(data) sends its data after the writes before it, then FIN', async () => {
    const socket = await connect();
    const first = pattern(kBig, 6);
    const last = pattern(kBig / 2, 7);
    const written = outcome(loop.proactor.write(socket, first));
    const ended = outcome(socket.end(last));
    expectSameBytes(await peer!.received, Buffer.concat([first, last]));
    expect(await written).toEqual({ value: kBig });
    expect(await ended).toEqual({ value: undefined });
  });

  it('after a partial tryWrite, end() sends what the kernel took and a queued rest, then FIN', async () => {
    const socket = await connect();
    const data = pattern(4 * kBig, 8);
    const taken = loop.reactor.tryWrite(socket, data) ?? 0;
    expect(taken).toBeLessThan(data.length);  // the buffers took only part of it
    const rest = pattern(kBig, 9);
    const written = outcome(loop.proactor.write(socket, rest));
    const ended = outcome(socket.end());
    expectSameBytes(await peer!.received, Buffer.concat([data.subarray(0, taken), rest]));
    expect(await written).toEqual({ value: kBig });
    expect(await ended).toEqual({ value: undefined });
  });

  it('after a partial tryWrite alone, end() sends FIN behind the bytes the kernel took', async () => {
    const socket = await connect();
    const data = pattern(4 * kBig, 10);
    const taken = loop.reactor.tryWrite(socket, data) ?? 0;
    expect(taken).toBeLessThan(data.length);
    const ended = outcome(socket.end());
    expectSameBytes(await peer!.received, data.subarray(0, taken));
    expect(await ended).toEqual({ value: undefined });
  });

  it('through socket.stream(), end() sends FIN after the writes before it', async () => {
    const socket = await connect();
    const stream = socket.stream();
    const data = pattern(kBig, 11);
    stream.write(data);
    stream.end();
    expectSameBytes(await peer!.received, data);
  });

  it('refuses every write made after end() with ERR_STREAM_WRITE_AFTER_END, sending none of it', async () => {
    const socket = await connect();
    const data = pattern(kBig, 12);
    const written = outcome(loop.proactor.write(socket, data));
    const ended = outcome(socket.end());
    const late = Buffer.from('late');
    const refused = { name: 'Error', code: 'ERR_STREAM_WRITE_AFTER_END' };
    const afterEnd = expect.objectContaining({ code: 'ERR_STREAM_WRITE_AFTER_END' });
    expect(() => loop.reactor.tryWrite(socket, late)).toThrow(afterEnd);
    expect(await outcome(socket.write(late))).toEqual(refused);
    expect(await outcome(loop.proactor.write(socket, late))).toEqual(refused);
    expect(await new Promise((resolve) => loop.proactor.write(socket, late, (error) => resolve((error as Error & { code?: string }).code)))).toBe(
      'ERR_STREAM_WRITE_AFTER_END',
    );
    expectSameBytes(await peer!.received, data);
    expect(await written).toEqual({ value: kBig });
    expect(await ended).toEqual({ value: undefined });
    // And still after the FIN went out.
    expect(await outcome(loop.proactor.write(socket, late))).toEqual(refused);
    expect(() => loop.reactor.tryWrite(socket, late)).toThrow(afterEnd);
  });
});
