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
import { createHash } from 'node:crypto';
import net from 'node:net';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { open, type Loop, type Server, type Socket } from '../lib/index.js';
import { backends } from './helpers.js';

type SideName = 'client' | 'server';
type Operation =
  | { kind: 'write'; side: SideName; bytes: Uint8Array }
  | { kind: 'end' | 'close' | 'reset'; side: SideName };

/** One end of a connection as the harness drives it. */
interface End {
  write(bytes: Uint8Array): Promise<string>;  // 'ok' or the error code
  end(): void;
  close(): void;
  reset(): void;
  /** How the stream ended: 'eof', 'closed' (by this end itself), or an error code. */
  readonly fate: Promise<string>;
  decided(): boolean;
  readonly received: Buffer[];
}

interface Outcome {
  received: { length: number; sha256: string };
  fate: string;
  writes: string[];
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

function twinloopEnd(socket: Socket): End {
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
    write: (bytes) =>
      socket.write(bytes).then(
        () => 'ok',
        (error: { code: string }) => {
          if (error.code !== 'ERR_SOCKET_CLOSED') fail(error.code);
          return error.code;
        },
      ),
    end: () => void socket.end().catch(() => {}),
    close: () => socket.close(),
    reset: () => socket.resetAndDestroy(),
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
    write: (bytes) =>
      new Promise((resolve) => {
        socket.write(bytes, (error) => {
          const code = (error as NodeJS.ErrnoException | null | undefined)?.code;
          if (code === undefined) resolve('ok');
          else if (code === 'ERR_STREAM_DESTROYED') resolve('ERR_SOCKET_CLOSED');  // normalisation 3
          else resolve(code);
        });
      }),
    end: () => void socket.end(),
    close: () => void socket.destroy(),
    reset: () => void socket.resetAndDestroy(),
  };
}

type Connect = () => Promise<{ client: End; server: End }>;

async function run(connect: Connect, operations: Operation[]): Promise<Record<SideName, Outcome>> {
  const ends = await connect();
  const writes: Record<SideName, string[]> = { client: [], server: [] };
  const sent: Record<SideName, number> = { client: 0, server: 0 };
  const gone: Record<SideName, boolean> = { client: false, server: false };
  const ended: Record<SideName, boolean> = { client: false, server: false };
  const peerOf = (name: SideName): End => ends[name === 'client' ? 'server' : 'client'];
  for (const operation of operations) {
    const end = ends[operation.side];
    const peer = peerOf(operation.side);
    switch (operation.kind) {
      case 'write': {
        let result = await end.write(operation.bytes);
        if (ended[operation.side] && result === 'ERR_SOCKET_CLOSED') result = 'ERR_STREAM_WRITE_AFTER_END';  // normalisation 5
        writes[operation.side].push(result);
        if (result === 'ok') sent[operation.side] += operation.bytes.length;
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
    };
  };
  return { client: await outcome('client'), server: await outcome('server') };
}

const side = fc.constantFrom<SideName>('client', 'server');
const operation: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), side, bytes: fc.uint8Array({ minLength: 1, maxLength: 32 * 1024 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('end' as const, 'close' as const, 'reset' as const), side }) },
);

describe('differential fuzzing against node:net', () => {
  const loops: Loop[] = [];
  const connectors = new Map<string, Connect>();
  let netServer: net.Server;

  beforeAll(async () => {
    for (const backend of backends) {
      const loop = open({ backend });
      loops.push(loop);
      const accepted: Socket[] = [];
      const waiting: ((socket: Socket) => void)[] = [];
      const server: Server = await loop.listen({ host: '127.0.0.1', port: 0 }, (socket) => {
        const waiter = waiting.shift();
        if (waiter) waiter(socket);
        else accepted.push(socket);
      });
      connectors.set(backend, async () => {
        const serverSide = accepted.length > 0 ? Promise.resolve(accepted.shift()!) : new Promise<Socket>((resolve) => waiting.push(resolve));
        const client = await loop.connect({ host: '127.0.0.1', port: server.port });
        return { client: twinloopEnd(client), server: twinloopEnd(await serverSide) };
      });
    }
    const waiting: ((socket: net.Socket) => void)[] = [];
    netServer = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => waiting.shift()!(socket));  // normalisation 1
    await new Promise<void>((resolve) => netServer.listen(0, '127.0.0.1', resolve));
    const { port } = netServer.address() as net.AddressInfo;
    connectors.set('net', async () => {
      const serverSide = new Promise<net.Socket>((resolve) => waiting.push(resolve));
      const client = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true });
      await new Promise((resolve) => client.once('connect', resolve));
      return { client: netEnd(client), server: netEnd(await serverSide) };
    });
  });

  afterAll(async () => {
    for (const loop of loops) await loop.close();
    await new Promise((resolve) => netServer?.close(resolve));
  });

  it(`random operation sequences deliver the same bytes, ends and errors on ${backends.join(', ')} as on node:net`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(operation, { minLength: 1, maxLength: 8 }), async (operations) => {
        const expected = await run(connectors.get('net')!, operations);
        for (const backend of backends) {
          const actual = await run(connectors.get(backend)!, operations);
          expect({ backend, ...actual }).toEqual({ backend, ...expected });
        }
      }),
      { numRuns: Number(process.env.TWINLOOP_FUZZ_RUNS ?? 60) },
    );
  });
});
