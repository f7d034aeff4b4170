// Reads and writes without a position use the file's one current position, which each of them
// moves: issued together they must run one at a time, in the order they were issued, as a stream's
// would — on every backend, whether the kernel (io_uring, IOCP) or the thread pool (epoll, kqueue,
// threads) does them. Positioned ones stay free to run in parallel beside them.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop } from '../lib/index.js';
import { backends, outcome, randomBytes } from './helpers.js';

const directory = mkdtempSync(path.join(tmpdir(), 'twinloop-file-order-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

const bound = 30_000;

describe.each(backends)('current-position file operations on %s', (backend) => {
  let loop: Loop;
  let file = '';
  beforeEach(() => {
    loop = open({ backend });
    file = path.join(directory, `${backend}-${Math.random().toString(36).slice(2)}.bin`);
  });
  afterEach(async () => {
    await loop.close();
  });

  it('10 000 one-byte reads issued at once return the file\'s bytes in order, then the end', async () => {
    const data = randomBytes(10_000);
    writeFileSync(file, data);
    const handle = await loop.openFile(file);
    const reads = Array.from({ length: data.length + 1 }, () => handle.read(Buffer.alloc(1)));
    const results = await Promise.all(reads);
    expect(results.at(-1)!.bytesRead).toBe(0);
    const got = Buffer.concat(results.slice(0, -1).map(({ bytesRead, buffer }) => buffer.subarray(0, bytesRead)));
    expect(got.equals(data)).toBe(true);
    await handle.close();
  }, bound);

  it('positioned reads issued among them still read their own bytes', async () => {
    const data = randomBytes(64 * 1024);
    writeFileSync(file, data);
    const handle = await loop.openFile(file);
    const sequential: Promise<{ bytesRead: number; buffer: Buffer }>[] = [];
    const positioned: Promise<boolean>[] = [];
    for (let i = 0; i < 1024; ++i) {
      sequential.push(handle.read(Buffer.alloc(64)));
      const at = ((i * 7919) % 1024) * 64;
      positioned.push(handle.read(Buffer.alloc(64), 0, 64, at).then(({ buffer }) => buffer.equals(data.subarray(at, at + 64))));
    }
    expect((await Promise.all(positioned)).every(Boolean)).toBe(true);
    expect(Buffer.concat((await Promise.all(sequential)).map(({ buffer }) => buffer)).equals(data)).toBe(true);
    await handle.close();
  }, bound);

  it('2 000 writes issued at once write the file in the order they were issued', async () => {
    const records = Array.from({ length: 2_000 }, (_, i) => Buffer.from(`record ${String(i).padStart(5, '0')}\n`));
    const handle = await loop.openFile(file, { flags: 'w' });
    const written = await Promise.all(records.map((record) => handle.write(record)));
    expect(written.every(({ bytesWritten }, i) => bytesWritten === records[i]!.length)).toBe(true);
    await handle.close();
    expect(readFileSync(file).equals(Buffer.concat(records))).toBe(true);
  }, bound);

  it('2 000 appends issued at once come out in the order they were issued', async () => {
    writeFileSync(file, 'head\n');
    const records = Array.from({ length: 2_000 }, (_, i) => Buffer.from(`${i}\n`));
    const handle = await loop.openFile(file, { flags: 'a' });
    await Promise.all(records.map((record) => handle.write(record)));
    await handle.close();
    expect(readFileSync(file).toString()).toBe(`head\n${records.join('')}`);
  }, bound);

  it('an aborted read and a failing write among queued reads leave the others reading on in order', async () => {
    const data = randomBytes(4_000);
    writeFileSync(file, data);
    const handle = await loop.openFile(file);  // read-only: a write fails with EBADF
    const controller = new AbortController();
    const operations = Array.from({ length: 2_000 }, (_, i) => {
      if (i === 700) return outcome(handle.write(Buffer.from('x')));
      const signal = i === 1_000 ? controller.signal : undefined;
      return outcome(handle.read(Buffer.alloc(2), 0, 2, null, { signal }));
    });
    controller.abort();  // the read it cancels is still waiting its turn behind hundreds
    const results = await Promise.all(operations);
    expect(results[700]).toMatchObject({ code: 'EBADF' });
    expect(results[1_000]).toEqual({ name: 'AbortError', code: 'ABORT_ERR' });
    const chunks = results.flatMap((result) => ('value' in result && 'bytesRead' in result.value ? [result.value.buffer] : []));
    expect(chunks.length).toBe(1_998);
    expect(Buffer.concat(chunks).equals(data.subarray(0, 1_998 * 2))).toBe(true);
    await handle.close();
  }, bound);

  it('an aborted write among queued writes is left out and the others follow each other', async () => {
    const handle = await loop.openFile(file, { flags: 'w' });
    const controllers = new Map<number, AbortController>();
    const writes = Array.from({ length: 1_000 }, (_, i) => {
      const controller = new AbortController();
      if (i % 100 === 50) controllers.set(i, controller);
      return outcome(handle.write(Buffer.from(`${i},`), 0, undefined, null, { signal: controller.signal }));
    });
    for (const controller of controllers.values()) controller.abort();
    const results = await Promise.all(writes);
    const kept = results.flatMap((result, i) => ('value' in result ? [`${i},`] : []));
    for (const [i] of controllers) expect(results[i]).toEqual({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(kept.length).toBe(1_000 - controllers.size);
    await handle.close();
    expect(readFileSync(file).toString()).toBe(kept.join(''));
  }, bound);

  it('close() waits for the queued operations, which complete in order', async () => {
    const data = randomBytes(1_000);
    writeFileSync(file, data);
    const handle = await loop.openFile(file);
    const reads = Array.from({ length: 1_000 }, () => handle.read(Buffer.alloc(1)));
    const closed = handle.close();
    const results = await Promise.all(reads);
    await closed;
    expect(Buffer.concat(results.map(({ buffer }) => buffer)).equals(data)).toBe(true);
  }, bound);

  it('closing the loop settles every queued operation', async () => {
    writeFileSync(file, randomBytes(100_000));
    const other = open({ backend });
    const handle = await other.openFile(file);
    const reads = Array.from({ length: 5_000 }, () => outcome(handle.read(Buffer.alloc(20))));
    await other.close();
    const results = await Promise.all(reads);
    expect(results.every((result) => 'value' in result || result.code === 'ERR_LOOP_CLOSED')).toBe(true);
  }, bound);
});
