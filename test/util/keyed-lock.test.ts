import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KeyedLock } from '../../src/util/keyed-lock.js';

/** A promise with its resolve and reject, to hold a task open until the test lets it end. */
function gate<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('KeyedLock', () => {
  test('tasks of one key run one at a time, in call order', async () => {
    const lock = new KeyedLock();
    const events: string[] = [];
    const first = gate();
    const a = lock.run('svc', async () => {
      events.push('a start');
      await first.promise;
      events.push('a end');
      return 'a';
    });
    const b = lock.run('svc', async () => {
      events.push('b start');
      return 'b';
    });
    // b has not started while a is open, however long the loop turns.
    for (let i = 0; i < 20; i++) await Promise.resolve();
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(events, ['a start']);
    first.resolve();
    assert.equal(await a, 'a');
    assert.equal(await b, 'b');
    assert.deepEqual(events, ['a start', 'a end', 'b start']);
  });

  test('a rejected task rejects its own caller and does not stall the next', async () => {
    const lock = new KeyedLock();
    const failing = lock.run('svc', async () => {
      throw new Error('start failed');
    });
    const next = lock.run('svc', async () => 'stopped');
    await assert.rejects(failing, /start failed/);
    assert.equal(await next, 'stopped');
  });

  test('different keys do not wait for each other', async () => {
    const lock = new KeyedLock();
    const held = gate();
    const slow = lock.run('a', () => held.promise);
    assert.equal(await lock.run('b', async () => 'b ran'), 'b ran', 'b ran while a was held');
    held.resolve();
    await slow;
  });

  test('a task queued behind a long chain still runs after every earlier one', async () => {
    const lock = new KeyedLock();
    const order: number[] = [];
    const runs = Array.from({ length: 50 }, (_, i) =>
      lock.run('svc', async () => {
        if (i % 7 === 0) throw new Error(`task ${i}`);
        order.push(i);
      }),
    );
    await Promise.allSettled(runs);
    assert.deepEqual(
      order,
      Array.from({ length: 50 }, (_, i) => i).filter((i) => i % 7 !== 0),
    );
  });
});
