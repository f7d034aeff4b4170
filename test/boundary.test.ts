// The boundary a JavaScript caller controls (issue 13): handles that know their loop, a handler
// ended by its loop closing, paths with NUL, zero-length reads, Unix socket names, and the
// README's own example. Each suite runs on every backend.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type BackendName, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends, listenEcho, rawNativeLoop, readBytes } from './helpers.js';

const run = promisify(execFile);
const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const root = fileURLToPath(new URL('..', import.meta.url));

/** A server, a client connected to it and the server's side of that connection. */
async function connectedPair(loop: Loop): Promise<{ server: Server; client: Socket; accepted: Socket }> {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 });
  const client = await loop.connect({ host: '127.0.0.1', port: server.port });
  const accepted = await loop.proactor.accept(server);
  return { server, client, accepted };
}

/** A loop per test, closed after it; with `directory`, a scratch directory removed after it. */
function useLoop(backend: BackendName): { readonly loop: Loop; readonly directory: string } {
  let loop: Loop | undefined;
  let directory: string | undefined;
  beforeEach(() => {
    loop = open({ backend });
  });
  afterEach(async () => {
    await loop?.close();
    if (directory !== undefined) rmSync(directory, { recursive: true, force: true });
    directory = undefined;
  });
  return {
    get loop() {
      return loop!;
    },
    get directory() {
      directory ??= mkdtempSync(path.join(tmpdir(), 'twinloop-boundary-'));
      return directory;
    },
  };
}

/** Runs `action` and checks that it throws a `type` with `fields`. */
function expectThrow(action: () => unknown, type: new (...args: never[]) => Error, fields: Record<string, unknown>): void {
  let error: unknown;
  try {
    action();
  } catch (caught) {
    error = caught;
  }
  expect(error).toBeInstanceOf(type);
  expect(error).toMatchObject(fields);
}

// Echoes one connection on the abstract name argv[1], after printing "ready".
const pythonEcho = `
import socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(b"\\0" + sys.argv[1].encode())
server.listen()
print("ready", flush=True)
connection, _ = server.accept()
data = connection.recv(64)
connection.sendall(data)
connection.close()
`;
// Sends "from python" to the abstract name argv[1] and prints what comes back.
const pythonClient = `
import socket, sys
client = socket.socket(socket.AF_UNIX)
client.connect(b"\\0" + sys.argv[1].encode())
client.sendall(b"from python")
data = b""
while len(data) < 11:
    chunk = client.recv(64)
    if not chunk: break
    data += chunk
sys.stdout.write(data.decode())
`;
const [uvMajor = 0, uvMinor = 0] = process.versions.uv.split('.').map(Number);
const libuvHasAbstractNames = uvMajor > 1 || (uvMajor === 1 && uvMinor >= 48);

const wait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));


describe.each(backends)('handles on %s', (backend) => {
  const t = useLoop(backend);

  describe('handles know their loop', () => {
    let other: Loop;
    beforeEach(() => {
      other = open({ backend });
    });
    afterEach(async () => {
      await other.close();
    });

    it("another loop's socket or server is refused by every reactor and proactor call, and no byte moves", async () => {
      const mine = await connectedPair(t.loop);
      const theirs = await connectedPair(other);
      // The same handle numbers on both loops: what the foreign handle would have hit.
      expect(theirs.accepted.handle).toBe(mine.accepted.handle);
      expect(theirs.server.handle).toBe(mine.server.handle);
      await mine.client.write('for mine');
      await wait(20);
      const buffer = Buffer.alloc(64);
      const foreign = { code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/belongs to another loop/) };
      expectThrow(() => t.loop.reactor.tryRead(theirs.accepted, buffer), TypeError, foreign);
      expectThrow(() => t.loop.reactor.tryWrite(theirs.accepted, Buffer.from('stray')), TypeError, foreign);
      expectThrow(() => t.loop.reactor.watch(theirs.accepted, 'readable', () => {}), TypeError, foreign);
      expectThrow(() => t.loop.reactor.unwatch(theirs.accepted), TypeError, foreign);
      expectThrow(() => t.loop.reactor.tryAccept(theirs.server), TypeError, foreign);
      expectThrow(() => t.loop.proactor.read(theirs.accepted, buffer), TypeError, foreign);
      expectThrow(() => t.loop.proactor.write(theirs.accepted, Buffer.from('stray')), TypeError, foreign);
      expectThrow(() => t.loop.proactor.accept(theirs.server), TypeError, foreign);
      expect(() => t.loop.reactor.tryRead(theirs.accepted, buffer)).toThrow(/"socket"/);
      expect(() => t.loop.reactor.watch(theirs.server, 'readable', () => {})).toThrow(/"target"/);
      expect(() => t.loop.proactor.accept(theirs.server)).toThrow(/"server"/);
      // Nothing was read from this loop's connection with the same number, nor written to it.
      const n = await t.loop.proactor.read(mine.accepted, buffer);
      expect(String(buffer.subarray(0, n))).toBe('for mine');
      await mine.accepted.write('end');
      expect(String(await readBytes(mine.client, 3))).toBe('end');
    });

    it('a closed socket or server is refused with ERR_SOCKET_CLOSED by every reactor and proactor call', async () => {
      const { server, accepted } = await connectedPair(t.loop);
      accepted.close();
      server.close();
      const closed = expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' });
      expect(() => t.loop.reactor.tryRead(accepted, Buffer.alloc(4))).toThrow(closed);
      expect(() => t.loop.reactor.tryWrite(accepted, Buffer.alloc(4))).toThrow(closed);
      expect(() => t.loop.reactor.watch(accepted, 'writable', () => {})).toThrow(closed);
      expect(() => t.loop.reactor.tryAccept(server)).toThrow(closed);
      await expect(t.loop.proactor.read(accepted, Buffer.alloc(4))).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
      await expect(t.loop.proactor.write(accepted, Buffer.alloc(4))).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
      await expect(t.loop.proactor.accept(server)).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
      // A closed handle watches nothing: unwatching it (cleanup code does) stays harmless.
      expect(() => t.loop.reactor.unwatch(accepted)).not.toThrow();
    });
  });
});

