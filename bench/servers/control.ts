// The control channel every benchmark server speaks: one JSON line on stdout when it listens,
// then one JSON snapshot line per line read on stdin. The runner takes a snapshot at the start
// and at the end of the measured window and divides the differences; a snapshot is a few
// microseconds of work, and the reply is written after the figures are read.
import { createInterface } from 'node:readline';

export interface Counters {
  /** Connections open now. */
  connections: number;
  /** loop.stats() where the server has a twinloop loop. */
  loop?: Record<string, number>;
}

export interface Snapshot extends Counters {
  /** Server-side clock, µs: the window is timed where the CPU is measured. */
  timeUs: number;
  /** User + system CPU time of the whole process, µs (getrusage). */
  cpuUs: number;
  rssBytes: number;
  heapUsedBytes: number;
}

export interface Ready {
  port: number;
  info: Record<string, unknown>;
}

const gc = (globalThis as { gc?: () => void }).gc;

/** Announces `ready` and answers `snapshot` (or `snapshot gc`: collect garbage first) on stdin. */
export function serveControl(ready: Ready, counters: () => Counters): void {
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line === 'snapshot gc') gc?.();
    const { user, system } = process.cpuUsage();
    const timeUs = Number(process.hrtime.bigint() / 1000n);
    const { rss, heapUsed } = process.memoryUsage();
    const snapshot: Snapshot = { timeUs, cpuUs: user + system, rssBytes: rss, heapUsedBytes: heapUsed, ...counters() };
    process.stdout.write(`${JSON.stringify(snapshot)}\n`);
  });
  lines.on('close', () => process.exit(0));
}
