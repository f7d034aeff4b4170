// The benchmark's C++ echoes: the native echo on Node's loop and the standalone echo on a loop of
// its own, on every backend that has both, driven by the load generator through the control
// channel the benchmark uses (bench/lib/server.ts). Their rows are the references every other
// row is divided by, so they must echo every byte and count what they did.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

import { beforeAll, describe, expect, it } from 'vitest';

import { loadgenPath, nativeEchoPath, root, standaloneEchoPath } from '../bench/lib/paths.js';
import { ServerProcess } from '../bench/lib/server.js';
import { backends } from './helpers.js';

const execFileAsync = promisify(execFile);
const built = process.platform === 'linux' && [loadgenPath, nativeEchoPath, standaloneEchoPath].every((file) => existsSync(file));
const kRequests = 2000;

describe.skipIf(!built)('the benchmark\'s C++ echoes', () => {
  // The servers run compiled, as `npm run bench` compiles them (and the package as dist/ has it).
  beforeAll(() => void execFileSync('npx', ['tsup', '--silent', '--config', 'bench/tsup.config.ts'], { cwd: root }), 60_000);
  describe.each(backends)('%s', (backend) => {
    it.each(['standalone', 'native'])('%s: echoes every byte and reports its counters', async (api) => {
      const server = await ServerProcess.start({ id: `${backend}/${api}`, backend, api }, null);
      try {
        expect(server.ready.info).toMatchObject({ backend });
        const before = await server.snapshot();
        const { stdout } = await execFileAsync(
          loadgenPath,
          ['--host', '127.0.0.1', '--port', String(server.ready.port), '--connections', '8', '--requests', String(kRequests), '--duration', '10', '--json'],
          { timeout: 15_000 },
        );
        const load = JSON.parse(stdout) as { round_trips: number; corrupt_bytes: number; errors: number };
        expect(load).toMatchObject({ round_trips: kRequests, corrupt_bytes: 0, errors: 0 });
        const after = await server.snapshot();
        expect(after.timeUs).toBeGreaterThan(before.timeUs);
        expect(after.cpuUs).toBeGreaterThan(before.cpuUs);
        expect(after.userCpuUs).toBeGreaterThanOrEqual(before.userCpuUs);
        expect(after.userCpuUs).toBeLessThanOrEqual(after.cpuUs);
        expect(after.rssBytes).toBeGreaterThan(0);
        // Each round trip is at least one event (the data) on every backend; the standalone echo
        // publishes its counters after each wake, so they are there once the load has ended.
        expect(after.loop!.events! - before.loop!.events!).toBeGreaterThanOrEqual(kRequests);
        expect(after.loop!.syscalls!).toBeGreaterThan(before.loop!.syscalls!);
        expect(after.loop!.wakes!).toBeGreaterThan(before.loop!.wakes!);
      } finally {
        await server.stop();
      }
    });
  });
});