describe.each(backends)('connection handlers on %s', (backend) => {
  it('closing the loop while a connection handler awaits loop.sleep() is a normal end of that connection', async () => {
    // In a process of its own: an uncaught error there is an exit code, not a test-runner report.
    const script = `
      const { open } = await import(process.argv[1]);
      const loop = open({ backend: process.argv[2] });
      let entered;
      const handlerEntered = new Promise((resolve) => (entered = resolve));
      const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
        entered();
        await loop.sleep(60_000);
        await socket.write('never');
      });
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      await handlerEntered;
      await loop.close();
      await new Promise((resolve) => setTimeout(resolve, 200));
      console.log(client.closed ? 'clean' : 'open');
    `;
    const { stdout, stderr } = await run(process.execPath, ['--input-type=module', '-e', script, distEntry, backend], { timeout: 20_000 });
    expect(stderr).toBe('');
    expect(stdout.trim()).toBe('clean');
  });
});

describe.each(backends)('paths on %s', (backend) => {
  const t = useLoop(backend);

  describe('paths with NUL', () => {
    it('openFile refuses a path with a NUL byte instead of opening what comes before it', async () => {
      const secret = path.join(t.directory, 'secret');
      await (await t.loop.openFile(secret, { flags: 'w' })).close();
      const error = { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' };
      await expect(t.loop.openFile(`${secret}\0.txt`)).rejects.toMatchObject(error);
      await expect(t.loop.openFile(`${secret}\0.txt`)).rejects.toThrow(/"path"/);
    });

    it('listen and connect refuse a Unix socket path with a NUL byte, and bind nothing', async () => {
      const socketPath = path.join(t.directory, 'sock');
      const error = { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' };
      await expect(t.loop.listen({ path: `${socketPath}\0x` })).rejects.toMatchObject(error);
      await expect(t.loop.listen({ path: `${socketPath}\0x` })).rejects.toThrow(/"options\.path"/);
      expect(existsSync(socketPath)).toBe(false);
      const server = await t.loop.listen({ path: socketPath });
      await expect(t.loop.connect({ path: `${socketPath}\0x` })).rejects.toMatchObject(error);
      server.close();
    });

    it('the native side refuses an embedded NUL in a Unix socket path too', () => {
      const socketPath = path.join(t.directory, 'native');
      const raw = rawNativeLoop(t.loop.info.backend);
      try {
        const rc = raw.listen(0, `${socketPath}\0x`, 0, 16, false, false);
        expect(rc).toBeLessThan(0);
        expect(existsSync(socketPath)).toBe(false);
        expect(raw.connect(0, `${socketPath}\0x`, 0, 1)).toBeLessThan(0);
      } finally {
        raw.close();
      }
    });

    it('the native side refuses an embedded NUL in a file path too, and opens nothing', () => {
      const secret = path.join(t.directory, 'secret');
      writeFileSync(secret, 'secret');
      const raw = rawNativeLoop(t.loop.info.backend);
      try {
        expect(() => raw.fileOpen(`${secret}\0.txt`, 1, 0o666, 1)).toThrow(TypeError);
      } finally {
        raw.close();
      }
    });

    it.skipIf(process.platform !== 'linux')('an abstract Unix socket name (a leading NUL) still serves', async () => {
      const name = `\0twinloop-${process.pid}-${Math.random().toString(36).slice(2)}`;
      await listenEcho(t.loop, { path: name });
      const client = await t.loop.connect({ path: name });
      await client.write('abstract');
      expect(String(await readBytes(client, 8))).toBe('abstract');
    });
  });
});

describe.each(backends)('reads on %s', (backend) => {
  const t = useLoop(backend);

  it('a zero-length read is a RangeError naming the buffer, never a 0 that looks like EOF', async () => {
    const { client, accepted } = await connectedPair(t.loop);
    await client.write('waiting');
    await wait(20);
    const range = { code: 'ERR_OUT_OF_RANGE', message: expect.stringMatching(/"buffer/) };
    expectThrow(() => t.loop.proactor.read(accepted, Buffer.alloc(0)), RangeError, range);
    expectThrow(() => t.loop.reactor.tryRead(accepted, Buffer.alloc(0)), RangeError, range);
    const buffer = Buffer.alloc(16);
    expect(buffer.subarray(0, await t.loop.proactor.read(accepted, buffer)).toString()).toBe('waiting');
  });
});

describe.each(backends)('Unix socket names on %s', (backend) => {
  const t = useLoop(backend);

  describe('Unix socket names', () => {
    it('server.close() removes the socket file it bound, so the path can be listened on again', async () => {
      const socketPath = path.join(t.directory, 'again');
      const first = await t.loop.listen({ path: socketPath });
      expect(existsSync(socketPath)).toBe(true);
      first.close();
      expect(existsSync(socketPath)).toBe(false);
      const second = await listenEcho(t.loop, { path: socketPath });
      const client = await t.loop.connect({ path: socketPath });
      await client.write('again');
      expect(String(await readBytes(client, 5))).toBe('again');
      second.close();
    });

    it('loop.close() removes the socket files of its servers too', async () => {
      const socketPath = path.join(t.directory, 'loop-close');
      await t.loop.listen({ path: socketPath });
      await t.loop.close();
      expect(existsSync(socketPath)).toBe(false);
    });

    // Peers that bind and connect with the kernel's length for the name (unix(7)): Python, and
    // node:net from libuv 1.48 (libuv 1.46-1.47, in Node 20, pad every abstract name to the whole
    // sun_path: libuv/libuv#4266).
    it.skipIf(process.platform !== 'linux')('an abstract name interoperates with a Python peer both ways', async () => {
      const name = `twinloop-${process.pid}-${Math.random().toString(36).slice(2)}`;
      const peer = spawn('python3', ['-c', pythonEcho, name]);
      try {
        await new Promise((resolve, reject) => {
          peer.stdout.once('data', resolve);
          peer.once('error', reject);
        });
        const client = await t.loop.connect({ path: `\0${name}` });
        await client.write('to python');
        expect(String(await readBytes(client, 9))).toBe('to python');
        client.close();
      } finally {
        peer.kill();
      }
      const server = await listenEcho(t.loop, { path: `\0${name}-twinloop` });
      expect(server.address().address).toBe(`\0${name}-twinloop`);
      const { stdout } = await run('python3', ['-c', pythonClient, `${name}-twinloop`], { timeout: 10_000 });
      expect(stdout).toBe('from python');
    });

    it.skipIf(process.platform !== 'linux' || !libuvHasAbstractNames)('an abstract name interoperates with node:net both ways', async () => {
      const name = `\0twinloop-${process.pid}-${Math.random().toString(36).slice(2)}`;
      const nodeServer = net.createServer((socket) => socket.pipe(socket));
      await new Promise<void>((resolve) => nodeServer.listen(name, resolve));
      try {
        const client = await t.loop.connect({ path: name });
        await client.write('to node');
        expect(String(await readBytes(client, 7))).toBe('to node');
        client.close();
      } finally {
        await new Promise((resolve) => nodeServer.close(resolve));
      }
      const other = `${name}-twinloop`;
      await listenEcho(t.loop, { path: other });
      const received = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(other, () => socket.write('from node'));
        let text = '';
        socket.on('data', (chunk) => {
          text += String(chunk);
          if (text.length >= 9) {
            socket.destroy();
            resolve(text);
          }
        });
        socket.on('error', reject);
      });
      expect(received).toBe('from node');
    });
  });
});

describe.each(backends)('one reader per socket on %s', (backend) => {
  const t = useLoop(backend);

  describe("one socket's reads belong to one API", () => {
    it('after the net layer read a socket, the pattern APIs refuse to read it with ERR_SOCKET_BUSY', async () => {
      const { client, accepted } = await connectedPair(t.loop);
      await accepted.write('net');
      expect(String(await client.read())).toBe('net');
      const busy = { code: 'ERR_SOCKET_BUSY', message: expect.stringMatching(/socket\.read\(\)/) };
      await expect(t.loop.proactor.read(client, Buffer.alloc(16))).rejects.toMatchObject(busy);
      expect(() => t.loop.reactor.tryRead(client, Buffer.alloc(16))).toThrow(expect.objectContaining(busy));
      // Still refused once the stream has ended, when the net layer is no longer reading: the
      // pattern API must not answer EOF (or later bytes) while the net layer holds what came first.
      await accepted.end('tail');
      expect(String(await readBytes(client, 4))).toBe('tail');
      expect(await client.read()).toBeNull();
      await expect(t.loop.proactor.read(client, Buffer.alloc(16))).rejects.toMatchObject(busy);
      expect(() => t.loop.reactor.tryRead(client, Buffer.alloc(16))).toThrow(expect.objectContaining(busy));
    });

    it('the README example runs as written and exits 0', async () => {
      // Added to what the environment already disables, so that a run restricted to some backends
      // holds: `backends` lists only those left, and `auto` would pick a disabled one again.
      const others = [process.env.TWINLOOP_DISABLE_BACKENDS, ...backends.filter((name) => name !== backend)];
      const tsx = path.join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'tsx.cmd' : 'tsx');
      const { stdout } = await run(tsx, [path.join(root, 'examples', 'readme.ts')], {
        cwd: root,
        timeout: 30_000,
        env: { ...process.env, TWINLOOP_DISABLE_BACKENDS: others.filter(Boolean).join(',') },
      });
      expect(stdout).toContain(`backend: '${backend}'`);
    });
  });
});

describe.each(backends)('operation ids on %s', (backend) => {
  it('the native side refuses an id whose slot an operation in flight holds, under that id or another generation', () => {
    // A second lease in one slot would drop the first one's memory while the kernel may still use it.
    const raw = rawNativeLoop(backend);
    try {
      const slot = 7;
      const id = (1 << 20) | slot;
      expect(raw.startTimer(60_000, id)).toBeGreaterThanOrEqual(0);
      expect(() => raw.startTimer(60_000, id)).toThrow('operation id already in flight');
      expect(() => raw.startTimer(60_000, (2 << 20) | slot)).toThrow('operation id already in flight');
      expect(raw.startTimer(60_000, (1 << 20) | (slot + 1))).toBeGreaterThanOrEqual(0);
    } finally {
      raw.close();
    }
  });
});

describe.each(backends)('native arguments on %s', (backend) => {
  it('every number the native side takes is checked as it is read: a non-number or a missing one is a TypeError, and nothing starts', () => {
    const raw = rawNativeLoop(backend);
    const buffer = Buffer.alloc(8);
    try {
      const calls: (() => unknown)[] = [
        () => raw.write('0' as never, buffer, 1),
        () => raw.write(0, buffer, undefined as never),
        () => (raw.read as (...args: unknown[]) => unknown)(0, buffer),
        () => raw.writeGathered(0, [buffer], {} as never),
        () => raw.accept(0, null as never),
        () => raw.cancel(0, '1' as never),
        () => raw.startTimer('5' as never, 1),
        () => raw.startTimer(5, undefined as never),
        () => raw.fileRead(0, buffer, '0' as never, 1),
        () => raw.fileOpen('/dev/null', 1, '0' as never, 1),
        () => (raw.watch as (...args: unknown[]) => unknown)(0),
        () => (raw.setSocketOption as (...args: unknown[]) => unknown)(0, 1),
        () => raw.tryAccept(undefined as never),
        () => raw.setThreadPoolSize('2' as never),
      ];
      for (const call of calls) expect(call).toThrow(TypeError);
      // The ids those calls named were never taken.
      expect(raw.startTimer(60_000, 1)).toBeGreaterThanOrEqual(0);
    } finally {
      raw.close();
    }
  });
});

describe('the README', () => {
  it('shows examples/readme.ts verbatim as its example', () => {
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    const example = readFileSync(path.join(root, 'examples', 'readme.ts'), 'utf8');
    const block = /## Example\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBe(example);
  });
});
