import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { isMainThread } from 'node:worker_threads';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { listenInWorker, open, serveOnWorkers, type Loop, type WorkerError, type WorkerGroup } from '../lib/index.js';
import { backends, outcome, readAll } from './helpers.js';

const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const workerModule = new URL('./fixtures/multicore-worker.mjs', import.meta.url);
const root = fileURLToPath(new URL('..', import.meta.url));

/** One connection: sends a line, returns the worker's answer (`<threadId> <line>`) split in two. */
async function ask(loop: Loop, port: number, line: string): Promise<{ threadId: number; echo: string }> {
  const socket = await loop.connect({ host: '127.0.0.1', port });
  try {
    await socket.write(`${line}\n`);
    const answer = (await readAll(socket)).toString();
    const space = answer.indexOf(' ');
    return { threadId: Number(answer.slice(0, space)), echo: answer.slice(space + 1) };
  } finally {
    socket.close();
  }
}

// Windows has no SO_REUSEPORT: there the call refuses (below), and nothing else applies.
const windows = process.platform === 'win32';

describe.skipIf(windows).each(backends)('serveOnWorkers on %s', (backend) => {
  let loop: Loop;
  let group: WorkerGroup | undefined;
  beforeEach(() => {
    loop = open({ backend });
    group = undefined;
  });
  afterEach(async () => {
    await group?.close();
    await loop.close();
  });

  it('serves every connection, each from the worker thread the kernel picked, and SO_REUSEPORT spreads them on Linux', async () => {
    group = await serveOnWorkers(workerModule, { workers: 2, host: '127.0.0.1', workerData: { distEntry, backend } });
    expect(group.workers).toHaveLength(2);
    expect(group.port).toBeGreaterThan(0);
    const lines = Array.from({ length: 64 }, () => randomBytes(8).toString('hex'));
    const answers = await Promise.all(lines.map((line) => ask(loop, group!.port, line)));
    expect(answers.map((a) => a.echo)).toEqual(lines.map((line) => `${line}\n`));
    const threadIds = group.workers.map((worker) => worker.threadId);
    const served = threadIds.map((id) => answers.filter((a) => a.threadId === id).length);
    expect(served.reduce((a, b) => a + b)).toBe(64);
    // Linux picks a connection's listener by a keyed hash of its addresses and ports, so with 64
    // connections (each from its own source port) all land on one of the two workers with
    // probability 2 · 2^-64 ≈ 1.1e-19. macOS and FreeBSD give every connection to one listener.
    if (process.platform === 'linux') expect(Math.min(...served)).toBeGreaterThan(0);
  });

  it('close() ends every worker, even one that something else keeps alive, and frees the port', async () => {
    group = await serveOnWorkers(workerModule, { workers: 2, host: '127.0.0.1', workerData: { distEntry, backend, keepAlive: true } });
    const exits = group.workers.map((worker) => new Promise((resolve) => worker.once('exit', resolve)));
    const { port } = group;
    expect((await ask(loop, port, 'hello')).echo).toBe('hello\n');
    await group.close();
    expect(await Promise.all(exits)).toHaveLength(2);
    expect(group.workers.every((worker) => worker.threadId === -1)).toBe(true);
    expect(await outcome(loop.connect({ host: '127.0.0.1', port }))).toEqual({ name: 'Error', code: 'ECONNREFUSED' });
  });

  it('Symbol.asyncDispose closes the group', async () => {
    const started = await serveOnWorkers(workerModule, { workers: 2, host: '127.0.0.1', workerData: { distEntry, backend } });
    const exits = started.workers.map((worker) => new Promise((resolve) => worker.once('exit', resolve)));
    await started[(Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose')) as typeof Symbol.asyncDispose]();
    expect(await Promise.all(exits)).toHaveLength(2);
  });

  it('close() terminates a worker that is too busy to close its loop', async () => {
    group = await serveOnWorkers(workerModule, { workers: 2, host: '127.0.0.1', closeTimeout: 200, workerData: { distEntry, backend } });
    const exits = group.workers.map((worker) => new Promise((resolve) => worker.once('exit', resolve)));
    // One of the two now spins; the other closes its loop when asked.
    expect((await ask(loop, group.port, 'spin')).echo).toBe('');
    await group.close();
    expect(await Promise.all(exits)).toHaveLength(2);
  });

  it('a worker that crashes is reported as an error, and the other keeps serving', async () => {
    const started = await serveOnWorkers(workerModule, { workers: 2, host: '127.0.0.1', workerData: { distEntry, backend } });
    group = started;
    const failure = new Promise<WorkerError>((resolve) => started.once('error', resolve));
    await ask(loop, started.port, 'crash');
    const error = await failure;
    expect(error).toMatchObject({ code: 'ERR_TWINLOOP_WORKER_FAILED', cause: { message: 'worker crashed on purpose' } });
    const crashed = started.workers[error.index]!;
    await new Promise((resolve) => (crashed.threadId === -1 ? resolve(undefined) : crashed.once('exit', resolve)));
    // Its listener is gone with its thread: every new connection goes to the survivor.
    const survivor = started.workers[1 - error.index]!.threadId;
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => ask(loop, started.port, `after ${i}`)));
    expect(answers.map((a) => a.threadId)).toEqual(Array(8).fill(survivor));
  });

  it('a worker that fails before it listens rejects the call with its error', async () => {
    const starting = serveOnWorkers(workerModule, { workers: 2, host: '127.0.0.1', workerData: { distEntry, backend, failBeforeListen: true } });
    await expect(starting).rejects.toMatchObject({
      code: 'ERR_TWINLOOP_WORKER_FAILED', index: 0, cause: { message: 'this worker fails before it listens' },
    });
  });

  it('examples/multicore.ts runs as one command and accounts for every connection', async () => {
    const tsx = path.join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'tsx.cmd' : 'tsx');
    const { stdout } = await promisify(execFile)(
      tsx, [path.join(root, 'examples', 'multicore.ts'), '--workers', '2', '--connections', '64', '--backend', backend],
      { cwd: root, timeout: 30_000 },
    );
    const counts = [...stdout.matchAll(/^worker (\d) \(thread \d+\): (\d+) connections$/gm)].map((m) => Number(m[2]));
    expect(counts).toHaveLength(2);
    expect(counts.reduce((a, b) => a + b)).toBe(64);
    expect(stdout).toContain(`listening on ${backend}`);
    expect(stdout).toContain('closed every worker');
  });
});

describe('serveOnWorkers arguments and platforms', () => {
  it('refuses a bad worker count, port or module', async () => {
    expect(await outcome(serveOnWorkers(workerModule, { workers: 0 }))).toEqual({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(await outcome(serveOnWorkers(workerModule, { port: 70000 }))).toMatchObject({ name: 'RangeError' });
    expect(await outcome(serveOnWorkers(42 as unknown as URL))).toEqual({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  });

  it.runIf(windows)('refuses on Windows, which has no SO_REUSEPORT', async () => {
    expect(await outcome(serveOnWorkers(workerModule, { workers: 2 }))).toEqual({ name: 'Error', code: 'ERR_TWINLOOP_NO_REUSEPORT' });
  });

  it('listenInWorker outside a group worker says where it runs', async () => {
    expect(isMainThread).toBe(true);
    expect(await outcome(listenInWorker(() => {}))).toEqual({ name: 'Error', code: 'ERR_TWINLOOP_NOT_A_WORKER' });
  });
});
