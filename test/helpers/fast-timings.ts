/**
 * The small timings tests run agents with, defined once (issue 17): the
 * same ratios as the defaults (several heartbeats per suspicion,
 * fence_after < dead_after; docs/placement.md), scaled down so that a
 * failover takes seconds.
 */

/** Gossip and failure-detector timings of agents on loopback (real libp2p). */
export const FAST_GOSSIP = {
  heartbeatMs: 200,
  suspectAfterMs: 600,
  deadAfterMs: 1500,
  syncGraceMs: 600,
  syncIntervalMs: 2000,
  redialIntervalMs: 200,
  redialBackoffMaxMs: 1000,
  meshCheckIntervalMs: 300,
} as const;

/** Ownership timings that go with FAST_GOSSIP: a fence well inside dead_after. */
export const FAST_OWNERSHIP = {
  fenceAfterMs: 1000,
  claimSettleMs: 300,
  fenceSlackMs: 300,
  clockDriftPpm: 1000,
} as const;

/** The simulator's timings (SimTiming) for tests: FAST_GOSSIP's detector and a quick reconcile loop. */
export const FAST_SIM_TIMING = {
  heartbeatMs: FAST_GOSSIP.heartbeatMs,
  suspectAfterMs: FAST_GOSSIP.suspectAfterMs,
  deadAfterMs: FAST_GOSSIP.deadAfterMs,
  syncGraceMs: 400,
  gossipHeartbeatMs: 300,
  fenceAfterMs: FAST_OWNERSHIP.fenceAfterMs,
  claimSettleMs: 200,
  fenceSlackMs: 200,
  tickMs: 150,
  checkpointIntervalMs: 500,
  handoffMs: 300,
} as const;
