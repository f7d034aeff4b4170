// The buffer boundary (issue 13, items 1, 2 and 4): whatever memory a caller hands over — shared,
// resizable, detached or transferred while the kernel works — nothing reads or writes memory it
// should not, no byte is lost or invented, and lengths past 4 GiB are not cut short.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends, outcome, randomBytes, rawNativeLoop, readBytes, sha256 } from './helpers.js';

const directory = mkdtempSync(path.join(tmpdir(), 'twinloop-buffers-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

/** A view of `bytes` copied into a SharedArrayBuffer, at an offset so that address 0 + offset is wrong. */
function sharedCopy(bytes: Uint8Array): Uint8Array {
  const view = new Uint8Array(new SharedArrayBuffer(bytes.length + 16), 16, bytes.length);
  view.set(bytes);
  return view;
}

// ES2024's resizable ArrayBuffer, which Node 20 has and the project's ES2022 typings do not.
const ResizableArrayBuffer = ArrayBuffer as unknown as new (length: number, options: { maxByteLength: number }) => ArrayBuffer;

/** A length-tracking view over a resizable ArrayBuffer holding `bytes`. */
function resizableCopy(bytes: Uint8Array, maxByteLength = bytes.length * 2): Uint8Array {
  const buffer = new ResizableArrayBuffer(bytes.length, { maxByteLength });
  const view = new Uint8Array(buffer);
  view.set(bytes);
  return view;
}

function transfer(view: Uint8Array): ArrayBuffer {
  return structuredClone(view.buffer as ArrayBuffer, { transfer: [view.buffer as ArrayBuffer] });
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe.each(backends)('buffers on %s', (backend) => {
  let loop: Loop;
  let server: Server;
  let accepted: Promise<Socket>;
  let client: Socket;
  let peer: Socket;
  beforeEach(async () => {
    loop = open({ backend });
    server = await loop.listen({ host: '127.0.0.1', port: 0 });
    accepted = loop.proactor.accept(server);
    client = await loop.connect({ host: '127.0.0.1', port: server.port });
    peer = await accepted;
  });
  afterEach(async () => {
    await loop.close();
  });

  /** Bytes the peer reads through the proactor API until `length` arrived. */
  async function peerReads(length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    let received = 0;
    const chunk = Buffer.alloc(256 * 1024);
    while (received < length) {
      const n = await loop.proactor.read(peer, chunk);
      if (n === 0) break;
      chunk.copy(out, received, 0, n);
      received += n;
    }
    return out.subarray(0, received);
  }

  it('a SharedArrayBuffer view is sent as its own bytes by tryWrite, proactor.write and socket.write', async () => {
    const data = randomBytes(3000);
    const view = sharedCopy(data);
    const n = loop.reactor.tryWrite(client, view);
    expect(n).toBe(data.length);
    expect(await loop.proactor.write(client, view)).toBe(data.length);
    await client.write(view);
    expect(sha256(await peerReads(3 * data.length))).toBe(sha256(data, data, data));
  });

  it('a SharedArrayBuffer view receives the bytes read by tryRead and proactor.read', async () => {
    const data = randomBytes(2000);
    await loop.proactor.write(peer, data);
    const into = sharedCopy(Buffer.alloc(data.length));
    let got = 0;
    while (got < data.length) {
      const n = loop.reactor.tryRead(client, into.subarray(got));
      if (n === null) await tick();
      else got += n;
    }
    expect(Buffer.from(into).equals(data)).toBe(true);
    const second = sharedCopy(Buffer.alloc(data.length));
    await loop.proactor.write(peer, data);
    let filled = 0;
    while (filled < data.length) filled += await loop.proactor.read(client, second.subarray(filled));
    expect(Buffer.from(second).equals(data)).toBe(true);
  });

  it('tryRead and tryWrite move only the offset and length they are given, and refuse a range outside the buffer', async () => {
    const data = randomBytes(100);
    expect(loop.reactor.tryWrite(client, data, 10, 30)).toBe(30);
    expect(loop.reactor.tryWrite(client, data, 95)).toBe(5);  // the length defaults to the rest
    const into = Buffer.alloc(64, 0xee);
    let got = 0;
    while (got < 35) {
      const n = loop.reactor.tryRead(peer, into, 20 + got, 35 - got);
      if (n === null) await tick();
      else got += n!;
    }
    expect(into.subarray(20, 55).equals(Buffer.concat([data.subarray(10, 40), data.subarray(95)]))).toBe(true);
    expect(into.subarray(0, 20).every((byte) => byte === 0xee) && into.subarray(55).every((byte) => byte === 0xee)).toBe(true);
    const range = (name: string) => expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining(`"${name}"`) });
    expect(() => loop.reactor.tryWrite(client, data, 101)).toThrow(range('offset'));
    expect(() => loop.reactor.tryWrite(client, data, -1, 1)).toThrow(range('offset'));
    expect(() => loop.reactor.tryWrite(client, data, 90, 11)).toThrow(range('length'));
    expect(() => loop.reactor.tryRead(peer, into, 1.5)).toThrow(range('offset'));
    expect(() => loop.reactor.tryRead(peer, into, 64)).toThrow(range('length'));  // 0 bytes would look like EOF
    expect(() => loop.reactor.tryRead(peer, into, 0, 2 ** 32)).toThrow(range('length'));
    expect(() => loop.reactor.tryWrite(client, data, '1' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  it('a view whose length getter lies reaches no byte past its real end: the native side checks the range too', async () => {
    class Liar extends Uint8Array {
      override get length(): number {
        return 1 << 20;
      }
    }
    const liar = new Liar(16);
    expect(() => loop.reactor.tryWrite(client, liar, 0, 4096)).toThrow(TypeError);
    expect(() => loop.reactor.tryRead(client, liar, 8, 4096)).toThrow(TypeError);
    const raw = rawNativeLoop(backend);
    try {
      expect(() => raw.tryWrite(0, Buffer.alloc(8), 4, 5)).toThrow(TypeError);
      expect(() => raw.tryWrite(0, Buffer.alloc(8), 2 ** 53, 1)).toThrow(TypeError);
      expect(() => raw.tryRead(0, Buffer.alloc(8), 1)).toThrow(TypeError);
    } finally {
      raw.close();
    }
    await client.write('after');
    expect(String(await peerReads(5))).toBe('after');
  });

  it('a resizable ArrayBuffer view is written and read as its current bytes', async () => {
    const data = randomBytes(4096);
    await client.write(resizableCopy(data));
    expect((await peerReads(data.length)).equals(data)).toBe(true);
    const into = resizableCopy(Buffer.alloc(data.length));
    await loop.proactor.write(peer, data);
    let filled = 0;
    while (filled < data.length) filled += await loop.proactor.read(client, into.subarray(filled));
    expect(Buffer.from(into).equals(data)).toBe(true);
  });

  it('a DataView is refused with ERR_INVALID_ARG_TYPE, a detached buffer moves nothing, and nothing is queued', async () => {
    const view = new DataView(new ArrayBuffer(8));
    expect(() => loop.reactor.tryWrite(client, view as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => client.write(view as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    const detached = Buffer.alloc(4);
    transfer(detached);
    expect(() => loop.reactor.tryRead(client, detached)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    await client.write(detached);  // 0 bytes: nothing to send
    await client.write('after');
    expect(String(await peerReads(5))).toBe('after');
  });

  it('a buffer transferred while a proactor.read waits gets none of the bytes: the read rejects, nothing else is written', async () => {
    const buffer = Buffer.alloc(64 * 1024);
    const reading = outcome(loop.proactor.read(client, buffer));
    await tick();
    const moved = new Uint8Array(transfer(buffer));
    await loop.proactor.write(peer, Buffer.alloc(1000, 0x5a));
    expect(await reading).toEqual({ name: 'Error', code: 'ERR_INVALID_STATE' });
    expect(moved.every((byte) => byte === 0)).toBe(true);
    expect(client.closed).toBe(true);  // the stream lost bytes: it cannot go on
  });

  it('a buffer transferred while a write is queued changes nothing the peer receives', async () => {
    // Larger than the socket buffers, so that most of it waits in the loop while it moves.
    const data = randomBytes(16 * 1024 * 1024);
    const mine = Buffer.from(data);
    const proactorWrite = loop.proactor.write(client, mine);
    const mine2 = Buffer.from(data);
    const netWrite = client.write(mine2);
    const moved = [new Uint8Array(transfer(mine)), new Uint8Array(transfer(mine2))];
    moved[0]!.fill(0xcd);
    moved[1]!.fill(0xcd);
    const received = await peerReads(2 * data.length);
    expect(await proactorWrite).toBe(data.length);
    await netWrite;
    expect(sha256(received)).toBe(sha256(data, data));
  });

  it('transfers at random moments during writes never change what the peer receives', async () => {
    const data = randomBytes(256 * 1024);
    for (let round = 0; round < 20; round += 1) {
      const source = Buffer.from(data);
      const writing = round % 2 === 0 ? loop.proactor.write(client, source) : client.write(source);
      for (let i = Math.floor(Math.random() * 3); i > 0; i -= 1) await tick();
      new Uint8Array(transfer(source)).fill(0xcd);
      expect(sha256(await peerReads(data.length))).toBe(sha256(data));
      await writing;
    }
  });

  it('a transfer at a random moment of a read either finds the bytes delivered or loses them loudly', async () => {
    const data = randomBytes(1000);
    for (let round = 0; round < 20; round += 1) {
      const into = Buffer.alloc(data.length);
      const reading = outcome(loop.proactor.read(client, into));
      const sending = (async () => {
        for (let i = Math.floor(Math.random() * 3); i > 0; i -= 1) await tick();
        await loop.proactor.write(peer, data);
      })();
      for (let i = Math.floor(Math.random() * 3); i > 0; i -= 1) await tick();
      const moved = Buffer.from(transfer(into));
      await sending;
      const result = await reading;
      if ('value' in result) {
        // Completed before the transfer: the bytes moved with the memory.
        expect(moved.subarray(0, result.value as number).equals(data.subarray(0, result.value as number))).toBe(true);
        if ((result.value as number) < data.length) break;  // the rest waits in the socket: stop here
      } else {
        expect(result).toEqual({ name: 'Error', code: 'ERR_INVALID_STATE' });
        expect(moved.every((byte) => byte === 0)).toBe(true);
        expect(client.closed).toBe(true);
        await loop.close();
        loop = open({ backend });
        server = await loop.listen({ host: '127.0.0.1', port: 0 });
        accepted = loop.proactor.accept(server);
        client = await loop.connect({ host: '127.0.0.1', port: server.port });
        peer = await accepted;
      }
    }
  });

  it('a file write whose buffer is transferred writes the bytes it was given; a file read into one rejects', async () => {
    const file = path.join(directory, `${backend}-transfer.bin`);
    const data = randomBytes(1024 * 1024);
    const handle = await loop.openFile(file, { flags: 'w+' });
    const source = Buffer.from(data);
    const writing = handle.write(source, 0, source.length, 0);
    transfer(source);
    expect((await writing).bytesWritten).toBe(data.length);
    await handle.sync();
    expect(sha256(readFileSync(file))).toBe(sha256(data));
    const into = Buffer.alloc(data.length);
    const reading = outcome(handle.read(into, 0, into.length, 0));
    const moved = new Uint8Array(transfer(into));
    expect(await reading).toEqual({ name: 'Error', code: 'ERR_INVALID_STATE' });
    expect(moved.every((byte) => byte === 0)).toBe(true);
    await handle.close();
  });

  it('a file read into a SharedArrayBuffer view gets the file bytes', async () => {
    const file = path.join(directory, `${backend}-shared.bin`);
    const data = randomBytes(100_000);
    writeFileSync(file, data);
    const handle = await loop.openFile(file);
    const into = sharedCopy(Buffer.alloc(data.length));
    expect((await handle.read(into, 0, into.length, 0)).bytesRead).toBe(data.length);
    expect(Buffer.from(into).equals(data)).toBe(true);
    await handle.close();
  });

  it('a gathered write (SocketStream._writev) sends its pieces back to back, whatever memory they are in', async () => {
    const pieces = [randomBytes(100), randomBytes(70_000), randomBytes(1)];
    const views = [pieces[0]!, sharedCopy(pieces[1]!), resizableCopy(pieces[2]!)];
    const written = await new Promise<Error | null>((resolve) => {
      if (client.writeThen(views, resolve)) resolve(null);
    });
    expect(written).toBeNull();
    expect(sha256(await peerReads(70_101))).toBe(sha256(...pieces));
  });

  it('the native gathered write refuses what is not an array of views, and a detached piece moves nothing', async () => {
    const raw = rawNativeLoop(backend);
    try {
      expect(() => raw.writeGathered(0, 'abc' as never, 1)).toThrow(TypeError);
      expect(() => raw.writeGathered(0, [Buffer.from('a'), {} as never], 1)).toThrow(TypeError);
    } finally {
      raw.close();
    }
    const gone = new Uint8Array(16);
    transfer(gone);
    await new Promise<Error | null>((resolve) => {
      if (client.writeThen([gone, Buffer.from('ok')], resolve)) resolve(null);
    });
    expect(String(await readBytes(peer, 2))).toBe('ok');
  });

  it('proactor.write refuses more than 1 GiB with a RangeError, before any I/O', async () => {
    const big = new Uint8Array(new ArrayBuffer(2 ** 30 + 1));
    expect(() => loop.proactor.write(client, big)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    await client.write('ok');
    expect(String(await readBytes(peer, 2))).toBe('ok');
  });
});

// Allocates 4 GiB (and the loop copies it in 1 GiB pieces): one backend at a time, alone.
describe.sequential.each(backends)('4 GiB on %s', (backend) => {
  it('socket.write of exactly 4 GiB delivers every byte, in order', { timeout: 120_000 }, async () => {
    const loop = open({ backend });
    try {
      const server = await loop.listen({ host: '127.0.0.1', port: 0 });
      const accepting = loop.proactor.accept(server);
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const peer = await accepting;
      const size = 2 ** 32;
      const data = Buffer.alloc(size);  // zero pages: only the markers below cost memory
      const markers = [0, 2 ** 30 - 1, 2 ** 30, 2 ** 31 + 7, size - 1];
      markers.forEach((offset, i) => (data[offset] = i + 1));
      const writing = client.write(data);
      const chunk = Buffer.alloc(4 * 1024 * 1024);
      const seen = new Map<number, number>();
      let received = 0;
      while (received < size) {
        const n = await loop.proactor.read(peer, chunk);
        if (n === 0) break;
        for (const offset of markers) if (offset >= received && offset < received + n) seen.set(offset, chunk[offset - received]!);
        received += n;
      }
      await writing;
      expect(received).toBe(size);
      expect([...seen.entries()]).toEqual(markers.map((offset, i) => [offset, i + 1]));
    } finally {
      await loop.close();
    }
  });
});
