// A short echo on every backend, for scripts/test-valgrind.sh: streaming reads and writes, the
// reactor and proactor APIs, a reset, and a close with operations in flight, so that every path
// that hands memory to the kernel runs at least once under memcheck.
import { randomBytes } from 'node:crypto';

import { readBytes } from '../test/fixtures/read-bytes.mjs';

const { open, availableBackends, bindingPath } = await import(new URL('../dist/index.js', import.meta.url));

const backends = process.argv[2] ? process.argv[2].split(',') : availableBackends();
console.log(`binary: ${bindingPath}; backends: ${backends.join(', ')}`);
for (const backend of backends) {
  const loop = open({ backend });
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
    try {
      for await (const chunk of socket) await socket.write(chunk);
    } catch {}  // the reset below
  });

  // Streaming echo: 8 connections × 8 messages up to 64 KiB.
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
      for (let i = 0; i < 8; i++) {
        const message = randomBytes(1 + Math.floor(Math.random() * 64 * 1024));
        const echoed = readBytes(socket, message.length);
        await socket.write(message);
        if (!(await echoed).equals(message)) throw new Error(`${backend}: echo differs`);
      }
      await socket.end();
      socket.close();
    }),
  );

  // Proactor and reactor round trips on one connection.
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  const buffer = Buffer.alloc(4096);
  await loop.proactor.write(socket, Buffer.from('proactor'));
  let n = await loop.proactor.read(socket, buffer);
  if (buffer.subarray(0, n).toString() !== 'proactor') throw new Error(`${backend}: proactor echo differs`);
  await loop.proactor.write(socket, Buffer.from('reactor'));
  n = await new Promise((resolve) =>
    loop.reactor.watch(socket, 'readable', () => {
      const got = loop.reactor.tryRead(socket, buffer);
      if (got === null) return;
      loop.reactor.unwatch(socket);
      resolve(got);
    }),
  );
  if (buffer.subarray(0, n).toString() !== 'reactor') throw new Error(`${backend}: reactor echo differs`);

  // A reset with unread data, and a close with a read and a big write still in flight.
  const victim = await loop.connect({ host: '127.0.0.1', port: server.port });
  await victim.write('unread');
  victim.resetAndDestroy();
  const stuck = await loop.connect({ host: '127.0.0.1', port: server.port });
  const pendingRead = loop.proactor.read(stuck, Buffer.alloc(1024)).catch((error) => error.code);
  const pendingWrite = stuck.write(randomBytes(8 * 1024 * 1024)).catch((error) => error.code);
  await new Promise((resolve) => setTimeout(resolve, 50));
  stuck.close();
  await Promise.all([pendingRead, pendingWrite]);

  await loop.close();
  console.log(`${backend}: ok`);
}
