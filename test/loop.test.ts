// Loop lifecycle: closing, descriptors, several loops, worker threads, backend choice.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';

import { describe, expect, it } from 'vitest';

import { availableBackends, bindingPath, open } from '../lib/index.js';
import { backends, listenEcho, openFdCount, randomBytes, readBytes, sha256 } from './helpers.js';

const run = promisify(execFile);
const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url));

describe.each(backends)('loop lifecycle on %s', (backend) => {
  // Descriptors are counted through /proc or /dev/fd, which Windows lacks.
  it.skipIf(process.platform === 'win32')('close() with open servers and sockets closes them all and leaves no descriptor behind', async () => {
    const before = openFdCount();
    const loop = open({ backend });
    const server = await listenEcho(loop);
    const sockets = await Promise.all(Array.from({ length: 20 }, () => loop.connect({ host: '127.0.0.1', port: server.port })));
    await Promise.all(sockets.slice(1).map((socket) => socket.write('hi')));
    const pendingRead = sockets[0]!.read();  // nothing will arrive: it waits until the close
    await readBytes(sockets[1]!, 2);
    expect(openFdCount()).toBeGreaterThan(before + 20);
    await loop.close();
    expect(loop.closed).toBe(true);
    expect(sockets.every((socket) => socket.closed)).toBe(true);
    expect(server.closed).toBe(true);
    expect(await pendingRead).toBeNull();
    expect(openFdCount()).toBe(before);
    await expect(loop.connect({ host: '127.0.0.1', port: 1 })).rejects.toMatchObject({ code: 'ERR_LOOP_CLOSED' });
    await expect(sockets[2]!.write('x')).rejects.toMatchObject({ code: 'ERR_LOOP_CLOSED' });
    await loop.close();  // twice is harmless
  });

  it('two loops in one process serve and connect independently', async () => {
    const first = open({ backend });
    const second = open({ backend });
    try {
      const server = await listenEcho(first);
      const socket = await second.connect({ host: '127.0.0.1', port: server.port });
      const payload = randomBytes(2 * 1024 * 1024);
      const received = readBytes(socket, payload.length);
      await socket.write(payload);
      expect(sha256(await received)).toBe(sha256(payload));
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('a loop inside a worker thread echoes, and the thread exits cleanly', async () => {
    const worker = new Worker(new URL('./fixtures/worker-echo.mjs', import.meta.url), { workerData: { backend, distEntry } });
    // Listened for from the start: a worker that exits at once has its last message and its
    // 'exit' emitted in one go, before an await on the message could go on to listen for the exit.
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    const result = await new Promise<{ ok: boolean; bytes: number; backend: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(result).toEqual({ ok: true, bytes: 1 << 20, backend });
    expect(await exited).toBe(0);
  });

  it('a worker that exits with its loop still open is cleaned up by the environment teardown', async () => {
    const worker = new Worker(new URL('./fixtures/worker-leak.mjs', import.meta.url), { workerData: { backend, distEntry } });
    const code = await new Promise((resolve, reject) => {
      worker.once('exit', resolve);
      worker.once('error', reject);
    });
    expect(code).toBe(0);
  });

  it('does not keep the process alive once every handle is closed', async () => {
    const script = `
      import { open } from ${JSON.stringify(distEntry)};
      const loop = open({ backend: ${JSON.stringify(backend)} });
      const server = await loop.listen({ host: '127.0.0.1', port: 0 });
      const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
      socket.close(); server.close();
      console.log('done');`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 });
    expect(stdout.trim()).toBe('done');
  });
});

describe('backend choice', () => {
  it('auto picks the first available backend and says which', () => {
    const loop = open();
    expect(loop.info.backend).toBe(availableBackends()[0]);
    void loop.close();
  });

  it('auto falls back when a backend is unavailable and reports why', async () => {
    const best = availableBackends()[0]!;
    const script = `
      import { open } from ${JSON.stringify(distEntry)};
      try { const loop = open(); console.log(JSON.stringify(loop.info)); await loop.close(); }
      catch (error) { console.log(JSON.stringify({ error: error.message, code: error.code })); }`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
      // Added to what the environment already disables, so that a run restricted to some backends holds.
      env: { ...process.env, TWINLOOP_DISABLE_BACKENDS: [process.env.TWINLOOP_DISABLE_BACKENDS, best].filter(Boolean).join(',') },
      timeout: 10_000,
    });
    const info = JSON.parse(stdout) as { backend?: string; fallbackReason?: string; error?: string; code?: string };
    if (availableBackends().length > 1) {
      expect(info.backend).not.toBe(best);
      expect(info.fallbackReason).toContain(`${best}: disabled by TWINLOOP_DISABLE_BACKENDS`);
    } else {
      expect(info.code).toBe('ENOSYS');
      expect(info.error).toContain(best);
    }
  });

  it('asking for a backend this host lacks throws an error that names it', () => {
    const missing = (['epoll', 'kqueue', 'io_uring', 'iocp'] as const).find((name) => !availableBackends().includes(name))!;
    expect(() => open({ backend: missing })).toThrow(new RegExp(`cannot open backend '${missing}'`));
  });

  it('loads the native binary from the package', () => {
    expect(bindingPath).toMatch(/twinloop\.node$/);
  });
});
