// Arguments a caller controls in full: option getters, look-alike buffers, species constructors,
// values node:net and node:fs accept. Whatever they are, the call uses what it validated, or
// throws an argument error that names the argument.
import { closeSync, constants, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it, onTestFinished, vi } from 'vitest';

import { allocAligned, open, Socket } from '../lib/index.js';
import { backends, randomBytes, readBytes } from './helpers.js';

/** Options whose getters count their reads: each key read more than once is a key whose validated value may not be the one used. */
function countingReads<T extends object>(options: T): { options: T; reads: Map<PropertyKey, number> } {
  const reads = new Map<PropertyKey, number>();
  const proxy = new Proxy(options, {
    get(target, key, receiver) {
      reads.set(key, (reads.get(key) ?? 0) + 1);
      return Reflect.get(target, key, receiver);
    },
  });
  return { options: proxy, reads };
}

/** A scratch file's path, removed after the test. */
function scratchPath(what: string, backend: string): string {
  const path = join(tmpdir(), `twinloop-${what}-${process.pid}-${backend}.bin`);
  onTestFinished(() => rmSync(path, { force: true }));
  return path;
}

/** A property whose getter answers `good` on its first read and `bad` on every later one. */
function goodOnce(good: unknown, bad: unknown): PropertyDescriptor {
  let reads = 0;
  return { get: () => (++reads === 1 ? good : bad), enumerable: true };
}

describe.each(backends)('option getters on %s', (backend) => {
  it('listen and connect read each option of their options object once', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const listening = countingReads({ host: '127.0.0.1', port: 0, backlog: 16, reusePort: false, ipv6Only: false, idleTimeout: 1000, readableHighWaterMark: 4096, writableHighWaterMark: 4096, signal: new AbortController().signal });
    const server = await loop.listen(listening.options);
    const connecting = countingReads({ host: '127.0.0.1', port: server.port, idleTimeout: 1000, readableHighWaterMark: 4096, writableHighWaterMark: 4096, connectTimeout: 5000, family: 0 as const, autoSelectFamily: true, autoSelectFamilyAttemptTimeout: 250, signal: new AbortController().signal });
    const client = await loop.connect(connecting.options);
    client.close();
    for (const reads of [listening.reads, connecting.reads]) {
      expect(Object.fromEntries([...reads].filter(([, count]) => count > 1).map(([key, count]) => [String(key), count]))).toEqual({});
    }
  });

  it('a listen idleTimeout that is valid when first read serves the connection with it', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const options = Object.defineProperties({ host: '127.0.0.1', port: 0 }, { idleTimeout: goodOnce(1000, -1) });
    const server = await loop.listen(options, async (socket) => {
      await socket.write('served');
    });
    const client = await loop.connect({ host: '127.0.0.1', port: server.port });
    expect(String(await readBytes(client, 6))).toBe('served');
  });

  it('a connect idleTimeout that is valid when first read still lets the connect resolve', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const options = Object.defineProperties({ host: '127.0.0.1', port: server.port }, { idleTimeout: goodOnce(1000, -1) });
    const client = await loop.connect(options);
    expect(client.closed).toBe(false);
  });

  it('a readableHighWaterMark that is valid when first read is the one the socket gets', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const options = Object.defineProperties({ host: '127.0.0.1', port: server.port }, { readableHighWaterMark: goodOnce(1024, -1) });
    const client = await loop.connect(options);
    expect(client.readableHighWaterMark).toBe(1024);
  });

  it('a port or path that is valid when first read is the one listened on and connected to', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const server = await loop.listen(Object.defineProperties({ host: '127.0.0.1' }, { port: goodOnce(0, 'x') }) as { host: string; port: number });
    const client = await loop.connect(Object.defineProperties({ host: '127.0.0.1' }, { port: goodOnce(server.port, 70000) }) as { host: string; port: number });
    expect(client.closed).toBe(false);
    const path = `/tmp/twinloop-arguments-${process.pid}-${backend}.sock`;
    const unix = await loop.listen(Object.defineProperties({}, { path: goodOnce(path, `${path}\0evil`) }) as { path: string });
    expect(unix.address().address).toBe(path);
  });

  it('a connection the server cannot wrap in a Socket is closed and reported as the server\'s error, not thrown from the loop', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const boom = new Error('cannot wrap');
    const spy = vi.spyOn(Socket.prototype, 'setIdleTimeout').mockImplementation(() => {
      throw boom;
    });
    try {
      const handler = vi.fn();
      const server = await loop.listen({ host: '127.0.0.1', port: 0, idleTimeout: 1000 }, handler);
      const reported = new Promise((resolve) => server.once('error', resolve));
      spy.mockClear();
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      expect(await reported).toBe(boom);
      // The server closed its end: the client reads EOF (or a reset), not silence.
      expect(await client.read().catch(() => null)).toBeNull();
      expect(handler).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });
});

describe.each(backends)('buffer arguments on %s', (backend) => {
  it('an object that only inherits from Uint8Array.prototype is refused by every read and write, naming the argument', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    const accepted = loop.proactor.accept(server);
    const client = await loop.connect({ host: '127.0.0.1', port: server.port });
    await accepted;
    const fake = Object.create(Uint8Array.prototype, { length: { value: 4 } }) as Uint8Array;
    const refused = (name: string) => expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining(`"${name}"`) });
    expect(() => loop.reactor.tryWrite(client, fake)).toThrow(refused('buffer'));
    expect(() => loop.reactor.tryRead(client, fake)).toThrow(refused('buffer'));
    await expect(Promise.resolve().then(() => loop.proactor.write(client, fake))).rejects.toThrow(refused('buffer'));
    await expect(Promise.resolve().then(() => client.write(fake))).rejects.toThrow(refused('data'));
    const file = await loop.openFile(scratchPath('fake', backend), { flags: 'w+' });
    onTestFinished(() => file.close());
    await expect(file.write(fake)).rejects.toThrow(refused('buffer'));
    await expect(file.read(fake)).rejects.toThrow(refused('buffer'));
  });
});

