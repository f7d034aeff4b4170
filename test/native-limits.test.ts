// Limits a JavaScript caller can push the native side to: memory it cannot have, and queues far
// longer than any server keeps. Either must fail one operation, or take time in proportion,
// never abort the process or hang it.
import { execFile, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';

import { describe, expect, it } from 'vitest';

import { open } from '../lib/index.js';
import { backends, rawNativeLoop } from './helpers.js';

const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

// prlimit lowers a running process's RLIMIT_AS (util-linux; Linux only, as /proc/self/status).
const hasPrlimit = process.platform === 'linux' && spawnSync('prlimit', ['--version']).status === 0;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runChild(args: string[], env: NodeJS.ProcessEnv): Promise<Exit> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, args, { env, timeout: 60_000, maxBuffer: 1 << 20 }, (_error, stdout, stderr) =>
      resolve({ code: child.exitCode, signal: child.signalCode, stdout, stderr }),
    );
  });
}

describe.skipIf(!hasPrlimit).each(backends)('memory refused on %s', (backend) => {
  it('a 1 GiB read, write or file read the allocator refuses fails with ENOMEM, and the process and the loop go on', { timeout: 90_000 }, async () => {
    // Under the sanitizer run, ASan's allocator must answer a refused allocation with null, as
    // the C library's does, instead of reporting it.
    const asan = [process.env.ASAN_OPTIONS, 'allocator_may_return_null=1'].filter(Boolean).join(':');
    const exit = await runChild([fixture('address-space-limit.mjs'), distEntry, backend], { ...process.env, ASAN_OPTIONS: asan });
    expect({ code: exit.code, signal: exit.signal, stderr: exit.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
    const result = JSON.parse(exit.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    const enomem = (syscall: string) => ({ code: 'ENOMEM', errno: -12, syscall });
    expect(result).toEqual({ read: enomem('read'), write: enomem('write'), fileRead: enomem('read'), after: 'ok' });
  });
});

function shuffled<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

describe.each(backends)('many queued accepts on %s', (backend) => {
  it('500k queued accepts cancelled one by one in random order each leave at once', () => {
    // The native calls alone, without the promise and AbortSignal of each (~80 µs of JavaScript
    // per cancel): each cancel finds its accept and removes it in O(1). When both were O(N), 100k
    // took 4.1 s in cancel() on epoll, so these 500k would take ~100 s, past the test's timeout.
    const raw = rawNativeLoop(backend);
    try {
      const server = raw.listen(4, '127.0.0.1', 0, 511, false, false);
      expect(server).toBeGreaterThanOrEqual(0);
      const ids = Array.from({ length: 500_000 }, (_, slot) => (1 << 20) | slot);
      let refused = 0;
      for (const id of ids) if (raw.accept(server, id) < 0) refused += 1;
      expect(refused).toBe(0);
      shuffled(ids);
      let failed = 0;
      for (const id of ids) if (raw.cancel(server, id) !== 0) failed += 1;
      expect(failed).toBe(0);
      // The first one cancelled had others to take its place in the kernel: it is gone.
      expect(getSystemErrorName(raw.cancel(server, ids[0]!))).toBe('ENOENT');
    } finally {
      raw.close();
    }
  });

  it('accepts aborted in random order reject with AbortError, and the one left gets the next connection', async () => {
    const loop = open({ backend });
    try {
      const server = await loop.listen({ host: '127.0.0.1', port: 0 });
      const controllers = Array.from({ length: 2_000 }, () => new AbortController());
      const accepts = controllers.map((controller) => loop.proactor.accept(server, { signal: controller.signal }));
      const outcomes = Promise.allSettled(accepts);  // handled before any rejects
      const kept = 1_234;
      for (const i of shuffled(controllers.map((_, index) => index))) if (i !== kept) controllers[i]!.abort();
      const client = await loop.connect({ host: '127.0.0.1', port: server.port });
      const settled = await outcomes;
      const names = settled.map((result) => (result.status === 'fulfilled' ? 'Socket' : (result.reason as Error).name));
      expect(names.filter((name) => name === 'AbortError').length).toBe(controllers.length - 1);
      expect(names[kept]).toBe('Socket');
      const peer = (settled[kept] as PromiseFulfilledResult<Awaited<(typeof accepts)[number]>>).value;
      await client.write('hi');
      expect((await peer.read())?.toString()).toBe('hi');
      client.close();
      peer.close();
    } finally {
      await loop.close();
    }
  });
});
