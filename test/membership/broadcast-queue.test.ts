import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { BroadcastQueue } from '../../src/membership/broadcast-queue.js';

/** The obvious version: a map member → sends, sorted by sends (then by when queued) for every take. */
class NaiveQueue {
  private readonly entries = new Map<number, { sent: number; at: number }>();
  private clock = 0;

  get size(): number {
    return this.entries.size;
  }

  queue(member: number): void {
    this.entries.delete(member);
    this.entries.set(member, { sent: 0, at: this.clock++ });
  }

  delete(member: number): void {
    this.entries.delete(member);
  }

  take(count: number, limit: number, skip: (member: number) => boolean): number[] {
    const order = [...this.entries]
      .filter(([member]) => !skip(member))
      .sort((a, b) => a[1].sent - b[1].sent || a[1].at - b[1].at)
      .slice(0, count);
    for (const [member, entry] of order) {
      entry.sent++;
      entry.at = this.clock++;
      if (entry.sent >= limit) this.entries.delete(member);
    }
    return order.map(([member]) => member);
  }
}

type Op = { k: 'queue'; m: number } | { k: 'delete'; m: number } | { k: 'take'; count: number; skip: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant('queue' as const), m: fc.nat(40) }),
  fc.record({ k: fc.constant('delete' as const), m: fc.nat(40) }),
  fc.record({
    k: fc.constant('take' as const),
    count: fc.integer({ min: 0, max: 10 }),
    skip: fc.integer({ min: -1, max: 40 }),
  }),
);

describe('BroadcastQueue', () => {
  test('takes what the sort-everything version takes, in the same order, whatever the operations', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 1, max: 6 }), (ops, limit) => {
        const fast = new BroadcastQueue();
        const naive = new NaiveQueue();
        for (const o of ops) {
          if (o.k === 'queue') {
            fast.queue(o.m);
            naive.queue(o.m);
          } else if (o.k === 'delete') {
            fast.delete(o.m);
            naive.delete(o.m);
          } else {
            const skip = (m: number) => m === o.skip;
            assert.deepEqual(fast.take(o.count, limit, skip), naive.take(o.count, limit, skip));
          }
          assert.equal(fast.size, naive.size);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('an entry leaves after `limit` sends; requeueing starts its count again', () => {
    const q = new BroadcastQueue();
    q.queue(1);
    assert.deepEqual(q.take(8, 2), [1]);
    q.queue(1); // a newer state of the same member
    assert.deepEqual(q.take(8, 2), [1]);
    assert.deepEqual(q.take(8, 2), [1]);
    assert.deepEqual(q.take(8, 2), []);
    assert.equal(q.size, 0);
  });
});
