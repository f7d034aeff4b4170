// The control channel every benchmark server speaks: one JSON line on stdout when it listens,
// then one JSON snapshot line per line read on stdin. The runner takes a snapshot at the start
// and at the end of the measured window and divides the differences; a snapshot is a few
// microseconds of work, and the reply is written after the figures are read.
import { createInterface } from 'node:readline';

export interface Counters {
  /** Connections open now. */
  connections: number;
  /** Requests answered so far, by the HTTP servers. */
  requests?: number;
  /** loop.stats() where the server has a twinloop loop. */
  loop?: Record<string, number>;
}

export interface Snapshot extends Counters {
  /** Server-side clock, µs: the window is timed where the CPU is measured. */
  timeUs: number;
  /** User + system CPU time of the whole process, µs (getrusage). */
  cpuUs: number;
  /** Of it, user time: the server's own code; the rest is the kernel's work for it. */
  userCpuUs: number;
  /**
   * Context switches of the whole process so far, voluntary + involuntary (getrusage: every
   * thread's, exited ones included): a thread per connection pays one each time it blocks.
   */
  contextSwitches: number;
  rssBytes: number;
  heapUsedBytes: number;
}

export interface Ready {
  port: number;
  info: Record<string, unknown>;
}

const gc = (globalThis as { gc?: () => void }).gc;

/**
 * Announces `ready` and answers `snapshot` (or `snapshot gc`: collect garbage first) on stdin.
 * `counters` may be asynchronous (worker threads answer by message); replies keep their order.
 */
export function serveControl(ready: Ready, counters: () => Counters | Promise<Counters>): void {
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  const lines = createInterface({ input: process.stdin });
  let previous: Promise<void> = Promise.resolve();
  lines.on('line', (line) => {
    if (line === 'snapshot gc') gc?.();
    const { userCPUTime, systemCPUTime, voluntaryContextSwitches, involuntaryContextSwitches } = process.resourceUsage();
    const timeUs = Number(process.hrtime.bigint() / 1000n);
    const { rss, heapUsed } = process.memoryUsage();
    const figures = {
      timeUs,
      cpuUs: userCPUTime + systemCPUTime,
      userCpuUs: userCPUTime,
      contextSwitches: voluntaryContextSwitches + involuntaryContextSwitches,
      rssBytes: rss,
      heapUsedBytes: heapUsed,
    };
    const counted = counters();
    previous = previous
      .then(() => counted)
      .then((now) => void process.stdout.write(`${JSON.stringify({ ...figures, ...now } satisfies Snapshot)}\n`));
  });
  lines.on('close', () => void previous.then(() => process.exit(0)));
}
