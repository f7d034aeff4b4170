// wrk, the HTTP benchmark's load generator (Debian's `wrk` package), and the CPU it uses.
//
// wrk and not an npm load generator such as autocannon: autocannon is JavaScript, and at the
// rates these servers reach it spends more CPU per request than the servers do — on a machine
// with few cores it would compete with the server it measures and cap the rate at its own cost.
// wrk is C with an event loop and keeps one core's worth of connections busy at a fraction of it.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { root } from './paths.js';

/** What ./wrk-report.lua prints when the run is done. */
export interface WrkReport {
  requests: number;
  duration_us: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latency_us: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
}

export interface WrkRun {
  pid: number;
  report: Promise<WrkReport>;
}

const reportScript = path.join(root, 'bench', 'lib', 'wrk-report.lua');

function found(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes sure wrk is installed: installs the Debian package with apt-get when it is missing and
 * this is a root shell on a Debian-like system; otherwise throws saying how to install it.
 */
export function ensureWrk(): void {
  if (found('wrk')) return;
  const isRoot = process.getuid?.() === 0;
  if (!isRoot || !found('apt-get')) {
    throw new Error(
      'wrk (the HTTP load generator) is not installed. Install it: `sudo apt-get install wrk` (Debian, Ubuntu), ' +
        '`sudo dnf install wrk` (Fedora), `brew install wrk` (macOS), or build it from https://github.com/wg/wrk',
    );
  }
  console.log('bench: wrk is not installed; installing the Debian package: apt-get update -qq && apt-get install -y -qq wrk');
  execFileSync('sh', ['-c', 'apt-get update -qq && apt-get install -y -qq wrk'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (!found('wrk')) throw new Error('apt-get installed wrk, but it is not on PATH');
}

export interface WrkOptions {
  url: string;
  connections: number;
  /** wrk runs whole seconds. */
  durationS: number;
  /** The CPU to pin wrk to (with taskset), or null. */
  cpu: number | null;
}

/** One wrk thread: one core's worth of load, as a pinned run allows. */
export function startWrk({ url, connections, durationS, cpu }: WrkOptions): WrkRun {
  const wrk = ['wrk', '--threads', '1', '--connections', String(connections), '--duration', `${durationS}s`, '--script', reportScript, url];
  const [command, ...args] = cpu === null ? wrk : ['taskset', '-c', String(cpu), ...wrk];
  // taskset execs wrk, so the child's pid is wrk's own (its CPU is read from /proc).
  const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
  const report = new Promise<WrkReport>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      const line = stdout.split('\n').find((l) => l.startsWith('{'));
      if (code === 0 && line !== undefined) return resolve(JSON.parse(line) as WrkReport);
      reject(new Error(`wrk exited with ${code}: ${(stderr || stdout).trim().split('\n').slice(-2).join('; ')}`));
    });
  });
  return { pid: child.pid!, report };
}

let ticksPerSecond: number | null = null;

/** User + system CPU seconds a live process has used so far (from /proc/PID/stat), or null. */
export function processCpuSeconds(pid: number): number | null {
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  try {
    // The fields after the command name, which is in parentheses and may contain spaces.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').pop()!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;  // utime, stime
  } catch {
    return null;
  }
}
