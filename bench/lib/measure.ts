// One measurement: one workload against one running server, with the server's own CPU time,
// counters and memory taken over the load generator's measured window.
import { setTimeout as sleep } from 'node:timers/promises';

import type { Snapshot } from '../servers/control.js';
import { startLoadgen, type LoadgenReport, type LoadgenRun } from './loadgen.js';
import type { ServerProcess } from './server.js';
import { processCpuSeconds, startWrk } from './wrk.js';

export type Workload =
  | { kind: 'echo'; size: number; connections: number; depth: number }
  | { kind: 'churn'; connections: number }
  | { kind: 'rate'; size: number; connections: number; rate: number }
  | { kind: 'idle'; connections: number }
  /** HTTP/1.1 keep-alive GETs of `path`, whose body is `body` bytes, from wrk. */
  | { kind: 'http'; path: string; body: number; connections: number };

/** The workloads of the native echo load generator. */
export type EchoLoad = Extract<Workload, { kind: 'echo' | 'churn' | 'rate' }>;

export interface Timing {
  warmupS: number;
  durationS: number;
}

/** One load measurement; for HTTP, a round trip is a request. */
export interface LoadResult {
  roundTripsPerS: number;
  mbPerS: number;
  /** The primary figure: the server process's user + system CPU per round trip. */
  serverCpuUsPerRoundTrip: number;
  /**
   * Of it, user time: what the server's own code costs. The rest is the kernel's work for it,
   * which grows too when that code touches more memory (the kernel's socket state leaves the cache).
   */
  serverUserCpuUsPerRoundTrip: number;
  /** Cores the server kept busy. */
  serverCpuShare: number;
  /** The backend's own syscall count (loop.stats(); not libuv's epoll_wait); null for Node net. */
  syscallsPerRoundTrip: number | null;
  wakesPerRoundTrip: number | null;
  /** The server process's context switches (voluntary + involuntary, all its threads) per round trip. */
  contextSwitchesPerRoundTrip: number | null;
  latencyUs: LoadgenReport['latency_us'];
  starvedConnections: number;
  errors: number;
  /** Cores the load generator kept busy (null: not measured). */
  clientCpuShare: number | null;
}

export interface IdleResult {
  rssBytesPerConnection: number;
  heapBytesPerConnection: number;
}

const kConnectTimeoutMs = 120_000;

