// Futures and their executor: file reads awaited as promises, and who really executed them.
//
//   npx tsx examples/futures-executor.ts [--backend epoll,io_uring] [--reads 64] [--depth 16]
//
// A promise is a future: the caller awaits a value that something else produces. For a regular
// file, what that something is depends on the pattern. A reactor (epoll, kqueue) cannot wait for
// a file — a file is always "ready" — so it hands each read to the loop's thread pool, the
// executor, as libuv does for node:fs. A proactor (io_uring, IOCP) submits the read to the
// kernel, which executes it: inline in the submitting syscall, or on kernel workers of its own
// (io_uring's show up among the process's threads as iou-wrk-*) — never on a thread the library
// started. The same code runs on each available backend, and this script counts, from /proc
// (Linux), which threads did the work while the reads ran, beside loop.stats().
//
// Two phases per backend: large reads (256 KiB, past what a reactor does on its own thread) and
// small ones (4 KiB, which on Linux a reactor reads at once from the page cache with
// preadv2(RWF_NOWAIT) on the loop's thread, before ever asking the pool).
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { availableBackends, open, type BackendName, type File, type LoopStats } from 'twinloop';

const { values } = parseArgs({
  options: {
    backend: { type: 'string' },
    reads: { type: 'string', default: '64' },
    depth: { type: 'string', default: '16' },
  },
});
const readsPerPhase = Number(values.reads);
const depth = Number(values.depth);
const backends = values.backend === undefined ? availableBackends() : (values.backend.split(',') as BackendName[]);
const phases = [
  { name: '256 KiB reads', size: 256 * 1024 },
  { name: '4 KiB reads', size: 4 * 1024 },
];
const fileBytes = 8 << 20;

// --- What each thread of this process did (Linux /proc; elsewhere nothing is counted) ---------

interface ThreadSample {
  name: string;
  cpuNs: number;
  contextSwitches: number;
}

const taskDir = '/proc/self/task';
const canCount = existsSync(taskDir);

function sampleThreads(): Map<number, ThreadSample> {
  const threads = new Map<number, ThreadSample>();
  if (!canCount) return threads;
  for (const tid of readdirSync(taskDir)) {
    try {
      const name = readFileSync(`${taskDir}/${tid}/comm`, 'utf8').trim();
      const cpuNs = Number(readFileSync(`${taskDir}/${tid}/schedstat`, 'utf8').split(' ')[0]);
      const status = readFileSync(`${taskDir}/${tid}/status`, 'utf8');
      const count = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
      threads.set(Number(tid), { name, cpuNs, contextSwitches: count('voluntary_ctxt_switches') + count('nonvoluntary_ctxt_switches') });
    } catch {
      // The thread exited while we looked.
    }
  }
  return threads;
}

interface Work {
  threads: number;
  cpuMs: number;
  contextSwitches: number;
}

const none = (): Work => ({ threads: 0, cpuMs: 0, contextSwitches: 0 });

/**
 * What threads did between two samples: this thread (the loop's), and the threads that appeared
 * since the loop was opened — the ones it started (its pool), and io_uring's kernel workers.
 * Node's own threads (V8's platform, libuv's pool) were there before and are left out. Only the
 * sleeping threads' CPU time is exact in /proc (a running thread's is only brought up to date by
 * the scheduler), so the loop thread's line gives its context switches, not its CPU.
 */
function workDone(before: Map<number, ThreadSample>, after: Map<number, ThreadSample>, beforeLoop: Map<number, ThreadSample>) {
  const groups = { loopThread: none(), pool: none(), kernelWorkers: none() };
  for (const [tid, now] of after) {
    const then = before.get(tid) ?? { cpuNs: 0, contextSwitches: 0 };
    const group =
      tid === process.pid ? groups.loopThread : beforeLoop.has(tid) ? null : now.name.startsWith('iou-wrk') ? groups.kernelWorkers : groups.pool;
    if (group === null) continue;
    group.threads += 1;
    group.cpuMs += (now.cpuNs - then.cpuNs) / 1e6;
    group.contextSwitches += now.contextSwitches - then.contextSwitches;
  }
  return groups;
}

// --- The reads ---------------------------------------------------------------------------------

async function readAll(handle: File, content: Buffer, size: number): Promise<number> {
  let next = 0;
  let bytes = 0;
  // `depth` futures in flight at a time: each async worker awaits one read, then starts another.
  await Promise.all(
    Array.from({ length: depth }, async () => {
      const buffer = Buffer.alloc(size);
      for (let i = next++; i < readsPerPhase; i = next++) {
        const position = ((i * 7919) % (fileBytes / size)) * size;
        const { bytesRead } = await handle.read(buffer, 0, size, position);
        if (!buffer.subarray(0, bytesRead).equals(content.subarray(position, position + bytesRead))) throw new Error(`read ${i} returned other bytes`);
        bytes += bytesRead;
      }
    }),
  );
  return bytes;
}

