// The instruction-count benchmark: each echo server's user-space instructions per round trip,
// counted by valgrind's callgrind over a fixed number of round trips, and the L2 misses of its
// loop's thread in callgrind's model of this machine's caches. Unlike CPU time, neither moves
// with the load of a shared host, so they show a 3 % change that timing turns cannot; they do not
// see the kernel (a syscall is one instruction to them), which CPU time does — the two views
// together say where a server's cost sits. The misses are the part of the cost that grows with
// the connections: at 2 000 the state a round trip touches no longer fits the L2.
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { startLoadgen } from './lib/loadgen.js';
import type { Table } from './lib/table.js';
import { ServerProcess, type ServerSpec } from './lib/server.js';

const run = promisify(execFile);

export interface InstructionOptions {
  servers: ServerSpec[];
  connections: number[];
  /** Round trips before counting starts: the JIT compiles the hot paths meanwhile. */
  warmupRoundTrips: number;
  /** Round trips counted. */
  roundTrips: number;
}

export interface InstructionResult {
  server: string;
  connections: number;
  /** User-space instructions per round trip of the server's main thread, where its loop runs. */
  instructionsPerRoundTrip: number;
  /**
   * Those of its other threads: V8's compiler and GC helpers. Under valgrind's slowness the JIT
   * is still compiling after the warm-up (~1 200-2 500 a round trip), which a server at full
   * speed has long done; so they are shown apart, not added.
   */
  otherThreadsPerRoundTrip: number;
  /** L2 misses (reads and writes of data, instruction fetches) per round trip of the main thread; NaN without a cache model. */
  l2MissesPerRoundTrip: number;
  /**
   * This count less that of the backend's native echo (0 for the echo itself; NaN without it):
   * the cost of the JavaScript layers, as the two share the backend's code below them.
   */
  overNative: number;
}

/** Whether valgrind's callgrind and callgrind_control can be run here. */
export async function callgrindAvailable(): Promise<boolean> {
  try {
    await run('valgrind', ['--version']);
    await run('callgrind_control', ['--version']);
    return true;
  } catch {
    return false;
  }
}