describe.each(backends)('file buffers on %s', (backend) => {
  const path = (what: string): string => scratchPath(what, backend);

  it('a file write takes exactly the bytes asked for, whatever species constructor the buffer has', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const file = await loop.openFile(path('species'), { flags: 'w+' });
    onTestFinished(() => file.close());
    const mine = new Uint8Array(Buffer.from('abcd'));
    Object.defineProperty(mine, 'constructor', { value: { [Symbol.species]: function () { return new Uint8Array(1 << 20).fill(0x5a); } } });
    expect((await file.write(mine, 0, 4, 0)).bytesWritten).toBe(4);
    expect((await file.write(mine, 1, 2, 4)).bytesWritten).toBe(2);
    const back = Buffer.alloc(16);
    expect((await file.read(back, 0, 16, 0)).bytesRead).toBe(6);
    expect(String(back.subarray(0, 6))).toBe('abcdbc');
  });

  it('a file write of a view its resizable buffer shrank away from writes nothing, as node:fs', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const file = await loop.openFile(path('oob'), { flags: 'w+' });
    onTestFinished(() => file.close());
    // ES2024's resizable ArrayBuffer, which Node 20 has and the project's ES2022 typings do not.
    const Resizable = ArrayBuffer as unknown as new (length: number, options: { maxByteLength: number }) => ArrayBuffer & { resize(length: number): void };
    const resizable = new Resizable(1 << 16, { maxByteLength: 1 << 17 });
    const view = new Uint8Array(resizable, 4096, 4096);
    resizable.resize(0);
    expect((await file.write(view)).bytesWritten).toBe(0);
  });
});

// O_DIRECT needs a filesystem that takes it: tmpfs refuses it with EINVAL even from node:fs, so the
// file lives under the project's directory, and the test says so when this one refuses it too.
const directPath = join(process.cwd(), `.twinloop-direct-${process.pid}.bin`);
const directSupported = ((): boolean => {
  try {
    writeFileSync(directPath, Buffer.alloc(0));
    const fd = openSync(directPath, constants.O_RDWR | constants.O_DIRECT);
    try {
      return writeSync(fd, allocAligned(4096), 0, 4096, 0) === 4096;
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  } finally {
    rmSync(directPath, { force: true });
  }
})();

describe.each(backends)('direct file I/O on %s', (backend) => {
  it.skipIf(!directSupported)('a direct: true file writes and reads aligned buffers of 4 KiB to 1 MiB at aligned offsets, as node:fs does', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const path = `${directPath}.${backend}`;
    onTestFinished(() => rmSync(path, { force: true }));
    const file = await loop.openFile(path, { flags: 'w+', direct: true });
    onTestFinished(() => file.close());
    let position = 0;
    for (const size of [4096, 65536, 1 << 20]) {
      const data = allocAligned(size);
      data.set(randomBytes(size));
      expect((await file.write(data, 0, size, position)).bytesWritten).toBe(size);
      const back = allocAligned(size);
      expect((await file.read(back, 0, size, position)).bytesRead).toBe(size);
      expect(back.equals(data)).toBe(true);
      position += size;
    }
  });
});

describe.each(backends)('addresses on %s', (backend) => {
  it('an IPv6 address with a zone id is refused up front, naming the argument, not failed by the kernel with EINVAL', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const refused = (name: string) => expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining(`"${name}"`) });
    await expect(loop.listen({ host: '::1%lo', port: 0 })).rejects.toThrow(refused('options.host'));
    await expect(loop.connect({ host: '::1%lo', port: 9 })).rejects.toThrow(refused('options.host'));
    await expect(loop.connect({ host: '::1', port: 9, localAddress: '::1%lo' })).rejects.toThrow(refused('options.localAddress'));
  });
});

describe.each(backends)('host name lookups on %s', (backend) => {
  const neverAnswers = (): void => {};

  it('aborting a connect while its host name resolves rejects at once with an AbortError, as node:net', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const controller = new AbortController();
    const connecting = loop.connect({ host: 'example.invalid', port: 80, lookup: neverAnswers, signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    await expect(connecting).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
  });

  it('closing the loop while a connect\'s host name resolves rejects the connect with ERR_LOOP_CLOSED', async () => {
    const loop = open({ backend });
    const connecting = loop.connect({ host: 'example.invalid', port: 80, lookup: neverAnswers });
    setTimeout(() => void loop.close(), 20);
    await expect(connecting).rejects.toMatchObject({ code: 'ERR_LOOP_CLOSED' });
  });
});

describe.each(backends)('file option getters on %s', (backend) => {
  it('openFile and a file operation read each option of their options object once', async () => {
    const loop = open({ backend });
    onTestFinished(() => loop.close());
    const opening = countingReads({ flags: 'w+' as const, mode: 0o600, direct: false, signal: new AbortController().signal });
    const file = await loop.openFile(scratchPath('getters', backend), opening.options);
    onTestFinished(() => file.close());
    const writing = countingReads({ signal: new AbortController().signal });
    await file.write(Buffer.from('x'), 0, 1, 0, writing.options);
    for (const reads of [opening.reads, writing.reads]) {
      expect(Object.fromEntries([...reads].filter(([, count]) => count > 1).map(([key, count]) => [String(key), count]))).toEqual({});
    }
  });
});
