// Serving one port on every core: a loop per worker thread, each listening with SO_REUSEPORT.
//
//   npx tsx examples/multicore.ts [--workers N] [--connections 200] [--backend auto|epoll|io_uring]
//
// This file is both the main thread (which starts the workers, then connects to them and counts
// who answered) and the workers' module (which answers each connection with its thread id). Linux
// spreads the connections over the workers; macOS and FreeBSD give them all to one; Windows has
// no SO_REUSEPORT (serveOnWorkers rejects there).
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { isMainThread, threadId, workerData } from 'node:worker_threads';

import { listenInWorker, open, serveOnWorkers, type BackendName } from 'twinloop';

if (isMainThread) {
  const { values } = parseArgs({
    options: {
      workers: { type: 'string', default: String(availableParallelism()) },
      connections: { type: 'string', default: '200' },
      backend: { type: 'string', default: 'auto' },
    },
  });
  const backend = values.backend as BackendName | 'auto';
  const group = await serveOnWorkers(new URL(import.meta.url), {
    workers: Number(values.workers),
    host: '127.0.0.1',
    workerData: { backend },
    execArgv: tsxInWorkers(),
  });
  group.on('error', (error) => console.error(error));
  console.log(`${group.workers.length} workers listen on 127.0.0.1:${group.port}`);

  const loop = open({ backend });
  const threadIds = group.workers.map((worker) => worker.threadId);
  const served = new Array<number>(threadIds.length).fill(0);
  await Promise.all(
    Array.from({ length: Number(values.connections) }, async () => {
      const socket = await loop.connect({ host: '127.0.0.1', port: group.port });
      const answer = await socket.read();
      served[threadIds.indexOf(Number(answer?.toString()))]! += 1;
      socket.close();
    }),
  );
  await loop.close();
  served.forEach((count, index) => {
    console.log(`worker ${index} (thread ${threadIds[index]}): ${count} connections`);
  });
  await group.close();
  console.log('closed every worker');
} else {
  const { index, loop } = await listenInWorker(
    async (socket) => {
      await socket.write(String(threadId));
    },
    { backend: (workerData as { backend: BackendName | 'auto' }).backend },
  );
  console.log(`worker ${index} listening on ${loop.info.backend}`);
}

/**
 * Workers inherit the main thread's execArgv, and with it tsx's `--import`; but tsx's loader
 * registers itself in worker threads only on recent Node (22.22.3, 24.11.1 and later, tsx issue
 * #354), so each worker registers it again (harmless where tsx already did). Compiled to .js, none
 * of this is needed.
 */
function tsxInWorkers(): string[] | undefined {
  if (!import.meta.url.endsWith('.ts')) return undefined;
  const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  return [...process.execArgv, '--import', `data:text/javascript,import{register}from${api};register()`];
}
