import { open } from 'twinloop';

const loop = open({ backend: 'auto' });   // or 'epoll', 'io_uring', 'kqueue', 'iocp'
console.log(loop.info);                   // { backend, pattern, emulatedPattern, features, fallbackReason? }

// The net layer — the same on every backend.
const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
  for await (const chunk of socket) await socket.write(chunk);   // echo
});
const client = await loop.connect({ host: '127.0.0.1', port: server.port });
await client.write('hello');
console.log(String(await client.read()));  // 'hello'

// The patterns get a connection of their own: a socket is read through one API only (once the
// net layer has read `client`, loop.proactor.read and loop.reactor.tryRead refuse it: ERR_SOCKET_BUSY).
const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
const buffer = Buffer.alloc(64 * 1024);

// The reactor pattern: wait for readiness, then do the non-blocking call yourself.
loop.reactor.tryWrite(socket, Buffer.from('ping'));   // the bytes the socket took; null: none
const n = await new Promise<number>((resolve) => {
  loop.reactor.watch(socket, 'readable', () => {
    const count = loop.reactor.tryRead(socket, buffer);   // null: nothing there after all; 0: EOF
    if (count === null) return;
    loop.reactor.unwatch(socket);
    resolve(count);
  });
});
console.log(String(buffer.subarray(0, n)));   // 'ping'

// The proactor pattern: submit the operation, get called when the kernel has done it.
await loop.proactor.write(socket, Buffer.from('pong'));
const m = await loop.proactor.read(socket, buffer);   // the bytes are already in buffer
console.log(String(buffer.subarray(0, m)));   // 'pong'

await loop.close();   // closes every server and socket of the loop
