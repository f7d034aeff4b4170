// Differential fuzzing: random sequences of socket operations on both ends of a connection, run on
// every backend and on Node's own `net`; the bytes each end receives, how its stream ends and how
// each write settles must agree.
//
// Both ends read eagerly, as Node's sockets do (a socket closed with unread bytes in the kernel
// sends RST instead of FIN, so a lazy reader would differ for that reason alone), and the harness
// lets each operation settle (5 ms on loopback) before the next, so the outcome is the kernel's, not
// a race's. Where Node legitimately differs, the harness normalises, and says so:
//  1. Node sockets are opened with `allowHalfOpen: true`: by default Node ends its side on the
//     peer's FIN, twinloop never ends a side by itself. And with `noDelay: true`, as twinloop's
//     are: with Nagle's algorithm a small write waits in the kernel for the ACK of the one before,
//     so whether a write meets the RST of a peer that has closed depends on delayed ACKs.
//  2. Node destroys a socket on its first error (autoDestroy); twinloop leaves closing to the
//     caller, so the harness closes a twinloop socket on its first read or write error.
//  3. A write on a closed socket is `ERR_SOCKET_CLOSED` in twinloop and `ERR_STREAM_DESTROYED` in
//     Node; both are reported as `ERR_SOCKET_CLOSED`.
//  4. How a stream ends: twinloop's read() gives null both at EOF and after the socket's own
//     close(); the harness tells them apart with `socket.closed`, as Node does with 'end' vs 'close'.
//  5. A write after end() on a socket that is also gone: Node says ERR_STREAM_WRITE_AFTER_END or
//     ERR_STREAM_DESTROYED depending on how it was destroyed (by the caller, by an error, or by
//     itself once both sides had ended), twinloop says ERR_SOCKET_CLOSED once it is closed. After
//     end(), every refused write counts as ERR_STREAM_WRITE_AFTER_END.
//  6. Each write says what memory its bytes are in: a plain Uint8Array, a Buffer (small ones are
//     slices of Node's pool, at an offset), a view at an offset into a SharedArrayBuffer, a
//     length-tracking view of a resizable ArrayBuffer, a detached view (length 0), or a plain view
//     whose buffer is transferred right after write() — or, resizable, shrunk to 0 — with the
//     moved copy scribbled over. twinloop is given that memory; Node always a plain Buffer of what
//     it means to send: nothing for the detached view, the bytes as they were at write() for the
//     transferred and shrunk ones (twinloop copies at submit, so what happens later cannot count).
//  7. `foreign`: the twinloop end hands its socket to a second loop of the same backend
//     (`reactor.tryWrite`, `proactor.read`) and records each error's code; Node has no loops, so
//     its end records ERR_INVALID_ARG_VALUE for both. That second loop carries a connection made
//     the same way, so with the same handle numbers, and reads it eagerly: a call that got through
//     would show as bytes there (`strayBytes`, 0 on Node) or as bytes missing here.
//  8. `closeLoop`: on twinloop, the loop that owns both ends is closed (every run opens its own
//     loops and closes them after it); Node has no loop owning both, so both sockets are
//     destroyed at once — each end's fate is 'closed', as in 4. Writes after it reject
//     ERR_LOOP_CLOSED in twinloop, counted as ERR_SOCKET_CLOSED (then 5 applies).
//  9. A write of no bytes (the detached view) on a socket open for writing: twinloop makes no
//     syscall and resolves; Node makes an empty writev(2), which fails with an error the socket has
//     pending (EPIPE once the peer has reset), and then destroys the socket. So on Node's end such
//     a write is not made, and counts as 'ok'. After end() or once destroyed, Node refuses it before
//     any syscall, as twinloop does, and it is made.
import { createHash } from 'node:crypto';
import net from 'node:net';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { open, type BackendName, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends } from './helpers.js';

type SideName = 'client' | 'server';
/** The memory a write's bytes are in (normalisation 6). */
type Memory = 'plain' | 'buffer' | 'shared' | 'resizable' | 'detached' | 'transferred' | 'shrunk';
type Operation =
  | { kind: 'write'; side: SideName; bytes: Uint8Array; memory: Memory }
  | { kind: 'end' | 'close' | 'reset' | 'foreign'; side: SideName }
  | { kind: 'closeLoop' };

