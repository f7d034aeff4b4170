// The machine a result was measured on, recorded with every result.
import { execFileSync } from 'node:child_process';
import os from 'node:os';

import { open, type BackendName, type LoopInfo } from 'twinloop';

export interface Machine {
  cpuModel: string;
  cores: number;
  platform: string;
  kernel: string;
  node: string;
  fdHardLimit: number | null;
  /** 1-minute load average when the run began: other work on the machine makes every figure noisy. */
  loadAverage: number;
  backends: LoopInfo[];
  /** CPU the servers and the load generator are pinned to; null when not pinned. */
  pinning: { server: number; client: number } | null;
  /** Why nothing is pinned, when it is not. */
  notPinned: string | null;
}

export function describeMachine(backends: BackendName[]): Machine {
  const cores = os.availableParallelism();
  // taskset (util-linux) pins the servers and wrk; the native load generator pins itself.
  const notPinned =
    process.platform !== 'linux' ? 'pinning is Linux-only' : cores < 2 ? 'one core' : hasTaskset() ? null : 'taskset (util-linux) is not installed';
  return {
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores,
    platform: `${process.platform}-${process.arch}`,
    kernel: `${os.type()} ${os.release()} ${os.version()}`,
    node: process.version,
    fdHardLimit: fdHardLimit(),
    loadAverage: os.loadavg()[0]!,
    backends: backends.map((backend) => {
      const loop = open({ backend });
      const info = { ...loop.info };
      void loop.close();
      return info;
    }),
    pinning: notPinned === null ? { server: 0, client: 1 } : null,
    notPinned,
  };
}

function hasTaskset(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v taskset'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function fdHardLimit(): number | null {
  try {
    const limit = execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
    return limit === 'unlimited' ? null : Number(limit);
  } catch {
    return null;
  }
}

export function machineLine(machine: Machine): string {
  const backends = machine.backends.map((info) => `${info.backend} [${info.features.join(', ')}]`).join('; ');
  const pinning = machine.pinning
    ? `server on CPU ${machine.pinning.server}, load generator on CPU ${machine.pinning.client}`
    : `not pinned${machine.notPinned ? ` (${machine.notPinned})` : ''}`;
  const busy = machine.loadAverage > 0.5 ? ` · BUSY: load average ${machine.loadAverage.toFixed(1)} before the run, figures are noisy` : '';
  return `${machine.cpuModel} × ${machine.cores} · ${machine.kernel} · Node ${machine.node} · ${pinning}${busy} · backends: ${backends}`;
}
