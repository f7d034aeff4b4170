// twinloop's benchmark: every available backend through the Reactor API, the Proactor API and the
// net layer, beside Node's `net`, each backend's native C++ echo on Node's loop and the same echo
// on a loop of its own (standalone: the primitive alone), under one native load generator. The primary figure is server CPU time per round trip (see ../shared/DESIGN.md,
// "Performance goals"); servers take turns within each round and every ratio is taken within it.
//
//   npm run bench                  quick default (≤ 2 min): 64 B echo × 50 connections
//   npm run bench -- --full        the whole matrix (echo sizes × connections, churn, fixed rate, idle)
//   npm run bench -- --backends epoll,io_uring --sizes 64,4096 --connections 50,1000 --duration 5
//   npm run bench -- --http        HTTP/1.1 keep-alive from wrk: node:http on net and on twinloop
//   npm run bench -- --workers 1,2 the twinloop servers on 1 and on 2 worker threads (SO_REUSEPORT)
//   npm run bench -- --instructions  user-space instructions and L2 misses per round trip, under callgrind
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { availableBackends, type BackendName } from 'twinloop';
import { renderCharts } from './lib/charts.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { describe, measureHttp, measureIdle, measureLoad, type EchoLoad, type LoadResult, type Timing, type Workload } from './lib/measure.js';
import { loadgenPath, nativeEchoPath, resultsDir, root, standaloneEchoPath } from './lib/paths.js';
import { markdownReport } from './lib/report.js';
import { costOf, summarize, type Measurement } from './lib/results.js';
import { ServerProcess, type ServerSpec } from './lib/server.js';
import { benchmarkFiles, fileTable } from './files.js';
import { callgrindAvailable, countInstructions, instructionTable } from './instructions.js';
import { echoView, httpView, idleSummary, liveHeader, liveRow, loadSummary, markdownTable, textTable, type View } from './lib/table.js';
import { ensureWrk } from './lib/wrk.js';

const usage = `usage: npm run bench -- [options]
  --full                 the whole matrix instead of the quick default
  --backends LIST        e.g. epoll,io_uring (default: every available backend)
  --apis LIST            twinloop servers: standalone,native,net,reactor,proactor (default: all)
  --workloads LIST       echo,churn,rate,idle (default: echo; --full: all)
  --sizes LIST           echo message bytes (default 64; --full: 64,4096,65536)
  --connections LIST     echo connections (default 50; --full: 1,100,1000,10000)
  --depth N              echo messages in flight per connection (default 1)
  --rate R               round trips/s of the fixed-rate workload (default 10000)
  --idle LIST            idle connections held (default: 1000 and 19000, within the fd limit)
  --duration S           measured seconds per turn (default 2; --full: 3)
  --warmup S             unmeasured seconds before each turn (default 0.5; --full: 1)
  --rounds N             rounds of turns (default 2)
  --workers LIST         worker threads of the twinloop servers, each with its own loop on the same
                         port (SO_REUSEPORT), e.g. 2 or 1,2 (default 1); Node net and the native
                         echo stay on one thread
  --http                 the HTTP benchmark instead: HTTP/1.1 keep-alive GETs of a 13 B and a 16 KiB
                         body from wrk (--connections default 100, --duration 3, --warmup 1), node:http
                         on Node's net, node:http on twinloop and a minimal responder on twinloop
  --files                the file-I/O benchmark instead: 4 KiB random and 1 MiB sequential reads at
                         queue depths 1/32/128, twinloop (io_uring, thread pool) vs node:fs/promises
  --instructions         user-space instructions and L2 misses (callgrind's model of this CPU's
                         caches) per 64 B echo round trip instead of CPU time, counted by valgrind's
                         callgrind over 50 000 round trips after 30 000 of warm-up (--connections
                         default 50, e.g. 50,2000): figures the host's load does not move; the
                         standalone echo, which does not start under valgrind, is left out`;

const { values } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    backends: { type: 'string' },
    apis: { type: 'string', default: 'standalone,native,net,reactor,proactor' },
    workloads: { type: 'string' },
    sizes: { type: 'string' },
    connections: { type: 'string' },
    depth: { type: 'string', default: '1' },
    rate: { type: 'string', default: '10000' },
    idle: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    rounds: { type: 'string', default: '2' },
    workers: { type: 'string', default: '1' },
    http: { type: 'boolean', default: false },
    files: { type: 'boolean', default: false },
    instructions: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