export async function countInstructions(options: InstructionOptions, reported: (result: InstructionResult) => void): Promise<InstructionResult[]> {
  const directory = await mkdtemp(path.join(tmpdir(), 'twinloop-callgrind-'));
  const results: InstructionResult[] = [];
  try {
    for (const connections of options.connections) {
      const cell: InstructionResult[] = [];
      for (const spec of options.servers) {
        const counted = await countOne(spec, connections, options, path.join(directory, `${spec.id.replace(/\W/g, '-')}-${connections}.out`));
        cell.push({ server: spec.id, connections, ...counted, overNative: NaN });
      }
      for (const result of cell) {
        const native = cell.find((other) => other.server === `${result.server.split('/')[0]}/native`);
        result.overNative = native === undefined ? NaN : result.instructionsPerRoundTrip - native.instructionsPerRoundTrip;
        reported(result);
      }
      results.push(...cell);
    }
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
  return results;
}

type Counted = Pick<InstructionResult, 'instructionsPerRoundTrip' | 'otherThreadsPerRoundTrip' | 'l2MissesPerRoundTrip'>;

// One server under callgrind: warmed up, then counted from `callgrind_control -i on` to `-i off`,
// per thread (the main thread, all others), per round trip.
async function countOne(spec: ServerSpec, connections: number, options: InstructionOptions, outFile: string): Promise<Counted> {
  const caches = await cacheModel();
  const valgrind = ['valgrind', '--quiet', '--tool=callgrind', '--instr-atstart=no', '--separate-threads=yes', `--callgrind-out-file=${outFile}`, ...caches];
  const server = await ServerProcess.start(spec, null, [], valgrind);
  let roundTrips = 0;
  try {
    const load = (requests: number) =>
      startLoadgen(['--host', '127.0.0.1', '--port', String(server.ready.port), '--connections', String(connections), '--requests', String(requests), '--duration', '600'], null).report;
    await load(options.warmupRoundTrips);
    await run('callgrind_control', ['-i', 'on', String(server.pid)]);
    const report = await load(options.roundTrips);
    await run('callgrind_control', ['-i', 'off', String(server.pid)]);
    roundTrips = report?.round_trips ?? 0;
  } finally {
    await server.stop();  // callgrind writes its file as the server exits
  }
  // callgrind names each thread's file after the out file: <file>-01 for the main thread, -02, …
  const files = (await readdir(path.dirname(outFile))).filter((name) => name.startsWith(`${path.basename(outFile)}-`)).sort();
  const counts = await Promise.all(files.map(async (name) => totals(await readFile(path.join(path.dirname(outFile), name), 'utf8'))));
  if (counts.length === 0) throw new Error(`callgrind wrote no profile for ${spec.id}`);
  const [main, ...others] = counts;
  // LL is the L2 in the model (cacheModel): ILmr, DLmr and DLmw are its misses.
  const l2Misses = caches.length === 0 ? NaN : ['ILmr', 'DLmr', 'DLmw'].reduce((sum, event) => sum + (main!.get(event) ?? 0), 0);
  return {
    instructionsPerRoundTrip: main!.get('Ir')! / roundTrips,
    otherThreadsPerRoundTrip: others.reduce((sum, count) => sum + count.get('Ir')!, 0) / roundTrips,
    l2MissesPerRoundTrip: l2Misses / roundTrips,
  };
}

// callgrind's out file names its events (`events: Ir …`) and ends with their `totals:` (an
// earlier `summary:` line can be a part's).
function totals(profile: string): Map<string, number> {
  const events = /^events: (.+)$/m.exec(profile)?.[1]?.trim().split(/\s+/);
  const values = [...profile.matchAll(/^totals: (.+)$/gm)].pop()?.[1]?.trim().split(/\s+/).map(Number);
  if (events === undefined || values === undefined || !events.includes('Ir')) throw new Error('callgrind wrote no totals');
  return new Map(events.map((event, i) => [event, values[i] ?? 0]));
}

// callgrind's cache simulator set to this machine's first-level caches and per-core L2 (as its
// last level: the L3 is shared with the load generator and, on a VM, with neighbours), read from
// sysfs; none (no miss counts) where sysfs does not say or callgrind cannot model it (its
// caches need a power-of-two number of sets).
async function cacheModel(): Promise<string[]> {
  const caches = new Map<string, string | null>();  // '1Data' -> 'bytes,ways,line' (null: not modelled)
  for (let index = 0; ; index++) {
    const dir = `/sys/devices/system/cpu/cpu0/cache/index${index}`;
    let fields: string[];
    try {
      fields = (await Promise.all(['level', 'type', 'size', 'ways_of_associativity', 'coherency_line_size'].map((name) => readFile(`${dir}/${name}`, 'utf8')))).map((field) => field.trim());
    } catch {
      break;
    }
    const [level, type, size, ways, line] = fields as [string, string, string, string, string];
    const bytes = Number.parseInt(size, 10) * ({ K: 1024, M: 1024 * 1024 }[size.slice(-1)] ?? 1);
    const sets = bytes / Number(ways) / Number(line);
    caches.set(`${level}${type}`, Number.isInteger(sets) && (sets & (sets - 1)) === 0 ? `${bytes},${ways},${line}` : null);
  }
  const [i1, d1, l2] = ['1Instruction', '1Data', '2Unified'].map((name) => caches.get(name));
  return i1 && d1 && l2 ? ['--cache-sim=yes', `--I1=${i1}`, `--D1=${d1}`, `--LL=${l2}`] : [];
}

export function instructionTable(results: InstructionResult[]): Table {
  return {
    header: ['connections', 'server', 'instructions/rt', 'over native', 'L2 misses/rt', 'other threads'],
    rows: results.map((result) => [
      `${result.connections}`,
      result.server,
      Math.round(result.instructionsPerRoundTrip).toLocaleString('en'),
      Number.isNaN(result.overNative) ? '—' : `+${Math.round(result.overNative).toLocaleString('en')}`,
      Number.isNaN(result.l2MissesPerRoundTrip) ? '—' : result.l2MissesPerRoundTrip.toFixed(1),
      Math.round(result.otherThreadsPerRoundTrip).toLocaleString('en'),
    ]),
  };
}