/** One end of a connection as the harness drives it. */
interface End {
  write(bytes: Uint8Array, memory: Memory): Promise<string>;  // 'ok' or the error code
  end(): void;
  close(): void;
  reset(): void;
  /** This end's socket used on another loop: the outcome of each call (normalisation 7). */
  foreign(): Promise<string[]>;
  /** How the stream ended: 'eof', 'closed' (by this end itself), or an error code. */
  readonly fate: Promise<string>;
  decided(): boolean;
  readonly received: Buffer[];
}

/** A connection and what acts on both of its ends at once. */
interface Connection {
  client: End;
  server: End;
  /** Closes the loop that owns both ends; Node destroys both sockets (normalisation 8). */
  closeLoop(): void;
  /** Bytes received by the second loop's connection (normalisation 7). */
  strayBytes(): number;
  dispose(): Promise<void>;
}

interface Outcome {
  received: { length: number; sha256: string };
  fate: string;
  writes: string[];
  foreign: string[];
}

const settle = (ms = 5): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function decider(): { fate: Promise<string>; decide(value: string): void; decided(): boolean } {
  let resolve!: (value: string) => void;
  let decided = false;
  const fate = new Promise<string>((r) => (resolve = r));
  const decide = (value: string): void => {
    decided = true;
    resolve(value);
  };
  return { fate, decide, decided: () => decided };
}

/** Polls `condition` until it holds or `ms` have passed. */
async function until(condition: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition() && performance.now() < deadline) await settle(1);
}

const receivedLength = (end: End): number => end.received.reduce((sum, chunk) => sum + chunk.length, 0);

// ES2024's resizable ArrayBuffer: the ES2022 lib this project compiles against does not declare it.
interface ResizableArrayBuffer extends ArrayBuffer {
  resize(byteLength: number): void;
}
const ResizableArrayBuffer = ArrayBuffer as unknown as new (byteLength: number, options: { maxByteLength: number }) => ResizableArrayBuffer;

function transfer(view: Uint8Array): ArrayBuffer {
  return structuredClone(view.buffer as ArrayBuffer, { transfer: [view.buffer as ArrayBuffer] });
}

/** `bytes` copied into `memory` (never `bytes` itself: fast-check replays it while shrinking). */
function inMemory(bytes: Uint8Array, memory: Memory): Uint8Array {
  switch (memory) {
    case 'plain':
    case 'transferred':
      return new Uint8Array(bytes);
    case 'buffer':
      return Buffer.from(bytes);
    case 'shared': {
      // At an offset, so that a null base plus the offset is not the view.
      const view = new Uint8Array(new SharedArrayBuffer(bytes.length + 16), 16, bytes.length);
      view.set(bytes);
      return view;
    }
    case 'resizable':
    case 'shrunk': {
      const view = new Uint8Array(new ResizableArrayBuffer(bytes.length, { maxByteLength: 2 * bytes.length }));
      view.set(bytes);
      return view;
    }
    case 'detached': {
      const view = new Uint8Array(bytes);
      transfer(view);
      return view;
    }
  }
}

/** What happens to `view`'s memory once write() has returned. */
function afterSubmit(view: Uint8Array, memory: Memory): void {
  if (memory === 'transferred') new Uint8Array(transfer(view)).fill(0xcd);
  else if (memory === 'shrunk') (view.buffer as ResizableArrayBuffer).resize(0);
}

/** What a write of `bytes` in `memory` sends (normalisation 6). */
const meantBytes = (bytes: Uint8Array, memory: Memory): Uint8Array => (memory === 'detached' ? bytes.subarray(0, 0) : bytes);

/** The outcome of a call that should fail at once: its error code, or what it did instead. */
async function codeOf(call: () => unknown): Promise<string> {
  try {
    const result = call();
    if (!(result instanceof Promise)) return `returned ${String(result)}`;
    result.catch(() => {});
    return `settled ${String(await Promise.race([result, settle(50).then(() => 'pending')]))}`;
  } catch (error) {
    return String((error as { code?: unknown }).code);
  }
}

