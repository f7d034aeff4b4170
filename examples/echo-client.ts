// An echo client on twinloop: N connections, each sending M messages and checking every byte.
//
//   npm run example:client -- [--port 7000] [--host 127.0.0.1] [--connections 10] [--messages 1000] [--size 64]
//
// Start examples/echo-server first.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import { open, type Socket } from 'twinloop';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '7000' },
    host: { type: 'string', default: '127.0.0.1' },
    connections: { type: 'string', default: '10' },
    messages: { type: 'string', default: '1000' },
    size: { type: 'string', default: '64' },
    backend: { type: 'string', default: 'auto' },
  },
});
const connections = Number(values.connections);
const messages = Number(values.messages);
const size = Number(values.size);

async function readExactly(socket: Socket, length: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let received = 0;
  while (received < length) {
    const chunk = await socket.read();
    if (chunk === null) throw new Error(`connection closed after ${received} of ${length} bytes`);
    chunks.push(chunk);
    received += chunk.length;
  }
  return Buffer.concat(chunks);
}

const loop = open({ backend: values.backend as 'auto' });
const latencies: number[] = [];
const started = process.hrtime.bigint();
await Promise.all(
  Array.from({ length: connections }, async () => {
    const socket = await loop.connect({ host: values.host, port: Number(values.port) });
    for (let i = 0; i < messages; i++) {
      const message = randomBytes(size);
      const sent = process.hrtime.bigint();
      await socket.write(message);
      const echo = await readExactly(socket, size);
      latencies.push(Number(process.hrtime.bigint() - sent) / 1000);
      if (!echo.equals(message)) throw new Error('the echo differs from what was sent');
    }
    await socket.end();
    socket.close();
  }),
);
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await loop.close();

latencies.sort((a, b) => a - b);
const percentile = (p: number): string => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(0);
console.log(
  `${connections * messages} round trips of ${size} B over ${connections} connections in ${seconds.toFixed(2)} s: ` +
    `${((connections * messages) / seconds).toFixed(0)}/s, every byte verified; ` +
    `latency p50 ${percentile(0.5)} µs, p99 ${percentile(0.99)} µs (${loop.info.backend})`,
);
