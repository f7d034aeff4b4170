// The numbers lib/ and the addon share come from the addon (native/binding/addon.cc), not from a
// copy kept in step by hand: these tests pin what the TypeScript side relies on.
import { describe, expect, it } from 'vitest';

import { EventKind, FileFlag, InterestBits, native, SocketOption } from '../lib/binding.js';
import { availableBackends, open } from '../lib/index.js';

describe('constants shared with the addon', () => {
  it('lib/ reads event kinds, interest bits, socket options and file flags from the addon', () => {
    const { constants } = native;
    expect(EventKind).toBe(constants.eventKinds);
    expect(InterestBits).toBe(constants.interest);
    expect(SocketOption).toBe(constants.socketOptions);
    expect(FileFlag).toBe(constants.fileFlags);
    // Every name the TypeScript types promise is there, as a distinct number.
    expect(Object.keys(EventKind).sort()).toEqual(['accepted', 'completed', 'data', 'readable', 'writable']);
    expect(new Set(Object.values(EventKind)).size).toBe(5);
    expect(Object.keys(InterestBits).sort()).toEqual(['readable', 'writable']);
    expect(InterestBits.readable & InterestBits.writable).toBe(0);
    expect(Object.keys(SocketOption).sort()).toEqual(['keepAlive', 'keepAliveIdle', 'noDelay']);
    const flags = Object.values(FileFlag);
    expect(flags).toHaveLength(7);
    expect(flags.reduce((all, bit) => all | bit, 0)).toBe(flags.reduce((sum, bit) => sum + bit, 0));  // one bit each
  });

  it('the handle id\'s slot bits, which lib/slot-map.ts indexes by, leave room for a generation', () => {
    const bits = native.constants.handleSlotBits;
    expect(Number.isInteger(bits)).toBe(true);
    // Enough slots for the fd limits a loop meets, and at least 8 bits of generation in an int32.
    expect(bits).toBeGreaterThanOrEqual(16);
    expect(bits).toBeLessThanOrEqual(23);
  });

  it('every backend compiled into the addon is accepted by open(), and an unknown one is refused naming the option', () => {
    for (const backend of native.constants.backends) {
      try {
        open({ backend: backend as never }).close();
      } catch (error) {
        // Compiled in but unable to run here (io_uring under seccomp): a system error, not a TypeError.
        expect(error).not.toBeInstanceOf(TypeError);
      }
    }
    expect(availableBackends().every((name) => native.constants.backends.includes(name))).toBe(true);
    expect(() => open({ backend: 'select' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('"options.backend"') }));
  });
});
