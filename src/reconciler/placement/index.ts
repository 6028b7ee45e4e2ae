/** Pure placement, ownership and move logic (docs/placement.md). */
export { collectClaims, deriveHolders, holdRank, pickHolder, sortClaims } from './holders.js';
export type { LocalAction, LocalView, Restore, ViewEvaluation } from './local-actions.js';
export { decideLocalActions, evaluateView } from './local-actions.js';
export type { MovePlan, PlannedMove } from './moves.js';
export { planMoves } from './moves.js';
export { matchesConstraints, place } from './placement.js';
export type {
  LeaseEvidence,
  LeaseState,
  OwnershipTiming,
  PeerAck,
  TakeoverDecision,
  TakeoverInput,
} from './quorum.js';
export {
  checkTiming,
  DEFAULT_OWNERSHIP_TIMING,
  FenceTracker,
  hasQuorum,
  isAttestedDead,
  leaseEvidence,
  majority,
  mayTakeOver,
  takeoverExtraWaitMs,
} from './quorum.js';
export { rankNodes, rendezvousScore } from './rendezvous.js';
export type * from './types.js';
export { livenessOf, ownershipClass } from './types.js';
