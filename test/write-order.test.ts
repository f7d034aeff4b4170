// The order of a socket's bytes when the two patterns write to it: a reactor tryWrite never
// overtakes a proactor write submitted before it, never follows a torn one, and a reactor waiting
// for 'writable' meanwhile is told once the queue has drained. Also the queues themselves: many
// operations queued on one socket all complete, in order.
import { afterEach, describe, expect, it } from 'vitest';

import { open, type Loop, type Socket } from '../lib/index.js';
import { backends, readBytes } from './helpers.js';

async function connectedPair(loop: Loop): Promise<{ client: Socket; peer: Socket }> {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 });
  const accepted = loop.proactor.accept(server);
  const client = await loop.connect({ host: '127.0.0.1', port: server.port });
  const peer = await accepted;
  server.close();
  return { client, peer };
}

/** Calls tryWrite(socket, bytes) from 'writable' callbacks until it is taken whole. */
function tryWriteWhenWritable(
  loop: Loop,
  socket: Socket,
  bytes: Buffer,
  onCallback: () => void = () => {},
): Promise<{ refusals: number }> {
  return new Promise((resolve, reject) => {
    let rest = bytes;
    let refusals = 0;
    loop.reactor.watch(socket, 'writable', () => {
      onCallback();
      try {
        const n = loop.reactor.tryWrite(socket, rest);
        if (n === null) {
          ++refusals;
          return;
        }
        rest = rest.subarray(n);
        if (rest.length > 0) return;
        loop.reactor.unwatch(socket, 'writable');
        resolve({ refusals });
      } catch (error) {
        loop.reactor.unwatch(socket, 'writable');
        reject(error);
      }
    });
  });
}

describe.each(backends)('write order on %s', (backend) => {
  let loop: Loop;
  afterEach(async () => {
    await loop?.close();
  });

  it('tryWrite does not overtake a small proactor write submitted before it', async () => {
    loop = open({ backend });
    const { client, peer } = await connectedPair(loop);
    const writing = loop.proactor.write(client, Buffer.from('first '));
    const n = loop.reactor.tryWrite(client, Buffer.from('second'));
    await writing;
    // Taken at once only where the write before it had already gone out whole (epoll's inline
    // send); else refused, and sent once the socket is reported writable.
    if (n === null) await tryWriteWhenWritable(loop, client, Buffer.from('second'));
    else expect(n).toBe(6);
    expect((await readBytes(peer, 12)).toString()).toBe('first second');
  });

  it('tryWrite behind a queued 8 MiB write is refused, then writable fires once it is done and the bytes follow it', async () => {
    loop = open({ backend });
    const { client, peer } = await connectedPair(loop);
    const big = Buffer.alloc(8 << 20);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
    let writeDone = false;
    const writing = new Promise<void>((resolve, reject) => {
      loop.proactor.write(client, big, (error) => {
        writeDone = true;
        if (error) reject(error);
        else resolve();
      });
    });
    // The peer reads nothing yet: the write cannot have finished, whatever the backend.
    expect(loop.reactor.tryWrite(client, Buffer.from('tail'))).toBeNull();
    const received = readBytes(peer, big.length + 4);
    let calledBeforeDone = false;
    const tail = tryWriteWhenWritable(loop, client, Buffer.from('tail'), () => {
      if (!writeDone) calledBeforeDone = true;
    });
    await writing;
    const { refusals } = await tail;
    const bytes = await received;
    expect(calledBeforeDone).toBe(false);
    expect(refusals).toBe(0);
    expect(bytes.length).toBe(big.length + 4);
    expect(bytes.subarray(0, big.length).equals(big)).toBe(true);
    expect(bytes.subarray(big.length).toString()).toBe('tail');
  });

  it('tryWrite after a torn write fails with EPIPE and sends nothing', async () => {
    loop = open({ backend });
    const { client, peer } = await connectedPair(loop);
    const controller = new AbortController();
    const writing = loop.proactor.write(client, Buffer.alloc(32 << 20, 0x41), { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 50));
    controller.abort();
    const error = (await writing.then(
      () => null,
      (reason: unknown) => reason,
    )) as (Error & { bytesWritten?: number }) | null;
    expect(error?.name).toBe('AbortError');
    const sent = error!.bytesWritten!;
    expect(sent).toBeGreaterThan(0);
    // The peer takes the torn prefix, so that the socket has room again.
    const prefix = await readBytes(peer, sent);
    expect(prefix.length).toBe(sent);
    expect(() => loop.reactor.tryWrite(client, Buffer.from('X'))).toThrow(expect.objectContaining({ code: 'EPIPE' }));
    client.end();
    const after = await readBytes(peer, 1);
    expect(after.length).toBe(0);
  });
});

describe.each(backends)('queued operations on %s', (backend) => {
  let loop: Loop;
  afterEach(async () => {
    await loop?.close();
  });

  // Completing a queued read used to move every read behind it (O(N^2) for N reads: 160k took
  // 9.3 s on epoll); that it no longer does is test/native/operation_queue_test.cc's to check,
  // without a clock. Here: a deep queue loses, duplicates and reorders nothing.
  const kReads = 50_000;
  it(`${kReads} one-byte proactor reads queued on one socket all complete, in order`, async () => {
    loop = open({ backend });
    const { client, peer } = await connectedPair(loop);
    const into = Buffer.alloc(kReads);
    const order: number[] = [];
    let failures = 0;
    const done = new Promise<void>((resolve) => {
      for (let i = 0; i < kReads; ++i) {
        loop.proactor.read(client, into.subarray(i, i + 1), (error, n) => {
          if (error || n !== 1) ++failures;
          order.push(i);
          if (order.length === kReads) resolve();
        });
      }
    });
    const sent = Buffer.alloc(kReads);
    for (let i = 0; i < kReads; ++i) sent[i] = (i * 7 + (i >> 8)) & 0xff;
    await loop.proactor.write(peer, sent);
    await done;
    expect(failures).toBe(0);
    expect(order.every((index, position) => index === position)).toBe(true);
    expect(into.equals(sent)).toBe(true);
  });
});
