// A loop with nothing else to do answers a request at once: the kernel's notice of a completion
// wakes Node's loop when it arrives, not at some later tick. This is a liveness bound, not a
// benchmark: a round trip takes ~0.1 ms here, and the bound is 50 times that.
import net from 'node:net';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { open, type Loop } from '../lib/index.js';
import { backends, listenEcho } from './helpers.js';

describe.each(backends)('waking on %s', (backend) => {
  let loop: Loop;
  beforeEach(() => {
    loop = open({ backend });
  });
  afterEach(async () => {
    await loop.close();
  });

  it('echoes each of 20 lone one-byte requests within milliseconds, not at the next tick', async () => {
    // On io_uring with DEFER_TASKRUN the eventfd signal for a network completion was deferred to
    // an RCU callback: every one of these round trips took 14-16 ms (Linux 6.18).
    const server = await listenEcho(loop);
    const client = net.connect(server.port, '127.0.0.1').setNoDelay(true);
    await new Promise((resolve) => client.once('connect', resolve));
    const roundTrips: number[] = [];
    for (let i = 0; i < 20; i++) {
      const start = performance.now();
      client.write('x');
      await new Promise((resolve) => client.once('data', resolve));
      roundTrips.push(performance.now() - start);
    }
    client.destroy();
    roundTrips.sort((a, b) => a - b);
    expect(roundTrips[10]).toBeLessThan(5);
  });
});
