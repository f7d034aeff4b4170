// The Markdown report of a run, beside its JSON and charts in bench/results/.
import type { Chart } from './charts.js';
import type { Timing } from './measure.js';
import { machineLine, type Machine } from './machine.js';
import type { SummaryRow } from './results.js';
import { idleSummary, loadSummary, markdownTable, type View } from './table.js';

export interface ReportInput {
  stamp: string;
  command: string;
  machine: Machine;
  rounds: number;
  timing: Timing;
  summary: SummaryRow[];
  charts: { chart: Chart; file: string }[];
  view: View;
  /** Extra lines under the method (what ran on how many threads, what was not pinned). */
  notes?: string[];
}

export function markdownReport({ stamp, command, machine, rounds, timing, summary, charts, view, notes = [] }: ReportInput): string {
  const load = loadSummary(summary, true, view);
  const idle = idleSummary(summary);
  const lines = [
    `# twinloop ${view.unit === 'req' ? 'HTTP ' : ''}benchmark — ${stamp}`,
    '',
    `\`${command}\``,
    '',
    `**Machine:** ${machineLine(machine)}`,
    '',
    ...(view.unit === 'req' ? httpMethod(rounds, timing) : echoMethod(rounds, timing.durationS)),
    '', 'server CPU and the load generator\'s CPU are the cores each kept busy over the window: a server near 1 core per',
    'thread is saturated; one well below 1 while clients wait sleeps with work pending. A load generator near 1 core is the limit of the rate.',
    ...(notes.length ? ['', ...notes.map((note) => `- ${note}`)] : []),
    '',
  ];
  if (load.rows.length) lines.push(view.unit === 'req' ? '## HTTP/1.1 keep-alive' : '## Load', '', markdownTable(load), '');
  if (idle.rows.length) lines.push('## Idle connections', '', 'RSS and JS heap growth per held connection, after a full GC; the Node servers run with V8\'s young generation held at 1 MiB (`--max-semi-space-size=1`), so that the reserve the burst of accepts grows it to is not counted as per-connection memory.', '', markdownTable(idle), '');
  if (charts.length) lines.push('## Charts', '', ...charts.map(({ chart, file }) => `![${chart.title}](${file})\n`));
  return `${lines.join('\n')}\n`;
}

function echoMethod(rounds: number, durationS: number): string[] {
  return [
    'Each server is its own process; the servers take turns in every round (A B C … A B C …) and each ratio is',
    `taken against Node \`net\` and against the same backend's native C++ echo **in the same round** (${rounds} rounds,`,
    `${durationS} s measured per turn; the table shows the median and, in brackets, the range over rounds).`,
    'The primary figure is the **server process\'s CPU time (user + system) per round trip**, measured by the server',
    'itself over the load generator\'s measured window. ×net = net\'s CPU ÷ this server\'s (higher is better);',
    '×native = the native echo\'s CPU ÷ this server\'s (1 is the ceiling on Node\'s loop); ×alone = the standalone',
    'echo\'s ÷ this server\'s: the same C++ echo blocking in the backend\'s own wait, no Node (the primitive alone), so',
    'standalone → native → API decomposes the cost into the primitive, Node\'s loop and JavaScript. Syscalls are the backend\'s own count',
    '(`loop.stats().syscalls`: not libuv\'s wake-up, not available for Node `net`). ctx sw = the server process\'s',
    'context switches per round trip, voluntary + involuntary, of all its threads (getrusage over the same window):',
    'what a thread that blocks (thread per connection, a pool) pays and a loop that stays busy does not.',
  ];
}

function httpMethod(rounds: number, { durationS, warmupS }: Timing): string[] {
  const warmup = warmupS > 0 ? ` after an unmeasured ${Math.max(1, Math.round(warmupS))} s warm-up run` : '';
  return [
    'HTTP/1.1 keep-alive GETs from wrk (one thread), one request at a time per connection. Each server is its own',
    'process; the servers take turns in every round and each ratio is taken against node:http on Node\'s `net` **in the',
    `same round** (${rounds} rounds, ${Math.max(1, Math.round(durationS))} s of wrk per turn${warmup}; the table shows the median and,`,
    'in brackets, the range over rounds). The primary figure is the **server process\'s CPU time (user + system) per',
    'request**, both counted by the server itself over a window inside wrk\'s run. ×net = node:http on net\'s CPU ÷ this',
    'server\'s (higher is better). node:http on twinloop is Node\'s own http.Server fed each connection\'s',
    '`socket.stream()`; the minimal HTTP responder is keep-alive HTTP/1.1 written on twinloop\'s `Socket`',
    '(bench/servers/http-server.ts): the transport\'s ceiling with a JavaScript handler. Latency is wrk\'s, over its',
    'whole measured run; errors are wrk\'s (connect, read, write, timeout, non-2xx). ctx sw = the server process\'s',
    'context switches per request, voluntary + involuntary, of all its threads (getrusage over the same window).',
  ];
}
