// The benchmark's native load generator (bench/loadgen/loadgen.cc) against servers made with
// Node's own `net`, so that these tests do not depend on the twinloop addon they will measure.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterEach, describe, expect, it } from 'vitest';

const execFileAsync = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const loadgenPath = path.join(root, 'build', 'Release', 'loadgen');
const available = process.platform === 'linux' && existsSync(loadgenPath);

interface Report {
  mode: 'echo' | 'churn';
  target: string;
  connections: number;
  size: number;
  depth: number;
  rate: number | null;
  duration_s: number;
  round_trips: number;
  round_trips_per_s: number;
  connections_per_s?: number;
  mb_per_s_one_way: number;
  latency_us: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  starved: {
    interval_s: number;
    intervals: number;
    intervals_with_starved: number;
    max_in_interval: number;
    total: number;
    distinct: number;
  };
  corrupt_bytes: number;
  errors: number;
  first_error: string | null;
  send_lag_us: { mean: number; max: number } | null;
  in_flight_at_end: number;
  client_cpu_s: number;
  client_cpu_us_per_round_trip: number;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function loadgen(args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await execFileAsync(loadgenPath, args, { timeout: 8_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    // execFile rejects on a non-zero exit; the exit code is then a number in `code`.
    const failure = err as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failure.code !== 'number') throw err;
    return { code: failure.code, stdout: failure.stdout ?? '', stderr: failure.stderr ?? '' };
  }
}

/** Parses stdout, which with --json must be exactly one JSON object. */
function report(run: Run): Report {
  const lines = run.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Report;
}

type ChunkHandler = (socket: net.Socket, chunk: Buffer) => void;

const echo: ChunkHandler = (socket, chunk) => {
  socket.write(chunk);
};

const servers: net.Server[] = [];
const sockets = new Set<net.Socket>();
let tempDir: string | undefined;

/** Starts a `net` server calling `onChunk` for every chunk; `listen` is a port or a socket path. */
async function serve(onChunk: ChunkHandler, listen: net.ListenOptions = { host: '127.0.0.1', port: 0 }) {
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // a client that goes away mid-echo is not this test's concern
    socket.on('data', (chunk) => onChunk(socket, chunk));
  });
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen, resolve);
  });
  return server;
}

function portOf(server: net.Server): string {
  return String((server.address() as net.AddressInfo).port);
}

afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  tempDir = undefined;
});

