// The native entry points on their own: what JavaScript can do to them from inside a call (a
// getter, a setter, a species constructor) or to the memory they were lent, and that none of it
// corrupts memory, crashes or aborts the process. What could crash runs in a child process, so
// that a failure is a failed assertion here and not a dead test worker.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { open } from '../lib/index.js';
import { backends, rawNativeLoop } from './helpers.js';
import { native } from '../lib/binding.js';

const run = promisify(execFile);
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

// The child's prelude: the package's own sources (through tsx) and a connected pair on `backend`.
const prelude = `
import { open } from ${JSON.stringify(path.join(root, 'lib/index.ts'))};
import { native } from ${JSON.stringify(path.join(root, 'lib/binding.ts'))};
const backend = process.env.TWINLOOP_TEST_BACKEND;
async function pair() {
  const loop = open({ backend });
  const server = await loop.listen({ host: '127.0.0.1', port: 0 });
  const accepted = loop.proactor.accept(server);
  const client = await loop.connect({ host: '127.0.0.1', port: server.port });
  return { loop, client, peer: await accepted };
}
// Every byte the peer receives until nothing more came for 200 ms (the last read stays in
// flight: one call per connection).
async function received(loop, peer) {
  const chunks = [];
  for (;;) {
    const buffer = Buffer.alloc(1 << 20);
    const timer = new Promise((resolve) => setTimeout(resolve, 200, -1));
    const n = await Promise.race([loop.proactor.read(peer, buffer), timer]);
    if (n <= 0) break;
    chunks.push(buffer.subarray(0, n));
  }
  return Buffer.concat(chunks);
}
`;

interface Exit {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs `body` (an ES module, after the prelude) in a node process of its own. */
async function child(backend: string, body: string): Promise<Exit> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', prelude + body], {
      cwd: root,
      env: { ...process.env, TWINLOOP_TEST_BACKEND: backend },
      timeout: 20_000,
    });
    return { code: 0, signal: null, stdout, stderr };
  } catch (error) {
    const { code, signal, stdout, stderr } = error as { code: number | null; signal: string | null; stdout: string; stderr: string };
    return { code: typeof code === 'number' ? code : null, signal, stdout, stderr };
  }
}

function survived(exit: Exit): void {
  expect({ code: exit.code, signal: exit.signal, stderr: exit.signal === null && exit.code === 0 ? '' : exit.stderr }).toEqual({
    code: 0,
    signal: null,
    stderr: '',
  });
}

