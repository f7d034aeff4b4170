// The examples of each model run as their one documented command (npx tsx examples/<name>.ts),
// exit 0 and print what they did.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { backends } from './helpers.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const tsx = path.join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'tsx.cmd' : 'tsx');

async function example(name: string, args: string[] = []): Promise<string> {
  const { stdout } = await run(tsx, [path.join(root, 'examples', name), ...args], { cwd: root, timeout: 20_000 });
  return stdout;
}

describe.each(backends)('the examples on %s', (backend) => {
  it('callbacks.ts echoes every message through Proactor API callbacks', async () => {
    const stdout = await example('callbacks.ts', ['--backend', backend, '--messages', '3']);
    expect(stdout).toContain(`backend ${backend}, native pattern: `);
    for (let i = 1; i <= 3; i++) expect(stdout).toContain(`[client] read completed: 8 bytes: "hello #${i}", the same bytes`);
    expect(stdout).toContain('[server] read completed with 0 bytes: the client closed');
    expect(stdout).toMatch(/loop\.stats\(\): \d+ syscalls, \d+ events/);
    expect(stdout).not.toContain('DIFFERENT');
  });

  it('futures-executor.ts reads and verifies the file in both phases, and names who executed the reads', async () => {
    const stdout = await example('futures-executor.ts', ['--backend', backend, '--reads', '32', '--depth', '8']);
    expect(stdout).toContain(`${backend} — a `);
    expect(stdout).toContain(`256 KiB reads: ${32 * 256 * 1024} bytes read and verified`);
    expect(stdout).toContain(`4 KiB reads: ${32 * 4096} bytes read and verified`);
    expect(stdout).toMatch(/removed .*twinloop-futures-/);
    if (process.platform === 'linux') expect(stdout.match(/executed by: /g)).toHaveLength(2);
  });

  it('thread-per-connection.ts runs unchanged on this backend and verifies every echo', async () => {
    const stdout = await example('thread-per-connection.ts', ['--backend', backend, '--clients', '3', '--messages', '2']);
    expect(stdout).toContain(`backend ${backend}, pattern: `);
    expect(stdout).toContain('6 round trips in');
    expect(stdout).toContain('every byte verified');
    expect(stdout).toMatch(/\d+ context switches of the whole process/);
  });
});

describe('examples/thread-per-connection.ts on its own backend', () => {
  it("serves on 'threads' where the build has it, else says in one line that it is unavailable", async () => {
    const stdout = await example('thread-per-connection.ts', ['--clients', '3', '--messages', '2']);
    if (!(backends as string[]).includes('threads')) {
      expect(stdout.trimEnd().split('\n')).toEqual([expect.stringMatching(/^backend 'threads' is unavailable in this build; available: /)]);
      return;
    }
    expect(stdout).toContain('backend threads, pattern: ');
    expect(stdout).toContain('every byte verified');
    // One thread per connection, counted in /proc.
    if (process.platform === 'linux') {
      const grown = /3 connections open: the process has \d+ threads, (\d+) more than with none/.exec(stdout);
      expect(Number(grown?.[1])).toBeGreaterThanOrEqual(3);
    }
  });
});
