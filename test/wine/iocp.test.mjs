// The IOCP backend's suite, run by a Windows node.exe (under wine on Linux: scripts/test-iocp-wine.sh).
// The same behaviours as test/net.test.ts and test/patterns.test.ts, in plain JavaScript against
// dist/ and the binary named by TWINLOOP_BINARY, because vitest does not run under wine. Sizes are
// smaller than there (wine adds a thread hop and a server round trip to every socket call); each
// test still checks the outcome a user sees: bytes equal, error codes, no hang.
//
// Prints one line per test and then `N passed, N failed`; exits non-zero on any failure.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { getSystemErrorName } from 'node:util';
import { Worker } from 'node:worker_threads';

const distEntry = new URL('../../dist/index.js', import.meta.url).href;
const { open, availableBackends, bindingPath } = await import(distEntry);
const native = createRequire(import.meta.url)(bindingPath);

const kTestTimeoutMs = 60_000;
const only = process.env.TWINLOOP_WINE_ONLY;  // a substring: run just the tests whose name has it
const tests = [];
const test = (name, fn) => tests.push({ name, fn });

// ---------------------------------------------------------------------------------------------
// Helpers, as test/helpers.ts has them.

const sha256 = (...chunks) => {
  const hash = createHash('sha256');
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest('hex');
};
const logUniformSize = (min, max) => Math.round(Math.exp(Math.log(min) + Math.random() * (Math.log(max) - Math.log(min))));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function listenEcho(loop, host = '127.0.0.1') {
  return loop.listen({ host, port: 0 }, async (socket) => {
    for await (const chunk of socket) await socket.write(chunk);
  });
}

async function readBytes(socket, length) {
  const chunks = [];
  let total = 0;
  while (total < length) {
    const chunk = await socket.read();
    if (chunk === null) break;
    chunks.push(chunk);
    total += chunk.length;
  }
  return Buffer.concat(chunks);
}