function fail(message: string): never {
  console.error(`bench: ${message}`);
  process.exit(1);
}

function numbers(name: string, list: string): number[] {
  const parsed = list.split(',').map(Number);
  if (parsed.some((n) => !Number.isFinite(n) || n <= 0)) fail(`--${name} takes positive numbers separated by commas, got '${list}'`);
  return parsed;
}

if (values.help) {
  console.log(usage);
  process.exit(0);
}
if (process.platform !== 'linux') fail('the load generator is Linux-only for now');

const full = values.full;
const available = availableBackends();
const backends = values.backends === undefined ? available : (values.backends.split(',') as BackendName[]);
for (const backend of backends) if (!available.includes(backend)) fail(`backend '${backend}' is not available here (available: ${available.join(', ')})`);
if (values.files) {
  await runFileBenchmark();
  process.exit(0);
}
if (values.instructions) {
  await runInstructionCount();
  process.exit(0);
}
const workerCounts = [...new Set(numbers('workers', values.workers))];
if (workerCounts.some((n) => !Number.isInteger(n))) fail(`--workers takes whole numbers, got '${values.workers}'`);
const rounds = numbers('rounds', values.rounds)[0]!;
const machine = describeMachine(backends);
const pin = machine.pinning;
// A server on several threads is spread over every core, so neither it nor its load generator is
// pinned: they share the machine, and the CPU columns say who had how much of it.
const pinFor = (spec: ServerSpec) => ((spec.workers ?? 1) > 1 ? null : pin);
const withWorkers = (id: string, spec: Omit<ServerSpec, 'id'>, workers: number): ServerSpec =>
  workers === 1 ? { id, ...spec } : { id: `${id}×${workers}`, ...spec, workers };
const notes: string[] = [];
if (workerCounts.some((n) => n > 1)) {
  notes.push(
    `twinloop servers on ${workerCounts.join(' and on ')} worker thread(s), each thread with its own loop listening on the same port with SO_REUSEPORT; ` +
      `their CPU is the whole process's. Node's net stays on one thread (Node ${process.version}'s net has no reusePort: it came in 22.12 / 23.1)` +
      `${values.http ? '' : ', and so does the native C++ echo'}. Servers with more than one worker and their load generator are not pinned.`,
  );
}
if (pin === null) notes.push(`nothing is pinned: ${machine.notPinned}`);
for (const note of notes) console.log(`bench: ${note}`);

// What the turns record (see record()), for the echo run or the HTTP run.
const measurements: Measurement[] = [];
const view: View = values.http ? httpView : echoView;
let turnsToRun = 0;
let started = Date.now();
if (values.http) {
  await runHttpBenchmark();
  process.exit(0);
}
if (!existsSync(loadgenPath)) fail(`no load generator at ${path.relative(root, loadgenPath)}: build it with \`npm run build:native\``);
let apis = values.apis.split(',');
// The idle cells' Node servers keep V8's young generation small (see the idle turns below).
const kIdleNodeFlags = ['--max-semi-space-size=1'];
// The C++ echoes: one thread each, whatever --workers says.
const nativeApis: string[] = ['native', 'standalone'];
for (const api of apis) if (!nativeApis.includes(api) && !['net', 'reactor', 'proactor'].includes(api)) fail(`unknown API '${api}' in --apis`);
for (const [api, built, what] of [['native', nativeEchoPath, 'native ceiling'], ['standalone', standaloneEchoPath, 'standalone row']] as const) {
  if (apis.includes(api) && !existsSync(built)) {
    console.warn(`bench: no ${api} echo at ${path.relative(root, built)} (build it with \`npm run build:native\`): running without the ${what}`);
    apis = apis.filter((other) => other !== api);
  }
}
const workloads = (values.workloads ?? (full ? 'echo,churn,rate,idle' : 'echo')).split(',');
for (const kind of workloads) if (!['echo', 'churn', 'rate', 'idle'].includes(kind)) fail(`unknown workload '${kind}' in --workloads`);
const timing: Timing = {
  durationS: numbers('duration', values.duration ?? (full ? '3' : '2'))[0]!,
  warmupS: Number(values.warmup ?? (full ? '1' : '0.5')),
};

const fdRoom = (machine.fdHardLimit ?? Infinity) - 100;  // each process also holds a few descriptors of its own

