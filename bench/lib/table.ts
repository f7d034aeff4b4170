// Tables: the live one printed row by row while the benchmark runs, and the summaries printed at
// the end and written into the Markdown report.
import type { Measurement, Range, SummaryRow } from './results.js';
import type { ServerSpec } from './server.js';

export function serverLabel(server: ServerSpec): string {
  const workers = (server.workers ?? 1) > 1 ? ` ×${server.workers} workers` : '';
  if (server.backend === 'node') return server.api === 'net' ? 'node net' : `${server.api} on net`;
  if (server.api === 'native') return `${server.backend} native C++`;
  if (server.api === 'standalone') return `${server.backend} standalone C++`;
  if (server.api === 'minimal') return `${server.backend} minimal HTTP${workers}`;
  return `${server.backend} ${server.api}${workers}`;
}

/** What the tables show: the echo benchmark's columns or the HTTP benchmark's. */
export interface View {
  /** A round trip (`rt`, echo) or a request (`req`, HTTP). */
  unit: 'rt' | 'req';
  /** The ratios to the backend's native and standalone echoes (echo only). */
  native: boolean;
  /** The load generator's name, for its CPU column. */
  loadgen: string;
}

export const echoView: View = { unit: 'rt', native: true, loadgen: 'loadgen' };
export const httpView: View = { unit: 'req', native: false, loadgen: 'wrk' };

const num = (value: number | null | undefined, digits = 0): string =>
  value == null || !Number.isFinite(value) ? '—' : value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const bytes = (value: number | null | undefined): string => (value == null ? '—' : `${num(value / 1024, 2)} KiB`);
const ratio = (value: Range | null, spread: boolean): string =>
  value === null ? '—' : spread && value.min !== value.max ? `${num(value.median, 2)}× (${num(value.min, 2)}–${num(value.max, 2)})` : `${num(value.median, 2)}×`;

function liveColumns(view: View): [string, number][] {
  const { unit } = view;
  return [
    ['round', 5], ['cell', 22], ['server', view.unit === 'req' ? 30 : 22], [`${unit}/s`, 9], [`server CPU µs/${unit}`, 16], [`of it user`, 10], ['×net', 6],
    ...(view.native ? [['×native', 7], ['×alone', 6]] as [string, number][] : []),
    ['server CPU', 10], [`${view.loadgen} CPU`, 11],
    [`syscalls/${unit}`, 11], [`ctx sw/${unit}`, 10], ['p50 µs', 8], ['p99 µs', 8], ['p99.9 µs', 8], view.native ? ['starved', 7] : ['errors', 6],
  ];
}

function pad(cells: string[], widths: number[]): string {
  return cells.map((cell, i) => (i < 3 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
}

export function liveHeader(view: View): string {
  const columns = liveColumns(view);
  const header = pad(columns.map(([name]) => name), columns.map(([, w]) => w));
  return `${header}\n${'─'.repeat(header.length)}`;
}

/** A share of one core: `0.97 cores`. */
const cores = (value: number | null | undefined): string => (value == null ? '—' : `${num(value, 2)} cores`);

/** A measurement's ratios to the reference servers of the same round. */
export interface LiveRatios {
  vsNet: number | null;
  vsNative: number | null;
  vsStandalone: number | null;
}

/** One finished measurement, with its ratios to net, native and standalone from the same round. */
export function liveRow(view: View, m: Measurement, { vsNet, vsNative, vsStandalone }: LiveRatios, progress: string): string {
  const widths = liveColumns(view).map(([, w]) => w);
  const head = [String(m.round), m.cell, serverLabel(m.server)];
  if (m.error !== undefined) return `${pad(head, widths)}  failed: ${m.error}  ${progress}`;
  const x = (v: number | null): string => (v === null ? '—' : `${num(v, 2)}×`);
  if (m.idle) {
    return `${pad([...head, '', `${bytes(m.idle.rssBytesPerConnection)} RSS`, '', x(vsNet), ...(view.native ? [x(vsNative), x(vsStandalone)] : [])], widths)}  ${progress}`;
  }
  const load = m.load!;
  return `${pad(
    [
      ...head, num(load.roundTripsPerS), num(load.serverCpuUsPerRoundTrip, 2), num(load.serverUserCpuUsPerRoundTrip, 2), x(vsNet),
      ...(view.native ? [x(vsNative), x(vsStandalone)] : []),
      cores(load.serverCpuShare), cores(load.clientCpuShare),
      num(load.syscallsPerRoundTrip, 2), num(load.contextSwitchesPerRoundTrip, 2), num(load.latencyUs.p50), num(load.latencyUs.p99), num(load.latencyUs.p999),
      String(view.native ? load.starvedConnections : load.errors),
    ],
    widths,
  )}  ${progress}`;
}

export interface Table {
  header: string[];
  rows: string[][];
}

export function loadSummary(rows: SummaryRow[], spread: boolean, view: View): Table {
  const { unit } = view;
  const header = [
    'cell', 'server', `server CPU µs/${unit}`, 'of it user', '×net', ...(view.native ? ['×native', '×alone'] : []), `${unit}/s`,
    'server CPU', `${view.loadgen} CPU`,
    `syscalls/${unit}`, `ctx sw/${unit}`, 'p50 µs', 'p99 µs', 'p99.9 µs', view.native ? 'starved' : 'errors',
  ];
  return {
    header,
    rows: rows
      .filter((row) => row.workload.kind !== 'idle')
      .map((row) =>
        row.cost === null
          ? [row.cell, serverLabel(row.server), `failed: ${row.errors[0] ?? 'no result'}`, ...header.slice(3).map(() => '')]
          : [
              row.cell, serverLabel(row.server),
              spread && row.rounds > 1 ? `${num(row.cost.median, 2)} (${num(row.cost.min, 2)}–${num(row.cost.max, 2)})` : num(row.cost.median, 2),
              num(row.userCpuUsPerRoundTrip, 2),
              ratio(row.vsNet, spread), ...(view.native ? [ratio(row.vsNative, spread), ratio(row.vsStandalone, spread)] : []), num(row.roundTripsPerS),
              cores(row.serverCpuShare), cores(row.clientCpuShare),
              num(row.syscallsPerRoundTrip, 2), num(row.contextSwitchesPerRoundTrip, 2), num(row.latencyUs.p50), num(row.latencyUs.p99), num(row.latencyUs.p999),
              String(view.native ? row.starvedConnections : row.loadErrors),
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