async function readAll(socket) {
  const chunks = [];
  for await (const chunk of socket) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function poll(fn, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${fn}`);
    await sleep(10);
  }
}

async function closedPort(loop) {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 });
  const { port } = server;
  server.close();
  return port;
}

async function rejectsWith(promise, expected) {
  const error = await promise.then(
    () => null,
    (e) => e,
  );
  assert.ok(error, `expected a rejection with ${JSON.stringify(expected)}`);
  for (const [key, value] of Object.entries(expected)) assert.equal(error[key], value, `${key} of ${error.stack}`);
  return error;
}

// Each test gets a fresh loop, closed afterwards whatever happened.
function loopTest(name, fn) {
  test(name, async () => {
    const loop = open({ backend: 'iocp' });
    try {
      await fn(loop);
    } finally {
      await loop.close();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The backend and its error numbering.

test('iocp is the backend auto picks on Windows, and says it is a proactor', async () => {
  assert.deepEqual(availableBackends(), ['iocp']);
  const loop = open();
  try {
    assert.equal(loop.info.backend, 'iocp');
    assert.equal(loop.info.pattern, 'proactor');
    assert.equal(loop.info.emulatedPattern, 'reactor');
  } finally {
    await loop.close();
  }
});

test("the addon's error numbers are libuv's Windows codes, which util.getSystemErrorName names", () => {
  assert.match(bindingPath, /twinloop\.node$/);
  const names = Object.fromEntries(Object.entries(native.errors).map(([name, errno]) => [name, getSystemErrorName(errno)]));
  assert.deepEqual(names, { EAGAIN: 'EAGAIN', ECANCELED: 'ECANCELED', EBADF: 'EBADF', EMFILE: 'EMFILE', ENFILE: 'ENFILE' });
  assert.equal(native.errors.EAGAIN, -4088);
});

// ---------------------------------------------------------------------------------------------
// Echo and transfers.

loopTest('echoes 1 000 messages of 1 B to 256 KiB (log-uniform) over 20 connections, byte for byte', async (loop) => {
  const server = await listenEcho(loop);
  const results = await Promise.all(
    Array.from({ length: 20 }, async () => {
      const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
      const messages = Array.from({ length: 50 }, () => randomBytes(logUniformSize(1, 256 * 1024)));
      const total = messages.reduce((sum, message) => sum + message.length, 0);
      const received = readBytes(socket, total);
      for (const message of messages) await socket.write(message);
      const echoed = await received;
      socket.close();
      return { sent: sha256(...messages), echoed: sha256(echoed), total, length: echoed.length };
    }),
  );
  for (const result of results) {
    assert.equal(result.length, result.total);
    assert.equal(result.echoed, result.sent);
  }
});

loopTest('moves 16 MiB each way on one connection without losing or reordering a byte', async (loop) => {
  const server = await listenEcho(loop);
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  const payload = randomBytes(16 * 1024 * 1024);
  const received = readBytes(socket, payload.length);
  for (let offset = 0; offset < payload.length; offset += 1024 * 1024) {
    await socket.write(payload.subarray(offset, offset + 1024 * 1024));
  }
  const echoed = await received;
  assert.equal(echoed.length, payload.length);
  assert.equal(sha256(echoed), sha256(payload));
});

loopTest('a single 24 MiB write completes only once the kernel has taken every byte', async (loop) => {
  let peer;
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
    peer = socket;
  });
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  const payload = randomBytes(24 * 1024 * 1024);
  let completed = false;
  const write = loop.proactor.write(socket, payload).then((n) => {
    completed = true;
    return n;
  });
  await sleep(100);
  assert.equal(completed, false);
  await poll(() => peer);
  const received = await readBytes(peer, payload.length);
  assert.equal(await write, payload.length);
  assert.equal(sha256(received), sha256(payload));
});

loopTest('echoes over IPv6 loopback and reports both addresses', async (loop) => {
  const server = await listenEcho(loop, '::1');
  assert.equal(server.address().family, 'IPv6');
  assert.equal(server.address().address, '::1');
  const socket = await loop.connect({ host: '::1', port: server.port });
  assert.equal(socket.remotePort, server.port);
  assert.equal(socket.remoteAddress, '::1');
  await socket.write('six');
  assert.equal((await readBytes(socket, 3)).toString(), 'six');
});

// ---------------------------------------------------------------------------------------------
// Half-close, resets, refused, in use.

loopTest('half-close: end() gives the peer EOF, and the peer can still write back', async (loop) => {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
    const request = await readAll(socket);
    await socket.write(Buffer.concat([Buffer.from('got '), request]));
  });
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  await socket.write('hello');
  await socket.end();
  await rejectsWith(socket.write('more'), { code: 'ERR_STREAM_WRITE_AFTER_END' });
  assert.equal((await readAll(socket)).toString(), 'got hello');
});

loopTest('a peer reset is ECONNRESET on that socket while the server keeps serving others', async (loop) => {
  const serverErrors = [];
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
    try {
      for await (const chunk of socket) await socket.write(chunk);
    } catch (error) {
      serverErrors.push(error.code);
    }
  });
  const victim = await loop.connect({ host: '127.0.0.1', port: server.port });
  await victim.write('ping');
  assert.equal((await victim.read())?.toString(), 'ping');
  await victim.write('unread');
  victim.resetAndDestroy();
  await poll(() => serverErrors.length > 0);
  assert.deepEqual(serverErrors, ['ECONNRESET']);
  const other = await loop.connect({ host: '127.0.0.1', port: server.port });
  await other.write('still here');
  assert.equal((await readBytes(other, 10)).toString(), 'still here');
});

loopTest('a server that resets is ECONNRESET for the client', async (loop) => {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
    await socket.read();
    socket.resetAndDestroy();
  });
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  await socket.write('x');
  const error = await rejectsWith(readAll(socket), { code: 'ECONNRESET', syscall: 'read' });
  assert.equal(typeof error.errno, 'number');
});

loopTest('connecting to a closed port fails with ECONNREFUSED', async (loop) => {
  const port = await closedPort(loop);
  const error = await rejectsWith(loop.connect({ host: '127.0.0.1', port }), {
    code: 'ECONNREFUSED',
    syscall: 'connect',
    address: '127.0.0.1',
    port,
    errno: -4078,
  });
  assert.ok(error instanceof Error);
  assert.equal(error.message, `connect ECONNREFUSED 127.0.0.1:${port}`);
});

loopTest('listening on a port in use fails with EADDRINUSE', async (loop) => {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 });
  await rejectsWith(loop.listen({ host: '127.0.0.1', port: server.port }), { code: 'EADDRINUSE', syscall: 'listen' });
});

loopTest('a Unix domain socket path is EAFNOSUPPORT on IOCP', async (loop) => {
  await rejectsWith(loop.listen({ path: 'C:\\twinloop-test.sock' }), { code: 'EAFNOSUPPORT', syscall: 'listen' });
});

// ---------------------------------------------------------------------------------------------
// Bad arguments and closed handles.

loopTest('rejects bad arguments with TypeError or RangeError naming the argument', async (loop) => {
  await assert.rejects(loop.listen({ host: '127.0.0.1', port: 70000 }), RangeError);
  await assert.rejects(loop.listen({ host: '127.0.0.1', port: 70000 }), /"options\.port"/);
  await assert.rejects(loop.listen({ host: '127.0.0.1', port: -1 }), RangeError);
  await assert.rejects(loop.listen({ host: '127.0.0.1', port: '80' }), /"options\.port".*number/);
  await assert.rejects(loop.listen(null), TypeError);
  await assert.rejects(loop.listen({ port: 0 }, 'handler'), /"handler"/);
  await assert.rejects(loop.connect({ host: '127.0.0.1', port: 0 }), RangeError);
  await assert.rejects(loop.connect({ path: '' }), /"options\.path"/);
  const server = await listenEcho(loop);
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  assert.throws(() => socket.write(42), /"data"/);
  assert.throws(() => loop.reactor.tryRead(socket, 'buf'), /"buffer"/);
  assert.throws(() => loop.reactor.tryRead({}, Buffer.alloc(1)), /"socket"/);
  assert.throws(() => loop.reactor.watch(socket, 'sideways', () => {}), /"readiness"/);
  assert.throws(() => loop.reactor.watch(socket, 'readable', 5), /"callback"/);
  assert.throws(() => loop.proactor.read(socket, new ArrayBuffer(4)), /"buffer"/);
  assert.throws(() => loop.proactor.accept(socket), /"server"/);
  assert.throws(() => open({ backend: 'select' }), /"options\.backend"/);
  assert.throws(() => open({ backend: 'epoll' }), /cannot open backend 'epoll'/);
  assert.throws(() => open({ batchSize: 0 }), RangeError);
});

loopTest('a closed socket used again is a clear error, never a crash', async (loop) => {
  const server = await listenEcho(loop);
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  socket.close();
  socket.close();
  assert.equal(socket.closed, true);
  await rejectsWith(socket.write('x'), { code: 'ERR_SOCKET_CLOSED', message: 'Socket is closed' });
  await rejectsWith(socket.end(), { code: 'ERR_SOCKET_CLOSED' });
  assert.equal(await socket.read(), null);
  assert.throws(() => socket.address(), { code: 'ERR_SOCKET_CLOSED' });
  assert.throws(() => loop.reactor.tryRead(socket, Buffer.alloc(4)), { code: 'ERR_SOCKET_CLOSED' });
  await rejectsWith(loop.proactor.read(socket, Buffer.alloc(4)), { code: 'ERR_SOCKET_CLOSED' });
});

// ---------------------------------------------------------------------------------------------
// Closing with operations in flight.

loopTest('closing a socket with a write in flight fails that write with ERR_SOCKET_CLOSED', async (loop) => {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, () => {});
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  const write = socket.write(randomBytes(32 * 1024 * 1024));
  const pendingRead = socket.read();
  await sleep(50);
  assert.ok(socket.writableLength > 0);
  socket.close();
  await rejectsWith(write, { code: 'ERR_SOCKET_CLOSED' });
  assert.equal(await pendingRead, null);
  assert.equal(socket.writableLength, 0);
});

loopTest('proactor: closing a socket completes its reads and writes in flight with ERR_SOCKET_CLOSED', async (loop) => {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, () => {});
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  const read = loop.proactor.read(socket, Buffer.alloc(1024));
  const write = loop.proactor.write(socket, randomBytes(32 * 1024 * 1024));
  await sleep(50);
  socket.close();
  await rejectsWith(read, { code: 'ERR_SOCKET_CLOSED' });
  await rejectsWith(write, { code: 'ERR_SOCKET_CLOSED' });
});

loopTest('proactor: an accept in flight fails cleanly when its server closes', async (loop) => {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 });
  const accept = loop.proactor.accept(server);
  server.close();
  await rejectsWith(accept, { code: 'ERR_SOCKET_CLOSED' });
});

test('loop.close() with servers, sockets and a read in flight closes them all', async () => {
  const loop = open({ backend: 'iocp' });
  const server = await listenEcho(loop);
  const sockets = await Promise.all(Array.from({ length: 20 }, () => loop.connect({ host: '127.0.0.1', port: server.port })));
  await Promise.all(sockets.slice(1).map((socket) => socket.write('hi')));
  const pendingRead = sockets[0].read();
  await readBytes(sockets[1], 2);
  const write = loop.proactor.write(sockets[2], randomBytes(32 * 1024 * 1024));
  await loop.close();
  assert.equal(loop.closed, true);
  assert.ok(sockets.every((socket) => socket.closed));
  assert.equal(server.closed, true);
  assert.equal(await pendingRead, null);
  await assert.rejects(write);
  await rejectsWith(loop.connect({ host: '127.0.0.1', port: 1 }), { code: 'ERR_LOOP_CLOSED' });
  await rejectsWith(sockets[3].write('x'), { code: 'ERR_LOOP_CLOSED' });
  await loop.close();
});

// ---------------------------------------------------------------------------------------------
// The two patterns.

function reactorEcho(loop, server) {
  loop.reactor.watch(server, 'readable', () => {
    let socket;
    while ((socket = loop.reactor.tryAccept(server)) !== null) serve(socket);
  });
  function serve(socket) {
    const buffer = Buffer.alloc(64 * 1024);
    let pending = null;
    const flush = () => {
      while (pending !== null) {
        const n = loop.reactor.tryWrite(socket, pending);
        if (n === null) return;
        pending = n === pending.length ? null : pending.subarray(n);
      }
      loop.reactor.unwatch(socket, 'writable');
      loop.reactor.watch(socket, 'readable', onReadable);
    };
    const onReadable = () => {
      const n = loop.reactor.tryRead(socket, buffer);
      if (n === null) return;
      if (n === 0) return socket.close();
      pending = Buffer.from(buffer.subarray(0, n));
      loop.reactor.unwatch(socket, 'readable');
      loop.reactor.watch(socket, 'writable', flush);
    };
    loop.reactor.watch(socket, 'readable', onReadable);
  }
}

function proactorEcho(loop, server) {
  const acceptNext = () => {
    loop.proactor.accept(server, (error, socket) => {
      if (error) return;
      acceptNext();
      void serve(socket);
    });
  };
  acceptNext();
  async function serve(socket) {
    const buffer = Buffer.alloc(64 * 1024);
    for (;;) {
      const n = await loop.proactor.read(socket, buffer).catch(() => 0);
      if (n === 0) return socket.close();
      await loop.proactor.write(socket, buffer.subarray(0, n));
    }
  }
}

async function roundTrip(loop, api, port, payload) {
  const socket = await loop.connect({ host: '127.0.0.1', port });
  const received = Buffer.alloc(payload.length);
  let got = 0;
  if (api === 'proactor') {
    const reading = (async () => {
      while (got < payload.length) {
        const n = await loop.proactor.read(socket, received.subarray(got));
        if (n === 0) break;
        got += n;
      }
    })();
    for (let offset = 0; offset < payload.length; offset += 256 * 1024) {
      const written = await loop.proactor.write(socket, payload.subarray(offset, offset + 256 * 1024));
      assert.equal(written, Math.min(256 * 1024, payload.length - offset));
    }
    await reading;
  } else {
    await new Promise((resolve, reject) => {
      let sent = 0;
      loop.reactor.watch(socket, 'writable', () => {
        const n = loop.reactor.tryWrite(socket, payload.subarray(sent));
        if (n !== null) sent += n;
        if (sent === payload.length) loop.reactor.unwatch(socket, 'writable');
      });
      loop.reactor.watch(socket, 'readable', () => {
        try {
          const n = loop.reactor.tryRead(socket, received.subarray(got));
          if (n === null) return;
          got += n;
          if (n === 0 || got === payload.length) {
            loop.reactor.unwatch(socket);
            resolve();
          }
        } catch (error) {
          reject(error);
        }
      });
    });
  }
  socket.close();
  return received.subarray(0, got);
}

for (const api of ['reactor', 'proactor']) {
  loopTest(`${api} API: an echo returns 4 MiB from 5 clients byte for byte`, async (loop) => {
    const server = await loop.listen({ host: '127.0.0.1', port: 0 });
    (api === 'reactor' ? reactorEcho : proactorEcho)(loop, server);
    const payloads = Array.from({ length: 5 }, () => randomBytes(800 * 1024));
    const echoed = await Promise.all(payloads.map((payload) => roundTrip(loop, api, server.port, payload)));
    echoed.forEach((bytes, i) => assert.equal(sha256(bytes), sha256(payloads[i])));
  });

  loopTest(`${api} API: talks to the net layer of the same loop`, async (loop) => {
    const server = await listenEcho(loop);
    const payload = randomBytes(3 * 1024 * 1024);
    assert.equal(sha256(await roundTrip(loop, api, server.port, payload)), sha256(payload));
  });
}

loopTest('reactor: tryRead returns null when nothing is ready, 0 at EOF', async (loop) => {
  let peer;
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
    peer = socket;
  });
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  assert.equal(loop.reactor.tryRead(socket, Buffer.alloc(16)), null);
  await poll(() => peer);
  await peer.end();
  const n = await new Promise((resolve) => loop.reactor.watch(socket, 'readable', () => resolve(loop.reactor.tryRead(socket, Buffer.alloc(16)))));
  assert.equal(n, 0);
});

loopTest('reactor: readiness repeats while data stays unread (level-triggered)', async (loop) => {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
    await socket.write('abcdef');
  });
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  const parts = [];
  await new Promise((resolve) => {
    loop.reactor.watch(socket, 'readable', () => {
      const buffer = Buffer.alloc(2);
      const n = loop.reactor.tryRead(socket, buffer);
      if (n) parts.push(buffer.toString('latin1', 0, n));
      if (parts.join('') === 'abcdef') resolve();
    });
  });
  assert.equal(parts.join(''), 'abcdef');
});

loopTest('reactor: a full send buffer makes tryWrite return null until the socket drains', async (loop) => {
  let peer;
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
    peer = socket;
  });
  const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
  await poll(() => peer);
  const chunk = randomBytes(256 * 1024);
  let sent = 0;
  for (let i = 0; i < 2000; ++i) {
    const n = loop.reactor.tryWrite(socket, chunk);
    if (n === null) break;
    sent += n;
  }
  assert.equal(loop.reactor.tryWrite(socket, chunk), null, 'the peer never reads: the socket must fill up');
  const reading = readBytes(peer, sent + chunk.length);
  await new Promise((resolve) => {
    loop.reactor.watch(socket, 'writable', () => {
      const n = loop.reactor.tryWrite(socket, chunk);
      if (n === null) return;
      sent += n;
      loop.reactor.unwatch(socket, 'writable');
      resolve();
    });
  });
  socket.end();
  assert.equal((await reading).length, sent);
});

loopTest('an exception thrown by a callback reaches uncaughtException without losing other events', async (loop) => {
  const server = await listenEcho(loop);
  const a = await loop.connect({ host: '127.0.0.1', port: server.port });
  const b = await loop.connect({ host: '127.0.0.1', port: server.port });
  const listeners = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  const caught = [];
  process.on('uncaughtException', (error) => caught.push(error));
  try {
    loop.reactor.watch(a, 'writable', () => {
      loop.reactor.unwatch(a, 'writable');
      throw new Error('boom');
    });
    await b.write('ok');
    assert.equal((await readBytes(b, 2)).toString(), 'ok');
    await poll(() => caught.length === 1);
    assert.equal(caught[0].message, 'boom');
  } finally {
    process.removeAllListeners('uncaughtException');
    for (const listener of listeners) process.on('uncaughtException', listener);
  }
});

// ---------------------------------------------------------------------------------------------
// Several loops, worker threads.

test('two loops in one process serve and connect independently', async () => {
  const first = open({ backend: 'iocp' });
  const second = open({ backend: 'iocp' });
  try {
    const server = await listenEcho(first);
    const socket = await second.connect({ host: '127.0.0.1', port: server.port });
    const payload = randomBytes(2 * 1024 * 1024);
    const received = readBytes(socket, payload.length);
    await socket.write(payload);
    assert.equal(sha256(await received), sha256(payload));
  } finally {
    await first.close();
    await second.close();
  }
});

test('a loop inside a worker thread echoes, and the thread exits cleanly', async () => {
  const worker = new Worker(new URL('../fixtures/worker-echo.mjs', import.meta.url), { workerData: { backend: 'iocp', distEntry } });
  const result = await new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  assert.deepEqual(result, { ok: true, bytes: 1 << 20, backend: 'iocp' });
  assert.equal(await new Promise((resolve) => worker.once('exit', resolve)), 0);
});

test('a worker that exits with its loop still open is cleaned up by the environment teardown', async () => {
  const worker = new Worker(new URL('../fixtures/worker-leak.mjs', import.meta.url), { workerData: { backend: 'iocp', distEntry } });
  const code = await new Promise((resolve, reject) => {
    worker.once('exit', resolve);
    worker.once('error', reject);
  });
  assert.equal(code, 0);
});

// ---------------------------------------------------------------------------------------------

let passed = 0;
let failed = 0;
const started = Date.now();
for (const { name, fn } of tests) {
  if (only && !name.includes(only)) continue;
  const t0 = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${kTestTimeoutMs} ms`)), kTestTimeoutMs);
      }),
    ]);
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name} (${Date.now() - t0} ms)\n     ${String(error?.stack ?? error).split('\n').join('\n     ')}`);
  } finally {
    clearTimeout(timer);
  }
}
console.log(`iocp suite on ${process.platform} ${process.version}, ${Date.now() - started} ms`);
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
// A handle a failed test leaked must not keep the process (and CI) waiting.
setTimeout(() => process.exit(process.exitCode), 2000).unref();