const cells: Workload[] = [];
if (workloads.includes('echo')) {
  const sizes = numbers('sizes', values.sizes ?? (full ? '64,4096,65536' : '64'));
  const connections = numbers('connections', values.connections ?? (full ? '1,100,1000,10000' : '50'));
  const depth = numbers('depth', values.depth)[0]!;
  for (const size of sizes) for (const n of connections) cells.push({ kind: 'echo', size, connections: n, depth });
  // The design's goal cells: fairness at 2000 connections, and 16 requests in flight.
  if (full && values.connections === undefined) cells.push({ kind: 'echo', size: 64, connections: 2000, depth: 1 }, { kind: 'echo', size: 64, connections: 100, depth: 16 });
}
if (workloads.includes('churn')) cells.push({ kind: 'churn', connections: 50 });
if (workloads.includes('rate')) cells.push({ kind: 'rate', size: 64, connections: 50, rate: numbers('rate', values.rate)[0]! });
const idleCells = workloads.includes('idle') ? numbers('idle', values.idle ?? `1000,${Math.min(19000, fdRoom)}`) : [];
for (const connections of idleCells) cells.push({ kind: 'idle', connections });
const runnable = cells.filter((cell) => cell.connections <= fdRoom);
for (const cell of cells) if (!runnable.includes(cell)) console.warn(`bench: skipping ${describe(cell)}: the fd hard limit is ${machine.fdHardLimit}`);

const servers: ServerSpec[] = [
  { id: 'net', backend: 'node', api: 'net' },
  ...backends.flatMap((backend) =>
    apis.flatMap((api) => (nativeApis.includes(api) ? [1] : workerCounts).map((workers) => withWorkers(`${backend}/${api}`, { backend, api }, workers))),
  ),
];
// Idle connections measure memory per connection; one thread is the question there.
const idleServers = servers.filter((spec) => (spec.workers ?? 1) === 1);
const loadCells = runnable.filter((cell) => cell.kind !== 'idle');
const turns = loadCells.length * rounds * servers.length + (runnable.length - loadCells.length) * idleServers.length;

console.log(`twinloop bench — ${machineLine(machine)}`);
console.log(`${runnable.length} cells × ${servers.length} servers${loadCells.length ? ` × ${rounds} rounds` : ''}, ${timing.durationS} s measured per turn (about ${Math.ceil((turns * (timing.durationS + timing.warmupS + 0.6)) / 60)} min)\n`);
console.log(liveHeader(view));

started = Date.now();
turnsToRun = turns;
function record(m: Measurement): void {
  measurements.push(m);
  const sameRound = (id: string): Measurement | undefined => measurements.find((o) => o.cell === m.cell && o.round === m.round && o.server.id === id);
  const ratioTo = (ref: Measurement | undefined): number | null => {
    const [a, b] = [ref ? costOf(ref) : null, costOf(m)];
    return a != null && b != null && b > 0 ? a / b : null;
  };
  const elapsed = (Date.now() - started) / 1000;
  const progress = `[${measurements.length}/${turnsToRun}, ${Math.round(elapsed)} s, ~${Math.round((elapsed / measurements.length) * (turnsToRun - measurements.length))} s left]`;
  const [vsNative, vsStandalone] = (['native', 'standalone'] as const).map((api) =>
    m.server.backend === 'node' || m.idle || !view.native ? null : ratioTo(sameRound(`${m.server.backend}/${api}`)),
  );
  console.log(liveRow(view, m, { vsNet: ratioTo(sameRound('net')), vsNative: vsNative!, vsStandalone: vsStandalone! }, progress));
}

async function attempt(m: Omit<Measurement, 'load' | 'idle' | 'error'>, run: () => Promise<Partial<Measurement>>): Promise<void> {
  if (!values.http && !existsSync(loadgenPath)) fail(`${path.relative(root, loadgenPath)} disappeared during the run (is a rebuild under way?)`);
  try {
    record({ ...m, ...(await run()) });
  } catch (error) {
    record({ ...m, error: (error as Error).message });
  }
}

