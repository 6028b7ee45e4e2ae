import type { LeaseKind } from '../reconciler/lease.js';

/** How many heartbeats a warm-up sends at gossip.heartbeat (LivenessOptions.warmup). */
export const HEARTBEAT_WARMUP_BEATS = 10;

/** membership.heartbeat_interval's default (src/config/schema.ts). */
export const DEFAULT_SWIM_HEARTBEAT_INTERVAL_MS = 10_000;

/**
 * Under SWIM liveness at most this many heartbeats from all members
 * together reach a node per heartbeat_interval: a larger cluster spreads
 * each node's heartbeats further apart, so that what a node receives does
 * not grow with the cluster (docs/membership.md, "Heartbeats under SWIM").
 */
export const SWIM_HEARTBEATS_PER_INTERVAL = 10;

export interface HeartbeatSchedule {
  heartbeatMs: number;
  heartbeatWarmup: { count: number; intervalMs: number };
  heartbeatsPerInterval?: number;
  heartbeatAcks: boolean;
}

/**
 * How heartbeats go out for a liveness source, in GossipLayerOptions' terms
 * (the real agent and the simulator's agents both take it from here).
 *
 * acked-heartbeats: every `heartbeatMs`, with acks (the lease reads them).
 * swim: SWIM detects failures, vouches for live members and carries digests
 * on its probes; heartbeats only introduce a node and its addresses, every
 * `swimIntervalMs` spread by the cluster's size, after a warm-up of ten at
 * `heartbeatMs` so that every node learns every address at once.
 * local-detector: every `heartbeatMs`, without acks.
 */
export function heartbeatSchedule(
  lease: LeaseKind,
  timing: { heartbeatMs: number; swimIntervalMs?: number },
): HeartbeatSchedule {
  const warmup = { count: HEARTBEAT_WARMUP_BEATS, intervalMs: timing.heartbeatMs };
  if (lease !== 'swim')
    return {
      heartbeatMs: timing.heartbeatMs,
      heartbeatWarmup: warmup,
      heartbeatAcks: lease === 'acked-heartbeats',
    };
  return {
    heartbeatMs: timing.swimIntervalMs ?? DEFAULT_SWIM_HEARTBEAT_INTERVAL_MS,
    heartbeatWarmup: warmup,
    heartbeatsPerInterval: SWIM_HEARTBEATS_PER_INTERVAL,
    heartbeatAcks: false,
  };
}
