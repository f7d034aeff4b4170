// SVG charts of a run, specified in Vega-Lite and rendered by Vega without a browser.
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';

import type { SummaryRow } from './results.js';
import { serverLabel, type View } from './table.js';

export interface Chart {
  name: string;
  title: string;
  svg: string;
}

interface Datum {
  cell: string;
  server: string;
  /** The legend's entry, which gives the bar its colour: the backend and its pattern. */
  model: string;
  value: number;
  low: number;
  high: number;
}

/**
 * Bar colours, one per backend in the order the run lists them (Node's own `net` first, in grey),
 * so that every API of one backend shares a colour and a backend the charts have never heard of
 * gets the next one. Colour-blind-safe hues first (Okabe–Ito), then tableau10's.
 */
const palette = ['#999999', '#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#f0e442', '#4e79a7', '#f28e2b', '#59a14f', '#b07aa1'];

// Cells side by side, one bar per server; the whisker spans the rounds' minimum and maximum.
function barsByCell(title: string, axis: string, data: Datum[], servers: string[], models: string[], options: { rule?: number; sharedScale?: boolean } = {}): TopLevelSpec {
  const cells = [...new Set(data.map((d) => d.cell))];
  const x = { field: 'server', type: 'nominal', sort: servers, title: null, axis: { labelAngle: -40 } } as const;
  const range = models.map((_, i) => palette[i % palette.length]!);
  const color = { field: 'model', type: 'nominal', scale: { domain: models, range }, legend: { title: null, orient: 'top' } };
  const layers: object[] = [
    { mark: 'bar', encoding: { x, y: { field: 'value', type: 'quantitative', title: axis }, color } },
    { mark: { type: 'rule', color: '#333' }, encoding: { x, y: { field: 'low', type: 'quantitative' }, y2: { field: 'high' } } },
    { mark: { type: 'text', dy: -6, fontSize: 9 }, encoding: { x, y: { field: 'high', type: 'quantitative' }, text: { field: 'value', type: 'quantitative', format: '.3~r' } } },
  ];
  if (options.rule !== undefined) layers.push({ mark: { type: 'rule', strokeDash: [4, 3], color: '#c00' }, encoding: { y: { datum: options.rule } } });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, anchor: 'start' },
    data: { values: data },
    facet: { field: 'cell', type: 'nominal', sort: cells, title: null },
    columns: Math.min(4, cells.length),
    spec: { width: Math.max(120, servers.length * 22), height: 180, layer: layers },
    resolve: { scale: { y: options.sharedScale ? 'shared' : 'independent' } },
  } as TopLevelSpec;
}

async function render(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/**
 * The run's charts. `patterns` maps each backend to the pattern its loop reports
 * (`loop.info.pattern`: 'reactor', 'proactor', or any other model a backend declares).
 */
export async function renderCharts(summary: SummaryRow[], view: View, patterns: ReadonlyMap<string, string>): Promise<Chart[]> {
  const unit = view.unit === 'rt' ? 'round trip' : 'request';
  const reference = view.unit === 'rt' ? 'Node net' : 'node:http on net';
  const servers = [...new Set(summary.map((row) => serverLabel(row.server)))];
  const modelOf = (row: SummaryRow): string =>
    row.server.backend === 'node' ? reference : `${row.server.backend} (${patterns.get(row.server.backend) ?? 'pattern unknown'})`;
  const models = [...new Set(summary.map(modelOf))];
  const rows = summary.filter((row) => row.cost !== null);
  const load = rows.filter((row) => row.workload.kind !== 'idle');
  const idle = rows.filter((row) => row.workload.kind === 'idle');
  const datum = (row: SummaryRow, r: { median: number; min: number; max: number }, scale = 1): Datum => ({
    cell: row.cell, server: serverLabel(row.server), model: modelOf(row), value: r.median * scale, low: r.min * scale, high: r.max * scale,
  });
  // A figure without a range over rounds (a median only): its whisker is a point.
  const point = (row: SummaryRow, value: number): Datum => datum(row, { median: value, min: value, max: value });
  const specs: [string, string, TopLevelSpec | null][] = [
    ['cpu', `Server CPU time per ${unit} (µs, lower is better)`,
      load.length ? barsByCell(`Server CPU µs per ${unit} (lower is better; whiskers: min–max over rounds)`, `µs per ${unit}`, load.map((row) => datum(row, row.cost!)), servers, models) : null],
    ['vs-net', `Ratio to ${reference} (server CPU per ${unit}; higher is better)`,
      load.some((row) => row.vsNet) ? barsByCell(`${reference} CPU ÷ server CPU per ${unit}, same round (higher is better; dashed: ${reference})`, `× ${reference}`, load.filter((row) => row.vsNet).map((row) => datum(row, row.vsNet!)), servers, models, { rule: 1, sharedScale: true }) : null],
    ['latency', 'p99 latency (µs)',
      load.length ? barsByCell('p99 latency, µs (median over rounds)', 'p99 µs', load.filter((row) => row.latencyUs.p99 !== null).map((row) => point(row, row.latencyUs.p99!)), servers, models) : null],
    ['context-switches', `Server context switches per ${unit}`,
      load.some((row) => row.contextSwitchesPerRoundTrip !== null) ? barsByCell(`Server context switches per ${unit}, all threads, voluntary + involuntary (median over rounds)`, `switches per ${unit}`, load.filter((row) => row.contextSwitchesPerRoundTrip !== null).map((row) => point(row, row.contextSwitchesPerRoundTrip!)), servers, models) : null],
    ['idle', 'RSS per idle connection (KiB)',
      idle.length ? barsByCell('Server RSS per idle connection, KiB (lower is better)', 'KiB per connection', idle.map((row) => datum(row, row.cost!, 1 / 1024)), servers, models) : null],
  ];
  const charts: Chart[] = [];
  for (const [name, title, spec] of specs) if (spec !== null) charts.push({ name, title, svg: await render(spec) });
  return charts;
}
