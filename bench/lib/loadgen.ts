// Runs the native load generator (bench/loadgen/loadgen.cc) and reads its JSON report.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

import { loadgenPath } from './paths.js';

/** The fields of `loadgen --json` the benchmark uses. */
export interface LoadgenReport {
  duration_s: number;
  round_trips: number;
  round_trips_per_s: number;
  mb_per_s_one_way: number;
  latency_us: { p50: number | null; p90: number | null; p99: number | null; p999: number | null; max: number | null; mean: number | null };
  starved: { intervals_with_starved: number; distinct: number };
  corrupt_bytes: number;
  errors: number;
  first_error: string | null;
  client_cpu_s: number;
}

export interface LoadgenRun {
  /** Resolves when the warm-up is over and the measured window begins. */
  measuring: Promise<void>;
  /** The report; null when the run was stopped with `stop()`. Rejects on corruption or failure. */
  report: Promise<LoadgenReport | null>;
  stop(): void;
}

const exitMeaning: Record<number, string> = { 1: 'bad arguments', 2: 'connection errors prevented the run', 3: 'corrupted echo' };

export function startLoadgen(args: string[], cpu: number | null): LoadgenRun {
  const child = spawn(loadgenPath, [...args, '--json', '--progress', ...(cpu === null ? [] : ['--cpu', String(cpu)])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
  const stderr: string[] = [];
  let began: () => void = () => {};
  const measuring = new Promise<void>((resolve) => (began = resolve));
  createInterface({ input: child.stderr }).on('line', (line) => {
    if (line.includes('warmup done')) began();
    else stderr.push(line);
  });
  let stopped = false;
  const report = new Promise<LoadgenReport | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      began();
      if (stopped) return resolve(null);
      if (code === 0) return resolve(JSON.parse(stdout) as LoadgenReport);
      const detail = stderr.filter((line) => !line.startsWith('loadgen: t=')).slice(-3).join('; ');
      reject(new Error(`loadgen exited with ${code} (${exitMeaning[code ?? -1] ?? 'killed'}): ${detail}`));
    });
  });
  return {
    measuring,
    report,
    stop: () => {
      stopped = true;
      child.kill('SIGTERM');
    },
  };
}