describe.each(backends)('native entry points (%s)', (backend) => {
  it('a gathered write whose element getter throws passes that error on, and the process lives', async () => {
    const exit = await child(
      backend,
      `
      const { loop, client } = await pair();
      const pieces = [Buffer.from('a')];
      let calls = 0;
      Object.defineProperty(pieces, 1, { enumerable: true, get() { if (++calls === 2) throw new Error('getter threw'); return Buffer.from('b'); } });
      try { client.writeThen(pieces, () => {}); console.log('writeThen returned'); } catch (e) { console.log('writeThen threw', e.message); }
      const { rawNativeLoop } = await import(${JSON.stringify(path.join(root, 'test/helpers.ts'))});
      const raw = rawNativeLoop(backend);
      const list = [Buffer.from('a')];
      Object.defineProperty(list, 1, { enumerable: true, get() { throw new Error('raw getter threw'); } });
      try { raw.writeGathered(0, list, 1); console.log('writeGathered returned'); } catch (e) { console.log('writeGathered threw', e.message); }
      raw.close();
      await loop.close();
      `,
    );
    survived(exit);
    expect(exit.stdout.trim().split('\n')).toEqual(['writeThen threw getter threw', 'writeGathered threw raw getter threw']);
  });

  it('a gathered write whose getter shrinks or transfers an earlier piece sends only what the pieces hold once every getter ran', async () => {
    const exit = await child(
      backend,
      `
      for (const how of ['shrink', 'transfer']) {
        const { loop, client, peer } = await pair();
        const rab = how === 'shrink' ? new ArrayBuffer(8 << 20, { maxByteLength: 64 << 20 }) : new ArrayBuffer(8 << 20);
        const big = new Uint8Array(rab).fill(0x41);
        const pieces = [big];
        let calls = 0;
        let kept;
        Object.defineProperty(pieces, 1, { enumerable: true, get() {
          if (++calls === 2) { if (how === 'shrink') rab.resize(0); else kept = structuredClone(rab, { transfer: [rab] }); }
          return Buffer.from('!');
        } });
        client.writeThen(pieces, () => {});
        console.log(how, JSON.stringify(String(await received(loop, peer))));
        await loop.close();
      }
      `,
    );
    survived(exit);
    expect(exit.stdout.trim().split('\n')).toEqual(['shrink "!"', 'transfer "!"']);
  });

  it("a stream's _writev of chunks whose array has a species constructor sends just those chunks", async () => {
    const exit = await child(
      backend,
      `
      const { loop, client, peer } = await pair();
      class Evil extends Array {
        constructor(n) {
          super(n);
          Object.defineProperty(this, n, { enumerable: true, configurable: true, get() { throw new Error('getter threw'); } });
        }
      }
      const chunks = [{ chunk: Buffer.from('hello') }, { chunk: Buffer.from(' world') }];
      chunks.constructor = { [Symbol.species]: Evil };
      const written = new Promise((resolve) => client.stream()._writev(chunks, (e) => resolve(e?.message ?? 'ok')));
      console.log('callback', await written);
      console.log('received', JSON.stringify(String(await received(loop, peer))));
      await loop.close();
      `,
    );
    survived(exit);
    expect(exit.stdout.trim().split('\n')).toEqual(['callback ok', 'received "hello world"']);
  });

  it('a raw loop whose events or arena buffer was shrunk or transferred closes instead of draining into it', async () => {
    const exit = await child(
      backend,
      `
      const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
      for (const how of ['shrink events', 'transfer events', 'shrink arena']) {
        const rab = new ArrayBuffer(1 << 20, { maxByteLength: 4 << 20 });
        const plain = new ArrayBuffer(1 << 20);
        const onEvents = how.endsWith('events');
        const events = new Int32Array(onEvents ? (how.startsWith('shrink') ? rab : plain) : new ArrayBuffer(1024));
        const arena = new Uint8Array(onEvents ? new ArrayBuffer(64 * 1024) : rab);
        let dispatched = 0;
        const dispatch = () => { dispatched++; };
        const raw = new native.NativeLoop(backend, events, arena, dispatch);
        raw.setLiveness(true, true);
        let moved;
        if (how === 'transfer events') moved = structuredClone(plain, { transfer: [plain] });
        else rab.resize(0);
        raw.startTimer(1, 1);
        await wait(300);
        let after;
        try { after = raw.startTimer(1, 2); } catch (e) { after = e.message; }
        const untouched = moved === undefined || new Int32Array(moved).every((v) => v === 0);
        console.log(how, dispatched, untouched, after);
        try { raw.close(); } catch {}
      }
      `,
    );
    survived(exit);
    const closed = 'the loop is closed: its events or arena buffer was detached, transferred or resized';
    expect(exit.stdout.trim().split('\n')).toEqual([
      `shrink events 0 true ${closed}`,
      `transfer events 0 true ${closed}`,
      `shrink arena 0 true ${closed}`,
    ]);
  });

  it('building a result object runs no setter of Object.prototype', async () => {
    const exit = await child(
      backend,
      `
      const { rawNativeLoop } = await import(${JSON.stringify(path.join(root, 'test/helpers.ts'))});
      const raw = rawNativeLoop(backend);
      const before = raw.info();
      const ran = [];
      for (const key of ['backend', 'pattern', 'features', 'syscalls', 'batches', 'errno', 'syscall']) {
        Object.defineProperty(Object.prototype, key, { configurable: true, set() { ran.push(key); raw.close(); throw new Error('setter ran'); } });
      }
      const info = raw.info();
      const stats = raw.stats();
      let openError;
      try { new native.NativeLoop('no-such-backend', new Int32Array(64), new Uint8Array(1024), () => {}); } catch (e) { openError = [e.errno, e.syscall]; }
      console.log(JSON.stringify({ ran, same: JSON.stringify(info) === JSON.stringify(before), features: Array.isArray(info.features), batches: stats.batches, openError }));
      raw.close();
      `,
    );
    survived(exit);
    expect(JSON.parse(exit.stdout)).toEqual({ ran: [], same: true, features: true, batches: 0, openError: [expect.any(Number), 'open'] });
  });

  it('a raw loop refuses events or an arena over a SharedArrayBuffer, which another thread could rewrite mid-drain', () => {
    const shared = new SharedArrayBuffer(64 * 1024);
    expect(() => new native.NativeLoop(backend, new Int32Array(shared, 0, 64), new Uint8Array(1024), () => {})).toThrow(TypeError);
    expect(() => new native.NativeLoop(backend, new Int32Array(64), new Uint8Array(shared), () => {})).toThrow(TypeError);
  });

  it('the native reads refuse an empty view with a RangeError naming the argument, before any I/O', () => {
    const raw = rawNativeLoop(backend);
    try {
      const refusal = { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining('"buffer.length"') };
      expect(outcomeOf(() => raw.tryRead(0, new Uint8Array(0)))).toEqual(refusal);
      expect(outcomeOf(() => raw.tryRead(0, new Uint8Array(8), 8, 0))).toEqual({ ...refusal, message: expect.stringContaining('"length"') });
      expect(outcomeOf(() => raw.read(0, new Uint8Array(0), 1))).toEqual(refusal);
    } finally {
      raw.close();
    }
  });

  it('a read into a view that only claims a length is refused, not answered with the 0 of EOF while data waits', async () => {
    const loop = open({ backend });
    try {
      const server = await loop.listen({ host: '127.0.0.1', port: 0 });
      const accepted = loop.proactor.accept(server);
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const peer = await accepted;
      await loop.proactor.write(peer, Buffer.from('waiting'));
      class Liar extends Uint8Array {
        override get length(): number {
          return 16;
        }
      }
      await expect((async () => loop.proactor.read(client, new Liar(0)))()).rejects.toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
      const buffer = Buffer.alloc(16);
      expect(String(buffer.subarray(0, await loop.proactor.read(client, buffer)))).toBe('waiting');
    } finally {
      await loop.close();
    }
  });
});

function outcomeOf(call: () => unknown): unknown {
  try {
    return { value: call() };
  } catch (error) {
    const { name, code, message } = error as Error & { code?: unknown };
    return { name, code, message };
  }
}