// One long-lived process per server for all load cells: an idle server costs the others nothing.
// In each round of each cell the servers take turns, each round starting one server further on,
// so that no server always runs at the same point of a round (after the same neighbour, at the
// same stage of a drift in the host's speed). A server that cannot start (a backend whose native
// echo cannot run, say) fails its own turns, with the reason, and the others still run.
async function runTurns(
  specs: ServerSpec[],
  cells: Workload[],
  measure: (server: ServerProcess, workload: Workload, clientCpu: number | null) => Promise<LoadResult>,
): Promise<void> {
  if (cells.length === 0) return;
  const started = await Promise.allSettled(specs.map((spec) => ServerProcess.start(spec, pinFor(spec)?.server ?? null)));
  for (const workload of cells) {
    for (let round = 1; round <= rounds; round++) {
      for (let turn = 0; turn < specs.length; turn++) {
        const i = (turn + round - 1) % specs.length;
        const spec = specs[i]!;
        const server = started[i]!;
        await attempt({ round, cell: describe(workload), workload, server: spec }, async () => {
          if (server.status === 'rejected') throw server.reason;
          return { load: await measure(server.value, workload, pinFor(spec)?.client ?? null) };
        });
      }
    }
  }
  await Promise.all(started.map((server) => (server.status === 'fulfilled' ? server.value.stop() : undefined)));
}

await runTurns(servers, loadCells, (server, workload, clientCpu) => measureLoad(server, workload as EchoLoad, timing, clientCpu));
for (const workload of runnable.filter((cell) => cell.kind === 'idle')) {
  for (const spec of idleServers) {
    // A fresh process, so that memory freed by earlier cells does not hide what connections cost;
    // and V8's young generation held at 1 MiB, as it is until allocation speeds up: the burst of
    // accepts grows it to 16 MiB or more, a reserve kept whatever the count, which would otherwise
    // be divided among the connections (+0.3 to +1.4 KiB each at 19 000, Node net's included).
    await attempt({ round: 1, cell: describe(workload), workload, server: spec }, async () => {
      const server = await ServerProcess.start(spec, pin?.server ?? null, kIdleNodeFlags);
      try {
        return { idle: await measureIdle(server, workload.connections, pin?.client ?? null) };
      } finally {
        await server.stop();
      }
    });
  }
}

await writeResults(timing, '');

// The summary on the console, and the JSON, Markdown and SVG charts in bench/results/.
async function writeResults(timing: Timing, suffix: string): Promise<void> {
  const summary = summarize(measurements);
  const load = loadSummary(summary, true, view);
  const idle = idleSummary(summary);
  const unit = view.unit === 'rt' ? 'round trip' : 'request';
  console.log(`\nSummary (median over rounds; ×net${view.native ? ', ×native and ×alone' : ''}: ratio of server CPU per ${unit} within the same round)\n`);
  if (load.rows.length) console.log(`${textTable(load)}\n`);
  if (idle.rows.length) console.log(`${textTable(idle)}\n`);

  const stamp = new Date(started).toISOString().replace(/:/g, '-').replace(/\..*/, '');
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  await mkdir(resultsDir, { recursive: true });
  const patterns = new Map(machine.backends.map((info) => [info.backend as string, info.pattern as string]));
  const charts = (await renderCharts(summary, view, patterns)).map((chart) => ({ chart, file: `${stamp}${suffix}-${chart.name}.svg` }));
  for (const { chart, file } of charts) await writeFile(path.join(resultsDir, file), chart.svg);
  const files = [`${stamp}${suffix}.json`, `${stamp}${suffix}.md`, ...charts.map(({ file }) => file)];
  await writeFile(path.join(resultsDir, files[0]!), `${JSON.stringify({ command, machine, timing, rounds, notes, measurements, summary }, null, 2)}\n`);
  await writeFile(path.join(resultsDir, files[1]!), markdownReport({ stamp, command, machine, rounds, timing, summary, charts, view, notes }));
  console.log(`wrote ${files.map((file) => path.relative(process.cwd(), path.join(resultsDir, file))).join(', ')}`);
}

// The HTTP benchmark: node:http on Node's net (the baseline), node:http on twinloop and the
// minimal responder on twinloop's Socket (bench/servers/http-server.ts), under wrk.
async function runHttpBenchmark(): Promise<void> {
  try {
    ensureWrk();
  } catch (error) {
    fail((error as Error).message);
  }
  const timing: Timing = { durationS: numbers('duration', values.duration ?? '3')[0]!, warmupS: Number(values.warmup ?? '1') };
  const connections = numbers('connections', values.connections ?? '100');
  const cells: Workload[] = connections.flatMap((n) => [
    { kind: 'http', path: '/hello', body: 13, connections: n },
    { kind: 'http', path: '/16k', body: 16 * 1024, connections: n },
  ]);
  const specs: ServerSpec[] = [
    { id: 'net', backend: 'node', api: 'node:http' },
    ...backends.flatMap((backend) =>
      ['node:http', 'minimal'].flatMap((api) => workerCounts.map((workers) => withWorkers(`${backend}/${api}`, { backend, api }, workers))),
    ),
  ];
  turnsToRun = cells.length * rounds * specs.length;
  // wrk runs whole seconds: the warm-up run, then the measured one.
  const perTurn = (timing.warmupS > 0 ? Math.max(1, Math.round(timing.warmupS)) : 0) + Math.max(1, Math.round(timing.durationS)) + 0.3;
  console.log(`twinloop HTTP bench — ${machineLine(machine)}`);
  console.log(`${cells.length} cells × ${specs.length} servers × ${rounds} rounds, ${Math.max(1, Math.round(timing.durationS))} s of wrk per turn (about ${Math.ceil((turnsToRun * perTurn) / 60)} min)\n`);
  console.log(liveHeader(httpView));
  started = Date.now();
  await runTurns(specs, cells, (server, workload, clientCpu) => measureHttp(server, workload as Extract<Workload, { kind: 'http' }>, timing, clientCpu));
  await writeResults(timing, '-http');
}

