/** Exclusive ownership by witness-quorum leases (docs/placement.md, "Witness leases"). Pure cores. */
export type { ClaimantOptions, LeaseStatus, LeaseWant, Outgoing } from './claimant-core.js';
export { LeaseClaimant } from './claimant-core.js';
export type { LeaseBoundInput } from './lease-bounds.js';
export { DEFAULT_MAX_STOP_TIMEOUT_MS, maxLeaseMs, WINDOW_STRETCH } from './lease-bounds.js';
export type { LeaseReply, LeaseRequest, RefusalReason } from './lease-messages.js';
export { MAX_LEASE_MS, REFUSAL_REASONS } from './lease-messages.js';
export type { WitnessConfig } from './witness-config.js';
export {
  changeProblem,
  checkWitnessConfig,
  DEFAULT_WITNESS_COUNT,
  MAX_WITNESSES,
  quorumSize,
  WitnessConfigError,
} from './witness-config.js';
export type { HandleResult, WitnessCoreOptions, WitnessRecord } from './witness-core.js';
export { holdMs, WitnessCore } from './witness-core.js';
