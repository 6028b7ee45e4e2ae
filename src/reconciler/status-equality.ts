import { isDeepStrictEqual } from 'node:util';
import type { ObservedStatus } from '../state/schemas.js';

/**
 * Whether writing `b` over `a` in the observed document would change
 * nothing. Compares every field, so a field added to ObservedStatus is
 * compared too (a hand-written list silently ignored new ones); `epoch` is
 * optional in the schema, and absent means the same as null.
 */
export function sameObservedStatus(a: ObservedStatus, b: ObservedStatus): boolean {
  return isDeepStrictEqual(normalized(a), normalized(b));
}

function normalized(status: ObservedStatus): ObservedStatus {
  return { ...status, epoch: status.epoch ?? null };
}