// The instruction counts of the echo servers under callgrind (see instructions.ts).
async function runInstructionCount(): Promise<void> {
  if (!(await callgrindAvailable())) fail('--instructions needs valgrind (apt-get install valgrind)');
  // The standalone echo does not start under valgrind (its loop thread's first wait never returns
  // there); it runs the native echo's code, whose count stands for it.
  const apis = values.apis.split(',').filter((api) => api !== 'standalone');
  const servers: ServerSpec[] = backends.flatMap((backend) => apis.map((api) => ({ id: `${backend}/${api}`, backend, api })));
  const connections = numbers('connections', values.connections ?? '50');
  console.log(`twinloop bench --instructions — ${machineLine(describeMachine(backends))}`);
  console.log(`${servers.length} servers × ${connections.length} cell(s) under callgrind (about ${Math.ceil((servers.length * connections.length * 40) / 60)} min)\n`);
  const results = await countInstructions({ servers, connections, warmupRoundTrips: 30_000, roundTrips: 50_000 }, (result) =>
    console.log(
      `${String(result.connections).padStart(6)} conns  ${result.server.padEnd(22)} ${Math.round(result.instructionsPerRoundTrip).toLocaleString('en').padStart(8)} instructions/rt` +
        (Number.isNaN(result.overNative) ? '' : `  +${Math.round(result.overNative).toLocaleString('en')} over native`) +
        (Number.isNaN(result.l2MissesPerRoundTrip) ? '' : `  ${result.l2MissesPerRoundTrip.toFixed(1)} L2 misses/rt`),
    ),
  );
  const table = instructionTable(results);
  console.log(`\n${textTable(table)}`);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  await mkdir(resultsDir, { recursive: true });
  await writeFile(path.join(resultsDir, `${stamp}-instructions.json`), `${JSON.stringify({ results }, null, 2)}\n`);
  await writeFile(path.join(resultsDir, `${stamp}-instructions.md`), `# twinloop instructions per round trip — ${stamp}\n\n${markdownTable(table)}\n`);
  console.log(`wrote bench/results/${stamp}-instructions.json and .md`);
}

// The file-I/O benchmark: each engine in turn in this process (see files.ts).
async function runFileBenchmark(): Promise<void> {
  const machine = describeMachine(backends);
  const seconds = Number(values.duration ?? (full ? '3' : '1'));
  console.log(machineLine(machine));
  const results = await benchmarkFiles({ backends, depths: [1, 32, 128], seconds, fileBytes: 256 << 20 }, (result) =>
    console.log(
      `${result.workload.padEnd(30)} depth ${String(result.depth).padStart(3)}  ${result.engine.padEnd(18)} ` +
        `${Math.round(result.opsPerSecond).toLocaleString('en').padStart(9)} ops/s  ${result.cpuMicrosPerOp.toFixed(2).padStart(7)} µs CPU/op` +
        (Number.isNaN(result.vsNodeFs) ? '' : `  ${result.vsNodeFs.toFixed(2)}× node:fs`),
    ),
  );
  const table = fileTable(results);
  console.log(`\n${table}`);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  await mkdir(resultsDir, { recursive: true });
  await writeFile(path.join(resultsDir, `${stamp}-files.json`), `${JSON.stringify({ machine, seconds, results }, null, 2)}\n`);
  await writeFile(path.join(resultsDir, `${stamp}-files.md`), `# twinloop file I/O — ${stamp}\n\n${machineLine(machine)}\n\n${table}\n`);
  console.log(`wrote bench/results/${stamp}-files.json and .md`);
}
