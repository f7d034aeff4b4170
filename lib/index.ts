/**
 * twinloop: the reactor (epoll, kqueue) and the proactor (io_uring, IOCP) behind one interface.
 *
 * @example
 * import { open } from 'twinloop';
 * const loop = open({ backend: 'auto' });
 * const server = await loop.listen({ host: '127.0.0.1', port: 0 }, async (socket) => {
 *   for await (const chunk of socket) await socket.write(chunk);
 * });
 */
export { open, availableBackends, Loop } from './loop.js';
export type { BackendName, PatternName, OpenOptions, LoopInfo, LoopStats, ListenOptions, ConnectOptions, SleepOptions } from './loop.js';
export { Socket, type SocketOptions, type SocketOperationOptions } from './net/socket.js';
export { SocketStream, type SocketStreamOptions } from './net/duplex.js';
export { Server, type ConnectionHandler } from './net/server.js';
export { serveOnWorkers, listenInWorker, WorkerGroup, type ServeOnWorkersOptions, type WorkerListenOptions, type WorkerServer, type WorkerError } from './net/multicore.js';
export type { Endpoint } from './net/address.js';
export { ReactorApi, type Readiness } from './patterns/reactor.js';
export { ProactorApi, type Completion, type ProactorOptions, type TornWriteError } from './patterns/proactor.js';
export { File, allocAligned, type OpenFileOptions, type OpenFlags, type FileOperationOptions } from './file.js';
export type { SystemError } from './errors.js';
export { bindingPath } from './binding.js';
export { serve, type ServeOptions } from './net/serve.js';