function delta(after: LoopStats, before: LoopStats): LoopStats {
  return { syscalls: after.syscalls - before.syscalls, events: after.events - before.events, wakes: after.wakes - before.wakes, batches: after.batches - before.batches };
}

const directory = await mkdtemp(path.join(tmpdir(), 'twinloop-futures-'));
const file = path.join(directory, 'data.bin');
try {
  const content = randomBytes(fileBytes);
  await writeFile(file, content);
  console.log(`wrote ${file} (${fileBytes >> 20} MiB); each phase: ${readsPerPhase} reads awaited as promises, ${depth} in flight${canCount ? '' : ' (no /proc here: threads are not counted)'}`);

  for (const backend of backends) {
    const threadsBefore = sampleThreads();
    const loop = open({ backend });
    const { pattern, features } = loop.info;
    console.log(`\n${backend} — a ${pattern}${features.length ? ` [${features.join(', ')}]` : ''}`);
    console.log(`  expected executor: ${pattern === 'proactor' ? 'the kernel (reads are submitted to it)' : pattern === 'reactor' ? "the loop's thread pool (a reactor cannot wait for a file)" : `whatever the '${pattern}' model uses`}`);
    // Opened, and read once unmeasured, before the phases: a pool starts its threads, the page
    // cache fills, and only reads happen while the threads are counted.
    const handle = await loop.openFile(file);
    await readAll(handle, content, 4096);
    const started = [...sampleThreads().keys()].filter((tid) => !threadsBefore.has(tid));
    if (canCount) console.log(`  threads that appeared since the loop opened: ${started.length}${started.length ? ` (tids ${started.join(', ')})` : ''}`);

    for (const phase of phases) {
      const statsBefore = loop.stats();
      const before = sampleThreads();
      const cpuBefore = process.cpuUsage();
      const startedAt = performance.now();
      const bytes = await readAll(handle, content, phase.size);
      const ms = performance.now() - startedAt;
      const cpu = process.cpuUsage(cpuBefore);
      const work = workDone(before, sampleThreads(), threadsBefore);
      const stats = delta(loop.stats(), statsBefore);
      console.log(`  ${phase.name}: ${bytes} bytes read and verified in ${ms.toFixed(1)} ms (${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s)`);
      console.log(`    loop.stats(): ${stats.syscalls} syscalls (${(stats.syscalls / readsPerPhase).toFixed(2)} per read), ${stats.wakes} wakes, ${stats.batches} batches (each one call into JavaScript)`);
      console.log(`    process CPU (every thread): ${((cpu.user + cpu.system) / 1000).toFixed(1)} ms`);
      if (!canCount) continue;
      const line = (who: string, w: Work): string => `    ${who}: ${w.cpuMs.toFixed(1)} ms CPU, ${w.contextSwitches} context switches over ${w.threads} thread${w.threads === 1 ? '' : 's'}`;
      console.log(`    the loop thread: ${work.loopThread.contextSwitches} context switches`);
      if (work.pool.threads) console.log(line('threads the loop started', work.pool));
      if (work.kernelWorkers.threads) console.log(line('io_uring kernel workers (iou-wrk)', work.kernelWorkers));
      console.log(`    executed by: ${executor(work, pattern)}`);
    }
    await handle.close();
    await loop.close();
  }
} finally {
  await rm(directory, { recursive: true, force: true });
  console.log(`\nremoved ${directory}`);
}

// Who did the reads, from what the threads did while only reads ran: a pool thread that took a job
// woke for it (a context switch); with the pool idle, the loop's thread did them — in the kernel,
// for a proactor.
function executor(work: ReturnType<typeof workDone>, pattern: string): string {
  if (work.pool.contextSwitches > 0) return `the loop's thread pool (${work.pool.threads} threads woke ${work.pool.contextSwitches} times for ${readsPerPhase} reads)`;
  if (work.kernelWorkers.contextSwitches > 0) return `the kernel, partly in its own io_uring worker threads (${work.kernelWorkers.threads} iou-wrk)`;
  if (pattern === 'proactor') return 'the kernel, in the loop thread\'s own io_uring_enter calls (no other thread of this process ran)';
  return "the loop's own thread: the page cache held every read (preadv2 RWF_NOWAIT), the pool stayed idle";
}