function twinloopEnd(socket: Socket, other: Loop): End {
  const received: Buffer[] = [];
  const { fate, decide, decided } = decider();
  const fail = (code: string): void => {
    decide(code);
    socket.close();  // normalisation 2
  };
  void (async () => {
    try {
      for (;;) {
        const chunk = await socket.read();
        if (chunk === null) return decide(socket.closed ? 'closed' : 'eof');  // normalisation 4
        received.push(chunk);
      }
    } catch (error) {
      fail((error as { code: string }).code);
    }
  })();
  return {
    received,
    fate,
    decided,
    write: async (bytes, memory) => {
      const view = inMemory(bytes, memory);
      let writing: Promise<void>;
      try {
        writing = socket.write(view);
      } catch (error) {
        return `threw ${String((error as { code?: unknown }).code)}`;
      }
      afterSubmit(view, memory);
      try {
        await writing;
        return 'ok';
      } catch (error) {
        let { code } = error as { code: string };
        if (code === 'ERR_LOOP_CLOSED') code = 'ERR_SOCKET_CLOSED';  // normalisation 8
        if (code !== 'ERR_SOCKET_CLOSED') fail(code);
        return code;
      }
    },
    end: () => void socket.end().catch(() => {}),
    close: () => socket.close(),
    reset: () => socket.resetAndDestroy(),
    foreign: async () => [
      await codeOf(() => other.reactor.tryWrite(socket, Buffer.from('stray'))),
      await codeOf(() => other.proactor.read(socket, Buffer.alloc(64))),
    ],
  };
}

function netEnd(socket: net.Socket): End {
  const received: Buffer[] = [];
  const { fate, decide, decided } = decider();
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  socket.on('end', () => decide('eof'));
  socket.on('error', (error: NodeJS.ErrnoException) => decide(error.code ?? error.message));
  socket.on('close', () => decide('closed'));
  return {
    received,
    fate,
    decided,
    write: (bytes, memory) =>
      new Promise((resolve) => {
        const data = meantBytes(bytes, memory);
        if (data.length === 0 && !socket.writableEnded && !socket.destroyed) return resolve('ok');  // normalisation 9
        socket.write(Buffer.from(data), (error) => {
          const code = (error as NodeJS.ErrnoException | null | undefined)?.code;
          if (code === undefined) resolve('ok');
          else if (code === 'ERR_STREAM_DESTROYED') resolve('ERR_SOCKET_CLOSED');  // normalisation 3
          else resolve(code);
        });
      }),
    end: () => void socket.end(),
    close: () => void socket.destroy(),
    reset: () => void socket.resetAndDestroy(),
    foreign: async () => ['ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_VALUE'],  // normalisation 7
  };
}

type Connect = () => Promise<Connection>;

/** A connected pair on `loop`, made in the same steps on every loop, so with the same handle numbers. */
async function twinloopPair(loop: Loop): Promise<{ client: Socket; server: Socket }> {
  const server: Server = await loop.listen({ host: '127.0.0.1', port: 0 });
  const accepting = loop.proactor.accept(server);
  const client = await loop.connect({ host: '127.0.0.1', port: server.port });
  return { client, server: await accepting };
}

/** Each run on its own loop, and a second loop of the same backend for `foreign` (normalisations 7, 8). */
function twinloopConnect(backend: BackendName): Connect {
  return async () => {
    const loop = open({ backend });
    const other = open({ backend });
    const mine = await twinloopPair(loop);
    const theirs = await twinloopPair(other);
    let stray = 0;
    for (const socket of [theirs.client, theirs.server]) {
      void (async () => {
        for await (const chunk of socket) stray += chunk.length;
      })().catch(() => {});
    }
    return {
      client: twinloopEnd(mine.client, other),
      server: twinloopEnd(mine.server, other),
      closeLoop: () => void loop.close(),
      strayBytes: () => stray,
      dispose: async () => {
        await loop.close();
        await other.close();
      },
    };
  };
}

interface RunOutcome extends Record<SideName, Outcome> {
  strayBytes: number;
}

async function run(connect: Connect, operations: Operation[]): Promise<RunOutcome> {
  const ends = await connect();
  try {
    return await operate(ends, operations);
  } finally {
    await ends.dispose();
  }
}

