// The instruction-count benchmark: each echo server's user-space instructions per round trip,
// counted by valgrind's callgrind over a fixed number of round trips. Unlike CPU time, a count
// does not move with the load of a shared host, so it shows a 3 % change that timing turns
// cannot; it does not see the kernel (a syscall is one instruction to it) or cache misses, which
// CPU time does — the two views together say where a server's cost sits.
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
        const [main, others] = await countOne(spec, connections, options, path.join(directory, `${spec.id.replace(/\W/g, '-')}-${connections}.out`));
        cell.push({ server: spec.id, connections, instructionsPerRoundTrip: main, otherThreadsPerRoundTrip: others, overNative: NaN });
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

// One server under callgrind: warmed up, then counted from `callgrind_control -i on` to `-i off`.
// Counted per thread: [main thread, all others], per round trip.
async function countOne(spec: ServerSpec, connections: number, options: InstructionOptions, outFile: string): Promise<[number, number]> {
  const valgrind = ['valgrind', '--quiet', '--tool=callgrind', '--instr-atstart=no', '--separate-threads=yes', `--callgrind-out-file=${outFile}`];
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
  const counts = await Promise.all(files.map(async (name) => totalInstructions(await readFile(path.join(path.dirname(outFile), name), 'utf8'))));
  if (counts.length === 0) throw new Error(`callgrind wrote no profile for ${spec.id}`);
  const [main, ...others] = counts;
  return [main! / roundTrips, others.reduce((sum, count) => sum + count, 0) / roundTrips];
}

// callgrind's out file ends with `totals: <Ir>` (an earlier `summary:` line can be a part's).
function totalInstructions(profile: string): number {
  const totals = [...profile.matchAll(/^totals: (\d+)$/gm)].pop();
  if (totals === undefined) throw new Error('callgrind wrote no totals');
  return Number(totals[1]);
}

export function instructionTable(results: InstructionResult[]): Table {
  return {
    header: ['connections', 'server', 'instructions/rt', 'over native', 'other threads'],
    rows: results.map((result) => [
      `${result.connections}`,
      result.server,
      Math.round(result.instructionsPerRoundTrip).toLocaleString('en'),
      Number.isNaN(result.overNative) ? '—' : `+${Math.round(result.overNative).toLocaleString('en')}`,
      Math.round(result.otherThreadsPerRoundTrip).toLocaleString('en'),
    ]),
  };
}
