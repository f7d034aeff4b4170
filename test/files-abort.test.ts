// File operations that block, are aborted, or are caught by the loop closing: cancelling must
// really cancel (in the kernel or on the pool's thread), must never hide a result the kernel had
// produced, and nothing a file operation waits on may hold up close() or a worker's termination.
// A FIFO with no writer (or no data) is the operation that blocks for ever.
import { execFile, execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop } from '../lib/index.js';
import { backends, randomBytes, sha256 } from './helpers.js';

const run = promisify(execFile);
const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const directory = mkdtempSync(path.join(tmpdir(), 'twinloop-files-abort-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

const aborted = { name: 'AbortError', code: 'ABORT_ERR' };

function makeFifo(name: string): string {
  const fifo = path.join(directory, `${name}-${Math.random().toString(36).slice(2)}.fifo`);
  execFileSync('mkfifo', [fifo]);
  return fifo;
}

/** True when nobody has the FIFO open for reading: a writer that will not wait gets ENXIO. */
function hasNoReader(fifo: string): boolean {
  try {
    closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
    return false;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENXIO') return true;
    throw error;
  }
}

/** Lets whatever waits on the FIFO go on (a blocked open gets a writer, a blocked read a byte). */
function unblock(fifo: string): void {
  try {
    const fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    writeSync(fd, 'x');
    closeSync(fd);
  } catch {
    // No reader any more: nothing waits.
  }
}

/** What `promise` came to within `ms`: its value, its error's name/code/cause, or 'pending'. */
async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise((resolve) => {
    timer = setTimeout(() => resolve('pending'), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value) => ({ value }),
        (error: Error & { code?: unknown; cause?: unknown }) => ({ name: error.name, code: error.code, cause: error.cause }),
      ),
      pending,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** One of the moments a user's abort can come at, relative to the call it aborts. */
function abortAtRandom(controller: AbortController): void {
  const abort = (): void => controller.abort(new Error('random abort'));
  switch (Math.floor(Math.random() * 5)) {
    case 0:
      return abort();  // before the call: nothing may be submitted
    case 1:
      return queueMicrotask(abort);
    case 2:
      return void setImmediate(abort);
    case 3:
      return void setTimeout(abort, Math.random() * 2);
    default:
      return;  // not aborted
  }
}

// A loop closed (or a worker terminated) with a file operation blocked in the pool or the kernel:
// run in a process of its own, so that a close that never returns fails the test instead of
// hanging the runner. The script prints what close() took, how the operation ended and whether a
// reader stayed on the FIFO.
async function blockedAtShutdown(backend: string, scenario: 'open' | 'read' | 'worker'): Promise<{ closeMs: number; code: unknown; noReader: boolean }> {
  const fifo = makeFifo(scenario);
  const script = `
    import { closeSync, constants, openSync } from 'node:fs';
    import { Worker } from 'node:worker_threads';
    const fifo = ${JSON.stringify(fifo)};
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const noReader = () => {
      try { closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)); return false; }
      catch (error) { if (error.code === 'ENXIO') return true; throw error; }
    };
    let closeMs, code = null;
    if (${JSON.stringify(scenario)} === 'worker') {
      const worker = new Worker(\`
        import { parentPort } from 'node:worker_threads';
        const { open } = await import(${JSON.stringify(distEntry)});
        const loop = open({ backend: ${JSON.stringify(backend)} });
        loop.openFile(${JSON.stringify(fifo)}, { flags: 'r+' }).then((file) => file.read(Buffer.alloc(16))).catch(() => {});
        setTimeout(() => parentPort.postMessage('waiting'), 200);\`, { eval: true });
      await new Promise((resolve) => worker.once('message', resolve));
      const start = Date.now();
      await worker.terminate();
      closeMs = Date.now() - start;
    } else {
      const { open } = await import(${JSON.stringify(distEntry)});
      const loop = open({ backend: ${JSON.stringify(backend)} });
      const pending = ${JSON.stringify(scenario)} === 'open'
        ? loop.openFile(fifo)
        : loop.openFile(fifo, { flags: 'r+' }).then((file) => file.read(Buffer.alloc(16)));
      let early = false;
      const settled = pending.then(() => null, (error) => error.code).finally(() => { early ||= closeMs === undefined; });
      await sleep(200);  // in the pool's thread or the kernel by now
      if (early) code = 'settled before close';
      const start = Date.now();
      await loop.close();
      closeMs = Date.now() - start;
      const result = await settled;
      if (!early) code = result;
    }
    console.log(JSON.stringify({ closeMs, code, noReader: noReader() }));
    process.exit(0);`;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 });
  return JSON.parse(stdout) as { closeMs: number; code: unknown; noReader: boolean };
}

describe.each(backends)('blocking file operations at shutdown on %s', (backend) => {
  // The bound the loop promises is about a second; the margin is for a loaded machine.
  const bound = 2500;

  it('close() with an open of a FIFO waiting for a writer returns at once and rejects it ERR_LOOP_CLOSED', async () => {
    const { closeMs, code, noReader } = await blockedAtShutdown(backend, 'open');
    // io_uring's OPENAT first tries the open without blocking, and a FIFO opens then at once (as
    // with O_NONBLOCK): only where the open waits for a writer is there anything to reject.
    if (code !== 'settled before close') expect(code).toBe('ERR_LOOP_CLOSED');
    expect(noReader).toBe(true);
    expect(closeMs).toBeLessThan(bound);
  });

  it('close() with a read of an empty FIFO in flight returns at once and rejects it ERR_LOOP_CLOSED', async () => {
    const { closeMs, code, noReader } = await blockedAtShutdown(backend, 'read');
    expect({ code, noReader }).toEqual({ code: 'ERR_LOOP_CLOSED', noReader: true });
    expect(closeMs).toBeLessThan(bound);
  });

  it('terminating a worker whose loop waits on a FIFO settles at once and leaves no reader', async () => {
    const { closeMs, noReader } = await blockedAtShutdown(backend, 'worker');
    expect(noReader).toBe(true);
    expect(closeMs).toBeLessThan(bound);
  });
});

describe.each(backends)('aborting file operations on %s', (backend) => {
  let loop: Loop;
  let file = '';
  beforeEach(() => {
    loop = open({ backend });
    file = path.join(directory, `${backend}-${Math.random().toString(36).slice(2)}.bin`);
  });
  afterEach(async () => {
    await loop.close();
  });

  it('aborting a read of an empty FIFO cancels it: it rejects AbortError with the reason as cause', async () => {
    const fifo = makeFifo('read');
    const handle = await loop.openFile(fifo, { flags: 'r+' });  // its own writer: the read waits for data
    const controller = new AbortController();
    const reason = new Error('enough');
    const reading = handle.read(Buffer.alloc(16), 0, 16, null, { signal: controller.signal });
    setTimeout(() => controller.abort(reason), 50);
    try {
      expect(await settledWithin(reading, 3000)).toEqual({ ...aborted, cause: reason });
    } finally {
      unblock(fifo);
    }
    await handle.close();
  });

  it('aborting an open of a FIFO with no writer cancels it and leaves no reader', async () => {
    const fifo = makeFifo('open');
    const controller = new AbortController();
    const opening = loop.openFile(fifo, { signal: controller.signal });
    let openedFirst = false;
    void opening.then((opened) => {
      openedFirst = !controller.signal.aborted;
      return opened;
    }, () => {});
    setTimeout(() => controller.abort('stop'), 50);
    try {
      const result = await settledWithin(opening, 3000);
      // io_uring opens a FIFO without waiting (see above): an open done before the abort resolves.
      if (openedFirst) await (await opening).close();
      else expect(result).toEqual({ ...aborted, cause: 'stop' });
      expect(hasNoReader(fifo)).toBe(true);
    } finally {
      unblock(fifo);
    }
  });

  it('a sequential reader that retries aborted reads gets exactly the file’s bytes', async () => {
    const data = randomBytes(4 << 20);
    writeFileSync(file, data);
    const handle = await loop.openFile(file);
    const chunks: Buffer[] = [];
    for (;;) {
      const controller = new AbortController();
      abortAtRandom(controller);
      try {
        const { bytesRead, buffer } = await handle.read(Buffer.alloc(64 * 1024), 0, 64 * 1024, null, { signal: controller.signal });
        if (bytesRead === 0) break;
        chunks.push(buffer.subarray(0, bytesRead));
      } catch (error) {
        expect(error).toMatchObject(aborted);  // not done: read again from the same position
      }
    }
    await handle.close();
    expect(sha256(...chunks)).toBe(sha256(data));
  });

  it('appending N records under random aborts with retry yields exactly N records, in order', async () => {
    const count = 100;
    const record = (i: number): Buffer => Buffer.from(`record ${String(i).padStart(5, '0')}\n`);
    const handle = await loop.openFile(file, { flags: 'a' });
    for (let i = 0; i < count; ++i) {
      for (;;) {
        const controller = new AbortController();
        abortAtRandom(controller);
        try {
          const { bytesWritten } = await handle.write(record(i), 0, undefined, null, { signal: controller.signal });
          expect(bytesWritten).toBe(record(i).length);
          break;
        } catch (error) {
          expect(error).toMatchObject(aborted);  // not written: write it again
        }
      }
    }
    await handle.close();
    const expected = Array.from({ length: count }, (_, i) => record(i).toString()).join('');
    expect(readFileSync(file, 'utf8')).toBe(expected);
  });

  it('a sync aborted at random either resolves or rejects AbortError, and the file stays usable', async () => {
    const handle = await loop.openFile(file, { flags: 'w+' });
    await handle.write(Buffer.from('data'), 0, 4, 0);
    for (let i = 0; i < 20; ++i) {
      const controller = new AbortController();
      abortAtRandom(controller);
      const result = await settledWithin(i % 2 === 0 ? handle.sync({ signal: controller.signal }) : handle.datasync({ signal: controller.signal }), 3000);
      expect([{ value: undefined }, { ...aborted, cause: controller.signal.reason }]).toContainEqual(result);
    }
    const { bytesRead, buffer } = await handle.read(Buffer.alloc(4), 0, 4, 0);
    expect(buffer.subarray(0, bytesRead).toString()).toBe('data');
    await handle.close();
  });
});

describe.each(backends)('file errors on %s', (backend) => {
  it("a write on a file opened 'r' rejects with the OS error EBADF, as node:fs does", async () => {
    const loop = open({ backend });
    const file = path.join(directory, `${backend}-readonly.bin`);
    writeFileSync(file, 'data');
    try {
      const handle = await loop.openFile(file);
      await expect(handle.write(Buffer.from('x'))).rejects.toMatchObject({
        code: 'EBADF',
        errno: -osConstants.errno.EBADF,
        syscall: 'write',
        message: 'EBADF: bad file descriptor, write',
      });
      expect(handle.closed).toBe(false);
      await handle.close();
    } finally {
      await loop.close();
    }
  });
});
