import type { MemberState } from './swim-messages.js';

/**
 * A member's state as one byte in a core's typed-array view (member-table.ts),
 * and SWIM's rule for which of two claims about a member wins (§4.2).
 */

export const ALIVE = 0;
export const SUSPECT = 1;
export const DEAD = 2;
/** Not (or no longer) a member: never probed, updates about it ignored. */
export const NONE = 3;

/** State codes to names (NONE has none: it is never disseminated). */
export const NAMES: readonly MemberState[] = ['alive', 'suspect', 'dead'];
export const RANK: Readonly<Record<MemberState, number>> = { alive: ALIVE, suspect: SUSPECT, dead: DEAD };

/**
 * An update overrides what a node believes when it is about a later
 * incarnation, or about the same one and graver (alive < suspect < dead):
 * only the member itself raises its incarnation, so a newer one is always
 * its own word, and within one incarnation bad news wins.
 */
export function supersedes(
  rank: number,
  incarnation: number,
  currentRank: number,
  currentIncarnation: number,
): boolean {
  return incarnation > currentIncarnation || (incarnation === currentIncarnation && rank > currentRank);
}
