import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Lifecycle, type LifecyclePart } from '../../src/util/lifecycle.js';

/** Parts that record what happens to them; `failStart`/`failStop` name the ones that throw. */
function parts(names: string[], fail: { start?: string[]; stop?: string[]; optional?: string[] } = {}) {
  const log: string[] = [];
  const list: LifecyclePart[] = names.map((name) => ({
    name,
    optional: fail.optional?.includes(name) ?? false,
    part: {
      // One synchronous part, the others asynchronous: both kinds are awaited in order.
      start:
        name === 'a'
          ? () => {
              if (fail.start?.includes(name)) throw new Error(`${name} cannot start`);
              log.push(`start ${name}`);
            }
          : async () => {
              await new Promise((resolve) => setImmediate(resolve));
              if (fail.start?.includes(name)) throw new Error(`${name} cannot start`);
              log.push(`start ${name}`);
            },
      stop: async () => {
        log.push(`stop ${name}`);
        if (fail.stop?.includes(name)) throw new Error(`${name} cannot stop`);
      },
    },
  }));
  const errors: string[] = [];
  const lifecycle = new Lifecycle(list, (name, phase, err) =>
    errors.push(`${phase} ${name}: ${(err as Error).message}`),
  );
  return { lifecycle, log, errors };
}

describe('Lifecycle (start in order, stop in reverse, roll back a failed start)', () => {
  test('starts in order and stops in reverse; a second start or stop does nothing', async () => {
    const h = parts(['a', 'b', 'c']);
    await h.lifecycle.start();
    await h.lifecycle.start();
    assert.equal(h.lifecycle.running, true);
    await h.lifecycle.stop();
    await h.lifecycle.stop();
    assert.equal(h.lifecycle.running, false);
    assert.deepEqual(h.log, ['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a']);
  });

  test('a part that fails to start stops the ones already started, in reverse, and the error surfaces', async () => {
    const h = parts(['a', 'b', 'c', 'd'], { start: ['c'] });
    await assert.rejects(h.lifecycle.start(), /c cannot start/);
    assert.deepEqual(h.log, ['start a', 'start b', 'stop b', 'stop a']);
    assert.equal(h.lifecycle.running, false);
  });

  test('an optional part that fails to start is reported and skipped; it is not stopped', async () => {
    const h = parts(['a', 'b', 'c'], { start: ['b'], optional: ['b'] });
    await h.lifecycle.start();
    await h.lifecycle.stop();
    assert.deepEqual(h.log, ['start a', 'start c', 'stop c', 'stop a']);
    assert.deepEqual(h.errors, ['start b: b cannot start']);
  });

  test('a part that fails to stop is reported and the others still stop', async () => {
    const h = parts(['a', 'b', 'c'], { stop: ['b'] });
    await h.lifecycle.start();
    await h.lifecycle.stop();
    assert.deepEqual(h.log.slice(3), ['stop c', 'stop b', 'stop a']);
    assert.deepEqual(h.errors, ['stop b: b cannot stop']);
  });
});