async function operate(ends: Connection, operations: Operation[]): Promise<RunOutcome> {
  const writes: Record<SideName, string[]> = { client: [], server: [] };
  const foreign: Record<SideName, string[]> = { client: [], server: [] };
  const sent: Record<SideName, number> = { client: 0, server: 0 };
  const gone: Record<SideName, boolean> = { client: false, server: false };
  const ended: Record<SideName, boolean> = { client: false, server: false };
  const peerOf = (name: SideName): End => ends[name === 'client' ? 'server' : 'client'];
  for (const operation of operations) {
    if (operation.kind === 'closeLoop') {
      gone.client = gone.server = true;
      ends.closeLoop();
      await until(() => ends.client.decided() && ends.server.decided(), 200);
      await settle();
      continue;
    }
    const end = ends[operation.side];
    const peer = peerOf(operation.side);
    switch (operation.kind) {
      case 'write': {
        let result = await end.write(operation.bytes, operation.memory);
        if (ended[operation.side] && result === 'ERR_SOCKET_CLOSED') result = 'ERR_STREAM_WRITE_AFTER_END';  // normalisation 5
        writes[operation.side].push(result);
        if (result === 'ok') sent[operation.side] += meantBytes(operation.bytes, operation.memory).length;
        // Settled: the peer has every byte, or its stream has ended.
        await until(() => receivedLength(peer) >= sent[operation.side] || peer.decided(), 2000);
        break;
      }
      case 'end':
        ended[operation.side] = true;
        end.end();
        await until(() => peer.decided(), 200);
        break;
      case 'close':
      case 'reset':
        if (gone[operation.side]) break;
        gone[operation.side] = true;
        if (operation.kind === 'close') end.close();
        else end.reset();
        await until(() => peer.decided(), 200);
        break;
      case 'foreign':
        foreign[operation.side].push(...(await end.foreign()));
        break;
    }
    await settle();
  }
  // Tear down in a fixed order, letting each step land: the client, then the server.
  for (const side of ['client', 'server'] as const) {
    if (!gone[side]) ends[side].close();
    await until(() => peerOf(side).decided(), 200);
    await settle();
  }
  const outcome = async (side: SideName): Promise<Outcome> => {
    const bytes = Buffer.concat(ends[side].received);
    return {
      received: { length: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex').slice(0, 16) },
      fate: await ends[side].fate,
      writes: writes[side],
      foreign: foreign[side],
    };
  };
  return { client: await outcome('client'), server: await outcome('server'), strayBytes: ends.strayBytes() };
}

const side = fc.constantFrom<SideName>('client', 'server');
const memory = fc.constantFrom<Memory>('plain', 'buffer', 'shared', 'resizable', 'detached', 'transferred', 'shrunk');
// closeLoop ends both sides, so it is rare enough that about half the sequences go on without it.
const operation: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('write' as const), side, bytes: fc.uint8Array({ minLength: 1, maxLength: 32 * 1024 }), memory }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom('end' as const, 'close' as const, 'reset' as const), side }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('foreign' as const), side }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('closeLoop' as const) }) },
);

describe('differential fuzzing against node:net', () => {
  let netServer: net.Server;
  let netConnect: Connect;

  beforeAll(async () => {
    const waiting: ((socket: net.Socket) => void)[] = [];
    netServer = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => waiting.shift()!(socket));  // normalisation 1
    await new Promise<void>((resolve) => netServer.listen(0, '127.0.0.1', resolve));
    const { port } = netServer.address() as net.AddressInfo;
    netConnect = async () => {
      const serverSide = new Promise<net.Socket>((resolve) => waiting.push(resolve));
      const client = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true });
      await new Promise((resolve) => client.once('connect', resolve));
      const server = await serverSide;
      return {
        client: netEnd(client),
        server: netEnd(server),
        closeLoop: () => {
          client.destroy();
          server.destroy();
        },
        strayBytes: () => 0,
        dispose: async () => {},
      };
    };
  });

  afterAll(async () => {
    await new Promise((resolve) => netServer?.close(resolve));
  });

  it(`random operation sequences in any buffer memory, with foreign loops and the loop closed, deliver the same bytes, ends and errors on ${backends.join(', ')} as on node:net`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(operation, { minLength: 1, maxLength: 8 }), async (operations) => {
        const expected = await run(netConnect, operations);
        for (const backend of backends) {
          const actual = await run(twinloopConnect(backend), operations);
          expect({ backend, ...actual }).toEqual({ backend, ...expected });
        }
      }),
      { numRuns: Number(process.env.TWINLOOP_FUZZ_RUNS ?? 60) },
    );
  });
});
