// Limits a JavaScript caller can push the native side to: memory it cannot have must fail one
// operation, never abort the process.
import { execFile, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { backends } from './helpers.js';

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