describe.skipIf(!available)('loadgen', () => {
  it('echoes every byte back unchanged and reports ordered latency percentiles', async () => {
    const server = await serve(echo);
    const run = await loadgen([
      '--host', '127.0.0.1', '--port', portOf(server),
      '--connections', '10', '--size', '128', '--depth', '2', '--duration', '1', '--json',
    ]);
    expect(run.code).toBe(0);
    const r = report(run);
    expect(r).toMatchObject({ mode: 'echo', connections: 10, size: 128, depth: 2, rate: null });
    expect(r.round_trips).toBeGreaterThan(0);
    expect(r.corrupt_bytes).toBe(0);
    expect(r.errors).toBe(0);
    expect(r.first_error).toBeNull();
    const { p50, p90, p99, p999, max, mean } = r.latency_us;
    expect(p50).toBeGreaterThan(0);
    expect(p50).toBeLessThanOrEqual(p90);
    expect(p90).toBeLessThanOrEqual(p99);
    expect(p99).toBeLessThanOrEqual(p999);
    expect(p999).toBeLessThanOrEqual(max);
    expect(mean).toBeLessThanOrEqual(max);
    expect(r.duration_s).toBeGreaterThan(0.9);
    expect(r.round_trips_per_s).toBeCloseTo(r.round_trips / r.duration_s, 0);
    expect(r.mb_per_s_one_way).toBeCloseTo((r.round_trips * 128) / r.duration_s / 1e6, 2);
    expect(r.starved).toMatchObject({ interval_s: 1, intervals: 1 });
    expect(r.client_cpu_s).toBeGreaterThan(0);
    expect(r.send_lag_us).toBeNull();
  });

  it('stops after exactly --requests measured round trips, even when they do not divide evenly', async () => {
    const server = await serve(echo);
    const run = await loadgen([
      '--host', '127.0.0.1', '--port', portOf(server),
      '--connections', '7', '--depth', '3', '--requests', '1000', '--json',
    ]);
    expect(run.code).toBe(0);
    const r = report(run);
    expect(r.round_trips).toBe(1000);
    expect(r.in_flight_at_end).toBe(0);
    expect(r.corrupt_bytes).toBe(0);
  });

  it('catches a server that flips one byte in every 50th chunk, and exits with code 3', async () => {
    let chunks = 0;
    const server = await serve((socket, chunk) => {
      if (++chunks % 50 === 0) chunk[chunk.length >> 1] ^= 0x01;
      socket.write(chunk);
    });
    const run = await loadgen([
      '--host', '127.0.0.1', '--port', portOf(server),
      '--connections', '10', '--size', '128', '--duration', '0.5', '--json',
    ]);
    expect(run.code).toBe(3);
    const r = report(run);
    expect(r.corrupt_bytes).toBeGreaterThan(0);
    // one flipped bit per corrupted chunk: the count is of bytes, not of whole messages
    expect(r.corrupt_bytes).toBeLessThanOrEqual(Math.ceil(chunks / 50));
    expect(run.stderr).toMatch(/corrupt/);
  });

  it('fails with exit code 2 and names ECONNREFUSED when nothing listens on the port', async () => {
    const server = await serve(echo);
    const port = portOf(server);
    await new Promise((resolve) => server.close(resolve));
    const run = await loadgen(['--host', '127.0.0.1', '--port', port, '--duration', '1', '--json']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/ECONNREFUSED/);
    expect(run.stdout).toBe('');
  });

  it('runs the same verified echo over a Unix socket', async () => {
    tempDir = mkdtempSync(path.join(tmpdir(), 'loadgen-'));
    const socketPath = path.join(tempDir, 'echo.sock');
    await serve(echo, { path: socketPath });
    const run = await loadgen(['--unix', socketPath, '--connections', '8', '--depth', '4', '--duration', '0.5', '--json']);
    expect(run.code).toBe(0);
    const r = report(run);
    expect(r.target).toBe(socketPath);
    expect(r.round_trips).toBeGreaterThan(0);
    expect(r.corrupt_bytes).toBe(0);
    expect(r.errors).toBe(0);
  });

  it('opens a new connection for every round trip in --churn mode', async () => {
    let accepted = 0;
    const server = await serve(echo);
    server.on('connection', () => accepted++);
    const run = await loadgen([
      '--host', '127.0.0.1', '--port', portOf(server), '--churn', '--connections', '4', '--duration', '0.5', '--json',
    ]);
    expect(run.code).toBe(0);
    const r = report(run);
    expect(r.mode).toBe('churn');
    expect(r.round_trips).toBeGreaterThan(0);
    expect(r.connections_per_s).toBe(r.round_trips_per_s);
    // one probe connection before the clock starts, then one per cycle (counted or in flight)
    expect(accepted).toBeGreaterThanOrEqual(r.round_trips);
    expect(r.corrupt_bytes).toBe(0);
  });

  it('never offers more than --rate, however fast the server answers', async () => {
    const server = await serve(echo);
    const run = await loadgen([
      '--host', '127.0.0.1', '--port', portOf(server), '--rate', '2000', '--duration', '0.5', '--json',
    ]);
    expect(run.code).toBe(0);
    const r = report(run);
    expect(r.rate).toBe(2000);
    expect(r.round_trips).toBeGreaterThan(0);
    // the schedule has 2000 × 0.5 s = 1000 requests (+1 at t = 0) in the measured window
    expect(r.round_trips).toBeLessThanOrEqual(1001);
    expect(r.send_lag_us).not.toBeNull();
  });

  it('rejects bad arguments with exit code 1 and a message naming the argument', async () => {
    const run = await loadgen(['--host', '127.0.0.1', '--port', '1', '--depth', '0']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/--depth/);
    const help = await loadgen(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--connections/);
  });
});
