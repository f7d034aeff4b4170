// The loop's tables of live handles and operations (lib/slot-map.ts): arrays indexed by an id's
// slot bits, so that no hash table is replaced as entries come and go.
import { describe, expect, it } from 'vitest';

import { native } from '../lib/binding.js';
import { OperationTable, SlotMap } from '../lib/slot-map.js';

const slotBits = native.constants.handleSlotBits;

describe('SlotMap', () => {
  it('finds a value by its whole id: a stale id of the same slot finds nothing', () => {
    const map = new SlotMap<string>();
    const first = (1 << slotBits) | 7;
    const second = (2 << slotBits) | 7;
    map.set(first, 'first');
    expect(map.get(first)).toBe('first');
    map.delete(first);
    map.set(second, 'second');
    expect(map.get(first)).toBeUndefined();
    expect(map.has(second)).toBe(true);
    map.delete(first);  // stale: does not remove the slot's new value
    expect(map.get(second)).toBe('second');
    expect(map.size).toBe(1);
    expect(map.live()).toEqual(['second']);
  });
});

describe('OperationTable', () => {
  it('hands out ids that are never 0, unique while in flight, and reuses a freed slot with a new generation', () => {
    const table = new OperationTable<number>();
    const ids: number[] = [];
    for (let i = 0; i < 100; i++) {
      const id = table.nextId();
      expect(table.nextId()).toBe(id);  // a peek: the native call that needs the id comes first
      table.set(id, i);
      ids.push(id);
    }
    expect(new Set(ids).size).toBe(100);
    expect(ids.every((id) => id > 0)).toBe(true);
    table.delete(ids[42]!);
    const reused = table.nextId();
    expect(reused & ((1 << slotBits) - 1)).toBe(42);
    expect(reused).not.toBe(ids[42]);
    table.set(reused, -1);
    expect(table.get(ids[42]!)).toBeUndefined();
    expect(table.get(reused)).toBe(-1);
    expect(table.size).toBe(100);
  });

  it('does not grow while operations come and go: its arrays stay at the peak in flight', () => {
    const table = new OperationTable<object>();
    const inFlight: number[] = [];
    for (let i = 0; i < 100_000; i++) {
      const id = table.nextId();
      table.set(id, {});
      inFlight.push(id);
      if (inFlight.length > 50) table.delete(inFlight.shift()!);
    }
    expect(table.size).toBe(50);
    expect(table.live()).toHaveLength(50);
    // 51 slots ever used: every id in flight names one of them.
    expect(new Set(inFlight.map((id) => id & ((1 << slotBits) - 1))).size).toBe(50);
    expect(Math.max(...inFlight.map((id) => id & ((1 << slotBits) - 1)))).toBeLessThan(51);
  });

  it('runs out of ids only with 2^20 operations in flight (then nextId is 0: LoopCore refuses with ENOBUFS)', () => {
    const table = new OperationTable<number>();
    const slots = 1 << slotBits;
    for (let i = 0; i < slots; i++) table.set(table.nextId(), i);
    expect(table.nextId()).toBe(0);
    table.delete((1 << slotBits) | 5);
    expect(table.nextId() & (slots - 1)).toBe(5);
  });

  it('wraps a slot generation from 2047 to 1, never to 0', () => {
    const table = new OperationTable<number>();
    const generations = new Set<number>();
    for (let i = 0; i < 5000; i++) {
      const id = table.nextId();
      expect(id).toBeGreaterThan(0);
      generations.add(id >>> slotBits);
      table.set(id, i);
      table.delete(id);
    }
    expect(generations.size).toBe((1 << (31 - slotBits)) - 1);
    expect(generations.has(0)).toBe(false);
  });
});
