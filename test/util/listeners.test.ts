import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Listeners } from '../../src/util/listeners.js';

describe('Listeners', () => {
  test('calls every listener in order; one that throws is reported and the rest still run', () => {
    const errors: unknown[] = [];
    const listeners = new Listeners<[number, string]>((err) => errors.push(err));
    const calls: string[] = [];
    listeners.add((n, s) => calls.push(`a${n}${s}`));
    listeners.add(() => {
      throw new Error('faulty');
    });
    const off = listeners.add((n) => calls.push(`c${n}`));
    listeners.emit(1, 'x');
    assert.deepEqual(calls, ['a1x', 'c1']);
    assert.equal((errors[0] as Error).message, 'faulty');
    off();
    listeners.emit(2, 'y');
    assert.deepEqual(calls, ['a1x', 'c1', 'a2y']);
    assert.equal(errors.length, 2);
  });
});
