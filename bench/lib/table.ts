// Tables: the live one printed row by row while the benchmark runs, and the summaries printed at
// the end and written into the Markdown report.
import type { Measurement, Range, SummaryRow } from './results.js';
import type { ServerSpec } from './server.js';

export function serverLabel(server: ServerSpec): string {
  if (server.backend === 'node') return 'node net';
  return server.api === 'native' ? `${server.backend} native C++` : `${server.backend} ${server.api}`;
}

const num = (value: number | null | undefined, digits = 0): string =>
  value == null || !Number.isFinite(value) ? '—' : value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const bytes = (value: number | null | undefined): string => (value == null ? '—' : `${num(value / 1024, 2)} KiB`);
const ratio = (value: Range | null, spread: boolean): string =>
  value === null ? '—' : spread && value.min !== value.max ? `${num(value.median, 2)}× (${num(value.min, 2)}–${num(value.max, 2)})` : `${num(value.median, 2)}×`;

const liveColumns: [string, number][] = [
  ['round', 5], ['cell', 22], ['server', 22], ['rt/s', 9], ['server CPU µs/rt', 16], ['×net', 6], ['×native', 7],
  ['syscalls/rt', 11], ['p50 µs', 8], ['p99 µs', 8], ['p99.9 µs', 8], ['starved', 7],
];

function pad(cells: string[], widths: number[]): string {
  return cells.map((cell, i) => (i < 3 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
}

export function liveHeader(): string {
  const widths = liveColumns.map(([, w]) => w);
  const header = pad(liveColumns.map(([name]) => name), widths);
  return `${header}\n${'─'.repeat(header.length)}`;
}

/** One finished measurement, with its ratios to net and native from the same round. */
export function liveRow(m: Measurement, vsNet: number | null, vsNative: number | null, progress: string): string {
  const widths = liveColumns.map(([, w]) => w);
  const head = [String(m.round), m.cell, serverLabel(m.server)];
  if (m.error !== undefined) return `${pad(head, widths)}  failed: ${m.error}  ${progress}`;
  const x = (v: number | null): string => (v === null ? '—' : `${num(v, 2)}×`);
  if (m.idle) {
    return `${pad([...head, '', `${bytes(m.idle.rssBytesPerConnection)} RSS`, x(vsNet), x(vsNative)], widths)}  ${progress}`;
  }
  const load = m.load!;
  return `${pad(
    [
      ...head, num(load.roundTripsPerS), num(load.serverCpuUsPerRoundTrip, 2), x(vsNet), x(vsNative),
      num(load.syscallsPerRoundTrip, 2), num(load.latencyUs.p50), num(load.latencyUs.p99), num(load.latencyUs.p999),
      String(load.starvedConnections),
    ],
    widths,
  )}  ${progress}`;
}

export interface Table {
  header: string[];
  rows: string[][];
}

export function loadSummary(rows: SummaryRow[], spread: boolean): Table {
  return {
    header: ['cell', 'server', 'server CPU µs/rt', '×net', '×native', 'rt/s', 'syscalls/rt', 'p50 µs', 'p99 µs', 'p99.9 µs', 'starved'],
    rows: rows
      .filter((row) => row.workload.kind !== 'idle')
      .map((row) =>
        row.cost === null
          ? [row.cell, serverLabel(row.server), `failed: ${row.errors[0] ?? 'no result'}`, '', '', '', '', '', '', '', '']
          : [
              row.cell, serverLabel(row.server),
              spread && row.rounds > 1 ? `${num(row.cost.median, 2)} (${num(row.cost.min, 2)}–${num(row.cost.max, 2)})` : num(row.cost.median, 2),
              ratio(row.vsNet, spread), ratio(row.vsNative, spread), num(row.roundTripsPerS), num(row.syscallsPerRoundTrip, 2),
              num(row.latencyUs.p50), num(row.latencyUs.p99), num(row.latencyUs.p999), String(row.starvedConnections),
            ],
      ),
  };
}

export function idleSummary(rows: SummaryRow[]): Table {
  return {
    header: ['cell', 'server', 'RSS per connection', 'JS heap per connection', '×net', '×native'],
    rows: rows
      .filter((row) => row.workload.kind === 'idle')
      .map((row) => [
        row.cell, serverLabel(row.server), row.cost === null ? `failed: ${row.errors[0] ?? 'no result'}` : bytes(row.cost.median),
        bytes(row.heapBytesPerConnection), ratio(row.vsNet, false), ratio(row.vsNative, false),
      ]),
  };
}

export function textTable({ header, rows }: Table): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function markdownTable({ header, rows }: Table): string {
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, i) => (i < 2 ? '---' : '---:'))), ...rows.map(line)].join('\n');
}
