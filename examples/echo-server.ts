// A coroutine echo server on twinloop: one async function per connection.
//
//   npm run example:server -- [--port 7000] [--host 127.0.0.1] [--backend auto|epoll|io_uring]
//
// Ctrl-C (or SIGTERM) prints what it did and exits.
import { parseArgs } from 'node:util';

import { open, type BackendName } from 'twinloop';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '7000' },
    host: { type: 'string', default: '127.0.0.1' },
    backend: { type: 'string', default: 'auto' },
  },
});

const loop = open({ backend: values.backend as BackendName | 'auto' });
let connections = 0;
let bytes = 0;

const server = await loop.listen({ host: values.host, port: Number(values.port) }, async (socket) => {
  connections += 1;
  for await (const chunk of socket) {
    bytes += chunk.length;
    await socket.write(chunk);
  }
});

const { backend, pattern, fallbackReason } = loop.info;
console.log(`echo server on ${values.host}:${server.port} — ${backend} (${pattern})${fallbackReason ? `, because ${fallbackReason}` : ''}`);

async function stop(): Promise<void> {
  const stats = loop.stats();
  await loop.close();
  console.log(`served ${connections} connections, echoed ${bytes} bytes; ${stats.syscalls} syscalls in ${stats.batches} batches`);
  process.exit(0);
}
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
