import { MAX_LEASE_MS } from './lease-messages.js';

/**
 * The longest lease a node asks for, and so the bound its witness grants up
 * to (docs/placement.md, rule W6). A lease is the run window plus the stop
 * budget (rule O2); the run window stretches on slow links up to
 * WINDOW_STRETCH × fence_after (LeaseManager.windowFor), and the stop budget
 * is the workload's stop_timeout plus fence_slack, with stop_timeout capped
 * by services.max_stop_timeout. The bound is also the witness's quiet
 * period after a restart, so it is what a witness restart costs.
 */
export const WINDOW_STRETCH = 4;

/** services.max_stop_timeout's default: long enough for most databases' clean shutdown. */
export const DEFAULT_MAX_STOP_TIMEOUT_MS = 30_000;

export interface LeaseBoundInput {
  fenceAfterMs: number;
  fenceSlackMs: number;
  maxStopTimeoutMs: number;
}

/** The longest lease (claimant's clock, ms), at most MAX_LEASE_MS. */
export function maxLeaseMs(input: LeaseBoundInput): number {
  for (const [key, value] of Object.entries(input)) {
    if (!(Number.isFinite(value) && value >= 0))
      throw new RangeError(`${key} must be a finite number of ms >= 0, got ${value}`);
  }
  const bound = WINDOW_STRETCH * input.fenceAfterMs + input.maxStopTimeoutMs + input.fenceSlackMs;
  return Math.min(MAX_LEASE_MS, Math.ceil(bound));
}
