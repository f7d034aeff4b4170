// Regular files on every backend: the proactors submit them to the kernel, the reactors run
// them on the thread pool. The outcomes must be the same.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop } from '../lib/index.js';
import { backends, randomBytes, sha256 } from './helpers.js';

const directory = mkdtempSync(path.join(tmpdir(), 'twinloop-files-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

describe.each(backends)('files on %s', (backend) => {
  let loop: Loop;
  let file = '';
  beforeEach(() => {
    loop = open({ backend });
    file = path.join(directory, `${backend}-${Math.random().toString(36).slice(2)}.bin`);
  });
  afterEach(async () => {
    await loop.close();
  });

  it('data written reads back, at the positions given', async () => {
    const handle = await loop.openFile(file, { flags: 'w+' });
    const data = randomBytes(256 * 1024);
    const { bytesWritten } = await handle.write(data, 0, data.length, 0);
    expect(bytesWritten).toBe(data.length);
    await handle.write(Buffer.from('HEAD'), 0, 4, 1000);  // overwrite in the middle
    await handle.sync();
    const back = Buffer.alloc(data.length);
    const { bytesRead } = await handle.read(back, 0, back.length, 0);
    expect(bytesRead).toBe(data.length);
    data.write('HEAD', 1000, 'latin1');
    expect(sha256(back)).toBe(sha256(data));
    await handle.close();
    expect(sha256(readFileSync(file))).toBe(sha256(data));
  });

  it('reads at random positions return exactly the bytes there, 32 in flight at once', async () => {
    const data = randomBytes(1024 * 1024);
    writeFileSync(file, data);
    const handle = await loop.openFile(file);
    const reads = Array.from({ length: 256 }, async () => {
      const position = Math.floor(Math.random() * (data.length / 4096)) * 4096;
      const { bytesRead, buffer } = await handle.read(Buffer.alloc(4096), 0, 4096, position);
      expect(bytesRead).toBe(4096);
      expect(buffer.equals(data.subarray(position, position + 4096))).toBe(true);
    });
    await Promise.all(reads);
    await handle.close();
  });

  it('a read at the end of the file is short, then 0', async () => {
    writeFileSync(file, 'hello');
    const handle = await loop.openFile(file);
    const buffer = Buffer.alloc(16);
    expect((await handle.read(buffer, 0, 16, 2)).bytesRead).toBe(3);
    expect(buffer.toString('latin1', 0, 3)).toBe('llo');
    expect((await handle.read(buffer, 0, 16, 5)).bytesRead).toBe(0);
    expect((await handle.read(buffer, 0, 16, 999)).bytesRead).toBe(0);
    await handle.close();
  });

  it('without a position, reads and writes follow the file position; append mode appends', async () => {
    const handle = await loop.openFile(file, { flags: 'w' });
    await handle.write(Buffer.from('abc'));
    await handle.write(Buffer.from('def'));
    await handle.close();
    const appender = await loop.openFile(file, { flags: 'a' });
    await appender.write(Buffer.from('ghi'));
    await appender.close();
    expect(readFileSync(file, 'latin1')).toBe('abcdefghi');
    const reader = await loop.openFile(file);
    const buffer = Buffer.alloc(4);
    await reader.read(buffer, 0, 4);
    await reader.read(buffer, 0, 4);
    expect(buffer.toString('latin1')).toBe('efgh');
    await reader.close();
  });

  it('opening a missing file fails with ENOENT naming the path', async () => {
    const missing = path.join(directory, 'missing', 'nope.txt');
    await expect(loop.openFile(missing)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open', path: missing });
  });

  it("'wx' refuses an existing file with EEXIST", async () => {
    writeFileSync(file, 'x');
    await expect(loop.openFile(file, { flags: 'wx' })).rejects.toMatchObject({ code: 'EEXIST' });
  });

  it('reading a directory fails with EISDIR', async () => {
    const handle = await loop.openFile(directory);
    await expect(handle.read(Buffer.alloc(8), 0, 8, 0)).rejects.toMatchObject({ code: 'EISDIR', syscall: 'read' });
    await handle.close();
  });

  it('a file used after close is a clear error; closing twice is harmless', async () => {
    writeFileSync(file, 'data');
    const handle = await loop.openFile(file);
    const closing = handle.close();
    expect(handle.closed).toBe(true);
    await expect(handle.read(Buffer.alloc(4), 0, 4, 0)).rejects.toMatchObject({ code: 'ERR_FILE_CLOSED' });
    await closing;
    await handle.close();
    await expect(handle.write(Buffer.from('x'))).rejects.toMatchObject({ code: 'ERR_FILE_CLOSED' });
  });

  it('close waits for the reads in flight, which complete with their bytes', async () => {
    const data = randomBytes(64 * 1024);
    writeFileSync(file, data);
    const handle = await loop.openFile(file);
    const reads = Array.from({ length: 16 }, (_, i) => handle.read(Buffer.alloc(4096), 0, 4096, i * 4096));
    await handle.close();
    const results = await Promise.all(reads);
    results.forEach(({ bytesRead, buffer }, i) => {
      expect(bytesRead).toBe(4096);
      expect(buffer.equals(data.subarray(i * 4096, (i + 1) * 4096))).toBe(true);
    });
  });

  it('an aborted signal rejects with AbortError and submits nothing', async () => {
    writeFileSync(file, 'data');
    const handle = await loop.openFile(file);
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await expect(handle.read(Buffer.alloc(4), 0, 4, 0, { signal: controller.signal })).rejects.toMatchObject({
      name: 'AbortError',
      code: 'ABORT_ERR',
    });
    await expect(loop.openFile(file, { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
    await handle.close();
  });

  it('rejects bad arguments naming them', async () => {
    writeFileSync(file, 'data');
    await expect(loop.openFile('' as string)).rejects.toThrow(/"path"/);
    await expect(loop.openFile(file, { flags: 'rw' as never })).rejects.toThrow(/"options\.flags"/);
    const handle = await loop.openFile(file);
    await expect(handle.read('x' as never)).rejects.toThrow(/"buffer"/);
    await expect(handle.read(Buffer.alloc(4), 5)).rejects.toThrow(RangeError);
    await expect(handle.read(Buffer.alloc(4), 0, 8)).rejects.toThrow(/"length"/);
    await expect(handle.read(Buffer.alloc(4), 0, 4, -2)).rejects.toThrow(/"position"/);
    await handle.close();
  });
});