export function describe(workload: Workload): string {
  const size = (bytes: number): string => (bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} B`);
  switch (workload.kind) {
    case 'echo':
      return `echo ${size(workload.size)} × ${workload.connections}${workload.depth > 1 ? ` depth ${workload.depth}` : ''}`;
    case 'churn':
      return `churn × ${workload.connections}`;
    case 'rate':
      return `rate ${workload.rate}/s ${size(workload.size)} × ${workload.connections}`;
    case 'idle':
      return `idle × ${workload.connections}`;
    case 'http':
      return `http ${size(workload.body)} × ${workload.connections}`;
  }
}

function loadgenArgs(server: ServerProcess, workload: EchoLoad, timing: Timing): string[] {
  const args = ['--host', '127.0.0.1', '--port', String(server.ready.port), '--connections', String(workload.connections)];
  args.push('--warmup', String(timing.warmupS), '--duration', String(timing.durationS));
  if (workload.kind === 'echo') args.push('--size', String(workload.size), '--depth', String(workload.depth));
  if (workload.kind === 'rate') args.push('--size', String(workload.size), '--rate', String(workload.rate));
  if (workload.kind === 'churn') args.push('--churn');
  return args;
}

export async function measureLoad(
  server: ServerProcess,
  workload: EchoLoad,
  timing: Timing,
  clientCpu: number | null,
): Promise<LoadResult> {
  const run = startLoadgen(loadgenArgs(server, workload, timing), clientCpu);
  await Promise.race([run.measuring, run.report]);
  // The window ends before the load generator's does, so closing connections stays outside it.
  const start = await server.snapshot();
  await sleep(timing.durationS * 900);
  const end = await server.snapshot();
  const report = (await run.report)!;
  await drained(server);
  if (report.round_trips === 0) {
    throw new Error(`no round trip completed in ${timing.durationS} s${report.first_error ? ` (${report.first_error})` : ''}`);
  }

  const seconds = (end.timeUs - start.timeUs) / 1e6;
  const roundTripsPerS = report.round_trips / report.duration_s;
  const perRoundTrip = (counter: (s: Snapshot) => number | undefined): number | null => {
    const [a, b] = [counter(start), counter(end)];
    return a === undefined || b === undefined || roundTripsPerS === 0 ? null : (b - a) / seconds / roundTripsPerS;
  };
  return {
    roundTripsPerS,
    mbPerS: report.mb_per_s_one_way,
    serverCpuUsPerRoundTrip: perRoundTrip((s) => s.cpuUs)!,
    serverUserCpuUsPerRoundTrip: perRoundTrip((s) => s.userCpuUs)!,
    serverCpuShare: (end.cpuUs - start.cpuUs) / 1e6 / seconds,
    syscallsPerRoundTrip: perRoundTrip((s) => s.loop?.syscalls),
    wakesPerRoundTrip: perRoundTrip((s) => s.loop?.wakes),
    contextSwitchesPerRoundTrip: perRoundTrip((s) => s.contextSwitches),
    latencyUs: report.latency_us,
    starvedConnections: report.starved.distinct,
    errors: report.errors,
    clientCpuShare: report.client_cpu_s / report.duration_s,
  };
}

// wrk's connections are up this long after it starts; the measured window begins then.
const kWrkSettleMs = 200;

/**
 * One HTTP measurement: an unmeasured wrk run of the warm-up, then the measured one. Requests and
 * CPU are the server's own counts over a window inside wrk's run; latency is wrk's whole run.
 */
export async function measureHttp(
  server: ServerProcess,
  workload: Extract<Workload, { kind: 'http' }>,
  timing: Timing,
  clientCpu: number | null,
): Promise<LoadResult> {
  const url = `http://127.0.0.1:${server.ready.port}${workload.path}`;
  const wrk = (durationS: number) => startWrk({ url, connections: workload.connections, durationS: Math.max(1, Math.round(durationS)), cpu: clientCpu });
  if (timing.warmupS > 0) {
    await wrk(timing.warmupS).report;
    await drained(server);
  }
  const durationS = Math.max(1, Math.round(timing.durationS));
  const run = wrk(durationS);
  let failed: unknown = null;
  run.report.catch((error: unknown) => (failed = error));
  await sleep(kWrkSettleMs);
  if (failed !== null) throw failed;
  const start = await server.snapshot();
  const clientStart = processCpuSeconds(run.pid);
  await sleep(durationS * 1000 - kWrkSettleMs * 2);
  const end = await server.snapshot();
  const clientEnd = processCpuSeconds(run.pid);
  const report = await run.report;
  await drained(server);

  const seconds = (end.timeUs - start.timeUs) / 1e6;
  const requests = (end.requests ?? 0) - (start.requests ?? 0);
  const wrkErrors = Object.values(report.errors).reduce((a, b) => a + b, 0);
  if (requests === 0) throw new Error(`no request answered in the window (wrk: ${report.requests} requests, ${wrkErrors} errors)`);
  const perRequest = (counter: (s: Snapshot) => number | undefined): number | null => {
    const [a, b] = [counter(start), counter(end)];
    return a === undefined || b === undefined ? null : (b - a) / requests;
  };
  return {
    roundTripsPerS: requests / seconds,
    mbPerS: report.bytes / (report.duration_us / 1e6) / 1e6,
    serverCpuUsPerRoundTrip: perRequest((s) => s.cpuUs)!,
    serverUserCpuUsPerRoundTrip: perRequest((s) => s.userCpuUs)!,
    serverCpuShare: (end.cpuUs - start.cpuUs) / 1e6 / seconds,
    syscallsPerRoundTrip: perRequest((s) => s.loop?.syscalls),
    wakesPerRoundTrip: perRequest((s) => s.loop?.wakes),
    contextSwitchesPerRoundTrip: perRequest((s) => s.contextSwitches),
    latencyUs: { p50: report.latency_us.p50, p90: report.latency_us.p90, p99: report.latency_us.p99, p999: report.latency_us.p999, max: report.latency_us.max, mean: report.latency_us.mean },
    starvedConnections: 0,
    errors: wrkErrors,
    clientCpuShare: clientStart === null || clientEnd === null ? null : (clientEnd - clientStart) / seconds,
  };
}

/**
 * Holds `connections` idle connections and reports what each costs the server in memory: the
 * growth from the first quarter held to all of them, per connection of the other three quarters.
 * The first connections also page in the code of the accept and read paths and start the
 * server's tables (a few MB once per process, not per connection: counted from a fresh server,
 * it added 0.2 KiB a connection at 19 000).
 */
export async function measureIdle(server: ServerProcess, connections: number, clientCpu: number | null): Promise<IdleResult> {
  const warm = Math.floor(connections / 4);
  const runs: LoadgenRun[] = [];
  let failed: unknown = null;
  // One round trip per second in total keeps each load generator's connections open and checked.
  const hold = async (count: number, total: number): Promise<void> => {
    const args = ['--host', '127.0.0.1', '--port', String(server.ready.port), '--connections', String(count)];
    const run = startLoadgen([...args, '--rate', '1', '--duration', '3600'], clientCpu);
    run.report.catch((error: unknown) => (failed = error));
    runs.push(run);
    const deadline = Date.now() + kConnectTimeoutMs;
    while ((await server.snapshot()).connections < total) {
      if (failed !== null) throw failed;
      if (Date.now() > deadline) throw new Error(`only ${(await server.snapshot()).connections} of ${total} connections after ${kConnectTimeoutMs / 1000} s`);
      await sleep(200);
    }
  };
  try {
    await hold(warm, warm);
    const before = await server.snapshot(true);
    await hold(connections - warm, connections);
    const held = await server.snapshot(true);
    return {
      rssBytesPerConnection: (held.rssBytes - before.rssBytes) / (connections - warm),
      heapBytesPerConnection: (held.heapUsedBytes - before.heapUsedBytes) / (connections - warm),
    };
  } finally {
    for (const run of runs) run.stop();
    await Promise.all(runs.map((run) => run.report.catch(() => null)));
    await drained(server);
  }
}

// The next measurement starts only once the server has closed this one's connections.
async function drained(server: ServerProcess): Promise<void> {
  for (let i = 0; i < 100 && (await server.snapshot()).connections > 0; i++) await sleep(100);
}
