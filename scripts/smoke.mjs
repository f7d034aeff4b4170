// Smoke test of an installed twinloop: load the package, open a loop, echo for a second, say
// which backend and which binary ran. Used by test-package.mjs (in a project that installed the
// packed tarball) and test-node-versions.sh (each Node version, and linux-arm64 under qemu).
// Inside the repo `twinloop` resolves to the repo itself (a package may import itself by name).
//
//   node smoke.mjs [--via import|require] [--backend auto] [--seconds 1]
//                  [--expect-backend epoll] [--expect-binding /prebuilds/linux-x64/]
//                  [--expect-fallback io_uring]   (fallbackReason must name it, when it is built in)
// Closes with `N passed, N failed`; exits non-zero on a failure.
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    via: { type: 'string', default: 'import' },
    backend: { type: 'string', default: 'auto' },
    seconds: { type: 'string', default: '1' },
    'expect-backend': { type: 'string' },
    'expect-binding': { type: 'string' },
    'expect-fallback': { type: 'string' },
  },
});

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
}
function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

const tag = `[node ${process.version} ${process.platform}-${process.arch}, ${opts.via}]`;
let twinloop;
try {
  twinloop = opts.via === 'require' ? createRequire(import.meta.url)('twinloop') : await import('twinloop');
  check(`${tag} the package loads through ${opts.via}`, typeof twinloop.open === 'function');
} catch (error) {
  check(`${tag} the package loads through ${opts.via}`, false, error.stack);
  finish();
  process.exit();
}

const { open, bindingPath, availableBackends } = twinloop;
console.log(`     binding: ${bindingPath}`);
console.log(`     available backends: ${availableBackends().join(', ')}`);
if (opts['expect-binding']) {
  check(`the loaded binary is under ${opts['expect-binding']}`,
    bindingPath.replaceAll('\\', '/').includes(opts['expect-binding']), bindingPath);
}

const loop = open({ backend: opts.backend });
const { info } = loop;
console.log(`     backend: ${info.backend} (${info.pattern}), features: [${info.features.join(', ')}]` +
  (info.fallbackReason ? `, fallbackReason: ${info.fallbackReason}` : ''));
if (opts['expect-backend']) {
  check(`backend '${opts.backend}' opens ${opts['expect-backend']}`, info.backend === opts['expect-backend'], info.backend);
}
if (opts['expect-fallback']) {
  const wanted = opts['expect-fallback'];
  // The fallback can only be explained for a backend this binary has; one not built in is noted.
  const compiledIn = compiledBackends().includes(wanted);
  if (compiledIn) {
    check(`'auto' says why it passed ${wanted} over`, (info.fallbackReason ?? '').includes(wanted), info.fallbackReason ?? 'no fallbackReason');
  } else {
    console.log(`note ${wanted} is not built into this binary: 'auto' had nothing to fall back from`);
  }
}

/** The backends built into the loaded binary (the package exports only those that open here). */
function compiledBackends() {
  try { return createRequire(import.meta.url)(bindingPath).constants?.backends ?? []; } catch { return []; }
}

async function readExactly(socket, length) {
  const chunks = [];
  let received = 0;
  while (received < length) {
    const chunk = await socket.read();
    if (chunk === null) throw new Error(`connection closed after ${received} of ${length} bytes`);
    chunks.push(chunk);
    received += chunk.length;
  }
  return Buffer.concat(chunks);
}

// A hung echo is a failure to report, not a CI job to stall.
const watchdog = setTimeout(() => {
  check(`a ${opts.seconds}-second echo on ${info.backend} returns every byte`, false, 'no progress: timed out');
  finish();
  process.exit(1);
}, Number(opts.seconds) * 1000 + 20_000);
try {
  const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
    for await (const chunk of socket) await socket.write(chunk);
  });
  const deadline = Date.now() + Number(opts.seconds) * 1000;
  let roundTrips = 0;
  let bytes = 0;
  await Promise.all(Array.from({ length: 4 }, async (_, i) => {
    const socket = await loop.connect({ host: '127.0.0.1', port: server.port });
    let size = 64;
    while (Date.now() < deadline) {
      const message = randomBytes(size);
      await socket.write(message);
      const echo = await readExactly(socket, size);
      if (!echo.equals(message)) throw new Error(`connection ${i}: the echo differs from what was sent`);
      roundTrips++;
      bytes += size;
      size = size >= 65536 ? 64 : size * 4;   // 64 B … 64 KiB: small and multi-read messages
    }
    await socket.end();
    socket.close();
  }));
  check(`a ${opts.seconds}-second echo on ${info.backend} returns every byte`, roundTrips > 0,
    `${roundTrips} round trips, ${(bytes / 1024).toFixed(0)} KiB over 4 connections`);
} catch (error) {
  check(`a ${opts.seconds}-second echo on ${info.backend} returns every byte`, false, error.stack);
} finally {
  await loop.close();
  clearTimeout(watchdog);
}
finish();
