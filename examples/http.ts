import http from 'node:http';
import type { AddressInfo } from 'node:net';

import { open, serve } from 'twinloop';

const loop = open({ backend: 'auto' });   // or 'epoll', 'io_uring', 'kqueue', 'iocp'
const server = http.createServer((_req, res) => res.end(`hello from ${loop.info.backend}\n`));

// Instead of server.listen(): twinloop accepts, node:http does the rest.
await serve(loop, server, { host: '127.0.0.1', port: 0 });
const { port } = server.address() as AddressInfo;

const response = await fetch(`http://127.0.0.1:${port}/`);
console.log(await response.text());   // 'hello from io_uring'

// As on node:net: stops accepting, closes idle keep-alive connections, calls back when done.
server.close(() => void loop.close());
