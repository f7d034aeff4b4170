// What a run records, and the per-cell summary: medians over rounds, and each server's ratio to
// Node `net` and to its backend's native and standalone echoes, taken within the same round.
import type { IdleResult, LoadResult, Workload } from './measure.js';
import type { ServerSpec } from './server.js';

export interface Measurement {
  round: number;
  cell: string;
  workload: Workload;
  server: ServerSpec;
  load?: LoadResult;
  idle?: IdleResult;
  error?: string;
}

export interface Range {
  median: number;
  min: number;
  max: number;
}

export interface SummaryRow {
  cell: string;
  workload: Workload;
  server: ServerSpec;
  rounds: number;
  /** Server CPU µs per round trip (load), or RSS bytes per connection (idle). */
  cost: Range | null;
  /** Node net's cost ÷ this server's, per round: > 1 is cheaper than net. */
  vsNet: Range | null;
  /** The native echo's CPU ÷ this server's, per round: 1 is the ceiling (load workloads only). */
  vsNative: Range | null;
  /** The standalone echo's CPU ÷ this server's, per round: what Node's loop and the API cost. */
  vsStandalone: Range | null;
  roundTripsPerS: number | null;
  /** Of the server's CPU per round trip, its user time (median over rounds). */
  userCpuUsPerRoundTrip: number | null;
  syscallsPerRoundTrip: number | null;
  /** The server process's context switches per round trip (voluntary + involuntary, all threads). */
  contextSwitchesPerRoundTrip: number | null;
  /** Cores the server and the load generator kept busy (median over rounds). */
  serverCpuShare: number | null;
  clientCpuShare: number | null;
  /** The load generator's errors in the worst round (HTTP: connect, read, write, status, timeout). */
  loadErrors: number;
  latencyUs: { p50: number | null; p99: number | null; p999: number | null };
  heapBytesPerConnection: number | null;
  starvedConnections: number;
  errors: string[];
}

export function costOf(m: Measurement): number | null {
  return m.load?.serverCpuUsPerRoundTrip ?? m.idle?.rssBytesPerConnection ?? null;
}

/** The ratio `reference ÷ m` for each round in which both were measured. */
function ratios(m: Measurement[], all: Measurement[], reference: (m: Measurement) => string | null): number[] {
  const out: number[] = [];
  for (const one of m) {
    const id = reference(one);
    const ref = all.find((other) => other.cell === one.cell && other.round === one.round && other.server.id === id);
    const [a, b] = [ref && costOf(ref), costOf(one)];
    if (a != null && b != null && b > 0) out.push(a / b);
  }
  return out;
}

export function range(values: number[]): Range | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]! };
}

const median = (values: (number | null | undefined)[]): number | null =>
  range(values.filter((v): v is number => v != null))?.median ?? null;

export function summarize(all: Measurement[]): SummaryRow[] {
  const groups = new Map<string, Measurement[]>();
  for (const m of all) {
    const key = `${m.cell}\u0000${m.server.id}`;
    groups.set(key, [...(groups.get(key) ?? []), m]);
  }
  return [...groups.values()].map((group) => {
    const { cell, workload, server } = group[0]!;
    const ok = group.filter((m) => m.error === undefined);
    return {
      cell,
      workload,
      server,
      rounds: ok.length,
      cost: range(ok.map(costOf).filter((v): v is number => v !== null)),
      vsNet: server.id === 'net' ? null : range(ratios(ok, all, () => 'net')),
      vsNative: server.backend === 'node' || workload.kind === 'idle' ? null : range(ratios(ok, all, (m) => `${m.server.backend}/native`)),
      vsStandalone: server.backend === 'node' || workload.kind === 'idle' ? null : range(ratios(ok, all, (m) => `${m.server.backend}/standalone`)),
      roundTripsPerS: median(ok.map((m) => m.load?.roundTripsPerS)),
      userCpuUsPerRoundTrip: median(ok.map((m) => m.load?.serverUserCpuUsPerRoundTrip)),
      syscallsPerRoundTrip: median(ok.map((m) => m.load?.syscallsPerRoundTrip)),
      contextSwitchesPerRoundTrip: median(ok.map((m) => m.load?.contextSwitchesPerRoundTrip)),
      serverCpuShare: median(ok.map((m) => m.load?.serverCpuShare)),
      clientCpuShare: median(ok.map((m) => m.load?.clientCpuShare)),
      loadErrors: Math.max(0, ...ok.map((m) => m.load?.errors ?? 0)),
      latencyUs: {
        p50: median(ok.map((m) => m.load?.latencyUs.p50)),
        p99: median(ok.map((m) => m.load?.latencyUs.p99)),
        p999: median(ok.map((m) => m.load?.latencyUs.p999)),
      },
      heapBytesPerConnection: median(ok.map((m) => m.idle?.heapBytesPerConnection)),
      starvedConnections: Math.max(0, ...ok.map((m) => m.load?.starvedConnections ?? 0)),
      errors: group.flatMap((m) => (m.error === undefined ? [] : [m.error])),
    };
  });
}
