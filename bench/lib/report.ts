// The Markdown report of a run, beside its JSON and charts in bench/results/.
import type { Chart } from './charts.js';
import { machineLine, type Machine } from './machine.js';
import type { SummaryRow } from './results.js';
import { idleSummary, loadSummary, markdownTable } from './table.js';

export interface ReportInput {
  stamp: string;
  command: string;
  machine: Machine;
  rounds: number;
  durationS: number;
  summary: SummaryRow[];
  charts: { chart: Chart; file: string }[];
}

export function markdownReport({ stamp, command, machine, rounds, durationS, summary, charts }: ReportInput): string {
  const load = loadSummary(summary, true);
  const idle = idleSummary(summary);
  const lines = [
    `# twinloop benchmark — ${stamp}`,
    '',
    `\`${command}\``,
    '',
    `**Machine:** ${machineLine(machine)}`,
    '',
    'Each server is its own process; the servers take turns in every round (A B C … A B C …) and each ratio is',
    `taken against Node \`net\` and against the same backend's native C++ echo **in the same round** (${rounds} rounds,`,
    `${durationS} s measured per turn; the table shows the median and, in brackets, the range over rounds).`,
    'The primary figure is the **server process\'s CPU time (user + system) per round trip**, measured by the server',
    'itself over the load generator\'s measured window. ×net = net\'s CPU ÷ this server\'s (higher is better);',
    '×native = the native echo\'s CPU ÷ this server\'s (1 is the ceiling). Syscalls are the backend\'s own count',
    '(`loop.stats().syscalls`: not libuv\'s wake-up, not available for Node `net`).',
    '',
  ];
  if (load.rows.length) lines.push('## Load', '', markdownTable(load), '');
  if (idle.rows.length) lines.push('## Idle connections', '', 'RSS and JS heap growth per held connection, after a full GC.', '', markdownTable(idle), '');
  if (charts.length) lines.push('## Charts', '', ...charts.map(({ chart, file }) => `![${chart.title}](${file})\n`));
  return `${lines.join('\n')}\n`;
}
