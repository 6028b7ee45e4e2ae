import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sameObservedStatus } from '../../src/reconciler/status-equality.js';
import { type ObservedStatus, ObservedStatusSchema } from '../../src/state/schemas.js';

const full: ObservedStatus = {
  phase: 'running',
  since: 10,
  revision: 3,
  restarts: 1,
  lastExit: { code: 1, signal: null, at: 5 },
  reason: 'because',
  sandbox: 'bubblewrap',
  scratchUsedMb: 2,
  snapshot: { digest: `sha256:${'a'.repeat(64)}`, size: 7, at: 9 },
  epoch: 4,
};

/** A value of the same kind as `value` that differs from it. */
function changed(value: unknown): unknown {
  if (typeof value === 'number') return value + 1;
  if (typeof value === 'string')
    return value === 'running' ? 'stopping' : value === 'bubblewrap' ? 'none' : `${value}!`;
  if (value === null) return 0;
  return null;
}

describe('sameObservedStatus', () => {
  test('the sample covers every field of the schema', () => {
    assert.deepEqual(Object.keys(full).sort(), Object.keys(ObservedStatusSchema.shape).sort());
  });

  test('a change of any field, nested ones included, is a change', () => {
    assert.ok(sameObservedStatus(full, structuredClone(full)));
    for (const key of Object.keys(full) as (keyof ObservedStatus)[]) {
      const other = { ...full, [key]: changed(full[key]) } as ObservedStatus;
      assert.ok(!sameObservedStatus(full, other), `a different ${key} went unnoticed`);
      const value = full[key];
      if (value !== null && typeof value === 'object') {
        for (const inner of Object.keys(value)) {
          const nested = {
            ...full,
            [key]: { ...value, [inner]: changed((value as Record<string, unknown>)[inner]) },
          };
          assert.ok(
            !sameObservedStatus(full, nested as ObservedStatus),
            `a different ${key}.${inner} went unnoticed`,
          );
        }
      }
    }
  });

  test('an absent epoch (older agents) equals null; key order does not matter', () => {
    const { epoch: _epoch, ...withoutEpoch } = { ...full, epoch: null };
    assert.ok(sameObservedStatus({ ...full, epoch: null }, withoutEpoch as ObservedStatus));
    const reversed = Object.fromEntries(Object.entries(full).reverse()) as ObservedStatus;
    assert.ok(sameObservedStatus(full, reversed));
  });
});
