// Teardown (issue 13, items 3 and 8): a loop goes away — closed, dropped, or with its worker
// terminated mid-transfer — without crashing the process, and gives back everything it held.
// Each case runs in a child process: a native abort there fails the test instead of the runner.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { backends } from './helpers.js';

const run = promisify(execFile);
const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const packageRoot = fileURLToPath(new URL('..', import.meta.url));
const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

async function child(args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run(process.execPath, args, { timeout: 120_000, maxBuffer: 1 << 20 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

describe.each(backends)('teardown on %s', (backend) => {
  it('100 workers terminated at random moments mid-transfer leave the main thread echoing, with no fd left behind', { timeout: 180_000 }, async () => {
    const result = await child([fixture('worker-churn.mjs'), distEntry, backend, '100']);
    expect(result.echoed).toBeGreaterThan(0);
    expect(result.fdsAfter).toBe(result.fdsBefore);
  });

  it('1 000 open/use/close cycles leave descriptors and memory flat, and dropped loops are closed by their finalizer', { timeout: 120_000 }, async () => {
    const { closed, dropped } = (await child(['--expose-gc', fixture('loop-cycles.mjs'), distEntry, backend, '1000'])) as {
      closed: { rssGrowthMiB: number; fdGrowth: number };
      dropped: { fdGrowth: number };
    };
    expect(closed.fdGrowth).toBe(0);
    // A leak of the 1 MiB arena per loop would be ~1 000 MiB; what remains is the allocator's.
    expect(closed.rssGrowthMiB).toBeLessThan(100);
    expect(dropped.fdGrowth).toBe(0);
  });

  it("a native loop's method kept after the loop's object was collected throws instead of reaching the freed loop", async () => {
    // Each loop's methods are functions of its own (native/binding/addon.cc, bind_methods), which
    // a caller can take away from the object and outlive it with.
    const result = await child(['--expose-gc', fixture('method-after-collect.mjs'), packageRoot, backend]);
    expect(result).toEqual({ collected: true, messages: ["this loop's object was collected", "this loop's object was collected"] });
  });
});
