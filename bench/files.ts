// The file-I/O benchmark: what the two patterns do with regular files. A proactor submits file
// reads to the kernel (io_uring); a reactor cannot wait for a file, so it hands them to a thread
// pool (twinloop's, on epoll) — as libuv does for Node's own `node:fs/promises`, the baseline —
// unless the page cache can serve the read whole (preadv2 with RWF_NOWAIT, on the loop's thread).
//
// Workloads: 4 KiB random reads and 1 MiB sequential reads of a file in the page cache, and with
// O_DIRECT where the filesystem allows it, at queue depths 1 / 32 / 128. Each runs in this process
// in turn; CPU per operation is this process's CPU (all threads) over the operations.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open as openFs, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

// The built package, as users run it (see servers/twinloop-server.ts).
import { allocAligned, open, type BackendName, type File } from 'twinloop';

export interface FileBenchOptions {
  backends: BackendName[];
  depths: number[];
  seconds: number;
  /** Size of the test file; it is read from the page cache after a first pass. */
  fileBytes: number;
  directory?: string;
}

export interface FileResult {
  workload: string;
  depth: number;
  engine: string;
  opsPerSecond: number;
  cpuMicrosPerOp: number;
  /** opsPerSecond relative to node:fs/promises in the same cell. */
  vsNodeFs: number;
}

type ReadAt = (buffer: Buffer, position: number) => Promise<number>;

interface Engine {
  name: string;
  open(file: string, direct: boolean): Promise<{ readAt: ReadAt; close(): Promise<void> } | null>;
}

function twinloopEngine(backend: BackendName): Engine {
  return {
    name: `twinloop ${backend}`,
    async open(file, direct) {
      const loop = open({ backend });
      let handle: File;
      try {
        handle = await loop.openFile(file, { direct });
      } catch (error) {
        await loop.close();
        if (direct) return null;  // no O_DIRECT on this filesystem
        throw error;
      }
      return {
        readAt: async (buffer, position) => (await handle.read(buffer, 0, buffer.length, position)).bytesRead,
        close: async () => {
          await handle.close();
          await loop.close();
        },
      };
    },
  };
}

const nodeFsEngine: Engine = {
  name: 'node:fs/promises',
  async open(file, direct) {
    if (direct && constants.O_DIRECT === undefined) return null;
    const handle = await openFs(file, direct ? constants.O_RDONLY | constants.O_DIRECT : 'r');
    return {
      readAt: async (buffer, position) => (await handle.read(buffer, 0, buffer.length, position)).bytesRead,
      close: () => handle.close(),
    };
  },
};


async function measure(readAt: ReadAt, blockSize: number, fileBytes: number, depth: number, seconds: number, random: boolean) {
  const blocks = Math.floor(fileBytes / blockSize);
  let operations = 0;
  let next = 0;
  const deadline = performance.now() + seconds * 1000;
  const startCpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: depth }, async () => {
      // O_DIRECT needs buffers aligned to the logical block size; 4 KiB covers the usual devices.
      const buffer = allocAligned(blockSize);
      while (performance.now() < deadline) {
        const block = random ? Math.floor(Math.random() * blocks) : next++ % blocks;
        const n = await readAt(buffer, block * blockSize);
        if (n !== blockSize) throw new Error(`short read: ${n} of ${blockSize} bytes at block ${block}`);
        operations += 1;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(startCpu);
  return { opsPerSecond: operations / elapsed, cpuMicrosPerOp: (cpu.user + cpu.system) / operations };
}

/** Runs every cell; calls `onResult` as each finishes (for a live table). */
export async function benchmarkFiles(options: FileBenchOptions, onResult: (result: FileResult) => void): Promise<FileResult[]> {
  const file = path.join(options.directory ?? tmpdir(), `twinloop-bench-${process.pid}.bin`);
  await writeFile(file, randomBytes(options.fileBytes));
  const engines = [nodeFsEngine, ...options.backends.map(twinloopEngine)];
  const workloads = [
    { name: '4 KiB random, page cache', blockSize: 4096, random: true, direct: false },
    { name: '1 MiB sequential, page cache', blockSize: 1 << 20, random: false, direct: false },
    { name: '4 KiB random, O_DIRECT', blockSize: 4096, random: true, direct: true },
  ];
  const results: FileResult[] = [];
  try {
    for (const workload of workloads) {
      for (const depth of options.depths) {
        let baseline = 0;
        for (const engine of engines) {
          const opened = await engine.open(file, workload.direct);
          if (opened === null) continue;
          try {
            // A short unmeasured pass first: the page cache and the thread pool warm up.
            await measure(opened.readAt, workload.blockSize, options.fileBytes, depth, Math.min(0.3, options.seconds / 4), workload.random);
            const figures = await measure(opened.readAt, workload.blockSize, options.fileBytes, depth, options.seconds, workload.random);
            if (engine === nodeFsEngine) baseline = figures.opsPerSecond;
            const result = {
              workload: workload.name,
              depth,
              engine: engine.name,
              ...figures,
              vsNodeFs: baseline > 0 ? figures.opsPerSecond / baseline : Number.NaN,
            };
            results.push(result);
            onResult(result);
          } finally {
            await opened.close();
          }
        }
      }
    }
  } finally {
    await rm(file, { force: true });
  }
  return results;
}

/** Markdown table of the results, ratios to node:fs/promises in the same cell. */
export function fileTable(results: FileResult[]): string {
  const lines = [
    '| workload | depth | engine | ops/s | CPU µs/op | × node:fs |',
    '|---|---:|---|---:|---:|---:|',
    ...results.map(
      (r) =>
        `| ${r.workload} | ${r.depth} | ${r.engine} | ${Math.round(r.opsPerSecond).toLocaleString('en')} | ${r.cpuMicrosPerOp.toFixed(2)} | ${
          Number.isNaN(r.vsNodeFs) ? '—' : `${r.vsNodeFs.toFixed(2)}×`
        } |`,
    ),
  ];
  return lines.join('\n');
}
