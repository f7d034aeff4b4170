// Node's own `net` echo server, the benchmark's reference. noDelay as twinloop's sockets have it.
//
//   tsx bench/servers/net-server.ts [--host 127.0.0.1]
import net from 'node:net';
import { parseArgs } from 'node:util';

import { serveControl } from './control.js';

const { values } = parseArgs({ options: { host: { type: 'string', default: '127.0.0.1' } } });

let connections = 0;
const server = net.createServer({ noDelay: true }, (socket) => {
  connections += 1;
  socket.on('close', () => (connections -= 1));
  socket.on('error', () => {});
  socket.pipe(socket);
});
server.listen(0, values.host, () => {
  const address = server.address() as net.AddressInfo;
  serveControl({ port: address.port, info: { server: 'node net', node: process.version } }, () => ({ connections }));
});
