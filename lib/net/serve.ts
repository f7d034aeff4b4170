// serve(): a node:net server (node:http, https, http2, tls, a framework's server) fed its
// connections by a twinloop listener, and closed, addressed and counted as if it listened itself.
import net from 'node:net';

import type { Loop, ListenOptions } from '../loop.js';
import { codedError, invalidArgType, validateObject } from '../errors.js';
import type { Server } from './server.js';
import type { Socket } from './socket.js';

/** Options of `serve()`: where to listen, as `loop.listen`, and the sockets' own options. */
export type ServeOptions = ListenOptions;

// The members of net.Server that its own listen() sets and its close(), address(), ref(),
// getConnections() and 'close' event read. Stable from Node 18 to 24; serve() plays listen().
interface NetServerInternals {
  _handle: ListeningHandle | null;
  _connectionKey?: string;
  _pipeName?: string;
  _connections: number;
  _unref?: boolean;
  _emitCloseIfDrained(): void;
  allowHalfOpen?: boolean;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
}

// What net.Server expects of its `_handle`: close() stops listening; address() asks getsockname.
interface ListeningHandle {
  close(): void;
  ref(): void;
  unref(): void;
  getsockname?(out: Record<string, unknown>): number;
}

/**
 * Serves an existing node:net server — an `http.Server`, `https.Server`,
 * `http2.createServer()` / `http2.createSecureServer()`, a `tls.Server`, or a framework's
 * underlying server (fastify's `app.server` after `await app.ready()`, express's
 * `http.createServer(app)`) — from a twinloop listener, on any backend. Call it instead of
 * `server.listen()`: each accepted connection reaches the server as a `socket.stream()` through
 * its `'connection'` event, and the server then behaves as if it listened itself:
 * `'listening'` is emitted, `server.address()` and `server.listening` answer, `maxConnections`
 * is honoured, and `server.close(callback)` stops accepting, lets in-flight requests finish
 * (node:http closes idle keep-alive connections), and calls back once the last connection has
 * closed. Closing the returned listener, or the loop, closes the node server the same way.
 *
 * Resolves to the twinloop `Server` it listens on. Rejects as `loop.listen` does, and with
 * `ERR_SERVER_ALREADY_LISTEN` if `server` already listens.
 *
 * @example
 * const loop = open();
 * const server = http.createServer((req, res) => res.end('hello'));
 * const listener = await serve(loop, server, { host: '127.0.0.1', port: 8080 });
 * // ... later: stops accepting, waits for the requests in flight, then calls back
 * server.close(() => console.log('closed'));
 */
export async function serve(loop: Loop, server: net.Server, options: ServeOptions): Promise<Server> {
  if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server (http.Server, https.Server, tls.Server, an http2 server)', server);
  validateObject('options', options as unknown);
  const internals = server as unknown as NetServerInternals;
  if (internals._handle) throw codedError('ERR_SERVER_ALREADY_LISTEN', 'Listen method has been called more than once without closing.');
  const streamOptions = { allowHalfOpen: internals.allowHalfOpen === true };
  const listener = await loop.listen(options, (socket) => {
    if (server.maxConnections && internals._connections >= server.maxConnections) {
      // As node:net: closed before the server sees it, and reported with its addresses.
      if (server.listenerCount('drop') > 0) server.emit('drop', dropped(socket));
      socket.close();
      return;
    }
    const stream = socket.stream(streamOptions);
    // As node:net's onconnection: the server counts its connections, and emits 'close' only
    // when it has stopped listening and the last one has closed.
    internals._connections += 1;
    stream.once('close', () => {
      internals._connections -= 1;
      internals._emitCloseIfDrained();
    });
    if (internals.noDelay) stream.setNoDelay(true);
    if (internals.keepAlive) stream.setKeepAlive(true, (internals.keepAliveInitialDelay ?? 0) * 1000);
    server.emit('connection', stream);
  });
  if (internals._handle) {
    // listen() or another serve() won the race while this one awaited its address.
    listener.close();
    throw codedError('ERR_SERVER_ALREADY_LISTEN', 'Listen method has been called more than once without closing.');
  }
  const address = listener.address();
  let closing = false;
  const handle: ListeningHandle = {
    close() {
      closing = true;
      listener.close();
      // Node 18's http.Server.close() leaves idle keep-alive connections open; 19+ closes them first.
      (server as Partial<{ closeIdleConnections(): void }>).closeIdleConnections?.();
    },
    ref: () => listener.ref(),
    unref: () => listener.unref(),
  };
  if (address.family === 'unix') internals._pipeName = address.address;
  else {
    handle.getsockname = (out) => {
      Object.assign(out, { address: address.address, family: address.family, port: address.port });
      return 0;
    };
  }
  internals._handle = handle;
  internals._connectionKey = address.family === 'unix' ? `-1:${address.address}:-1` : `${address.family === 'IPv6' ? 6 : 4}:${address.address}:${address.port}`;
  if (internals._unref) handle.unref();
  // Closed from the twinloop side (listener.close(), loop.close()): the node server closes too.
  listener.once('close', () => {
    if (!closing && internals._handle === handle) server.close();
  });
  // Accept failures (EMFILE) pause accepting and retry by themselves: reported to the node server
  // when it listens for errors, rather than crashing a process that never asked.
  listener.on('error', (error: Error) => {
    if (server.listenerCount('error') > 0) server.emit('error', error);
  });
  server.emit('listening');
  return listener;
}

// What node:net's 'drop' event reports of a connection refused by maxConnections.
function dropped(socket: Socket): net.DropArgument {
  const local = socket.address();
  const remote = socket.peerAddress();
  return {
    localAddress: local.address,
    localPort: local.port,
    localFamily: local.family,
    remoteAddress: remote?.address ?? '',
    remotePort: remote?.port ?? 0,
    remoteFamily: remote?.family ?? '',
  };
}
