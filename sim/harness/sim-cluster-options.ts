import type { Logger } from 'pino';
import type { MeshDegree } from '../../src/gossip/index.js';
import type { SwimParams } from '../../src/membership/swim-core.js';
import type { Capacity } from '../../src/state/schemas.js';
import type { Seed } from '../net/prng.js';
import type { SimRunnerTiming } from './sim-runner.js';

/** What a SimCluster is built from (sim-cluster.ts): agent timings, network defaults, options, and the records it keeps. */

export const SIM_ORG = 'sim';
/** The Y.Map (in the workloads document) the harness writes its test writes to; no view reads it. */
export const WRITES_MAP = 'sim-writes';

/** Agent timings: gossip, failure detector, ownership and reconcile loop. All in ms. */
export interface SimTiming {
  heartbeatMs: number;
  suspectAfterMs: number;
  deadAfterMs: number;
  syncGraceMs: number;
  syncIntervalMs: number;
  syncTimeoutMs: number;
  gossipHeartbeatMs: number;
  batchMs: number;
  redialIntervalMs: number;
  redialBackoffMaxMs: number;
  meshCheckIntervalMs: number;
  targetConnections: number;
  fenceAfterMs: number;
  claimSettleMs: number;
  fenceSlackMs: number;
  /** services.max_stop_timeout: with fence_after and fence_slack, the witnesses' quiet period after a restart (W6). */
  maxStopTimeoutMs: number;
  clockDriftPpm: number;
  tickMs: number;
  debounceMs: number;
  checkpointIntervalMs: number;
  handoffMs: number;
  replicas: number;
  maxParallel: number;
}

/**
 * The agent's defaults (config/schema) scaled down by about 2 so that
 * scenarios finish in tens of seconds, with the same ratios: several
 * heartbeats per suspicion, fence_after < dead_after. Much shorter
 * heartbeats cost too much CPU once many agents share one event loop
 * (docs/sim.md, "Scale").
 */
export const DEFAULT_SIM_TIMING: SimTiming = {
  heartbeatMs: 1000,
  suspectAfterMs: 3000,
  deadAfterMs: 6000,
  syncGraceMs: 2000,
  syncIntervalMs: 10_000,
  syncTimeoutMs: 10_000,
  gossipHeartbeatMs: 1000,
  batchMs: 5,
  redialIntervalMs: 1000,
  redialBackoffMaxMs: 5000,
  meshCheckIntervalMs: 1000,
  targetConnections: 6,
  fenceAfterMs: 4000,
  claimSettleMs: 1000,
  fenceSlackMs: 1000,
  maxStopTimeoutMs: 2000,
  clockDriftPpm: 1000,
  tickMs: 500,
  debounceMs: 50,
  checkpointIntervalMs: 2000,
  handoffMs: 2000,
  replicas: 1,
  maxParallel: 1,
};

export interface SimNetworkDefaults {
  latencyMs: number;
  jitterMs: number;
  lossPct: number;
}

export interface SimClusterOptions {
  seed: Seed;
  /** Agents started by `start()`. */
  nodes: number;
  /** Working directory (data dirs, image); a fresh temp dir (removed by close) when absent. */
  root?: string;
  timing?: Partial<SimTiming>;
  network?: Partial<SimNetworkDefaults>;
  /** Each new agent dials this many random running agents (default 3). */
  bootstrapPeers?: number;
  /** Capacity every node enrolls with. */
  capacity?: Capacity;
  runner?: Partial<SimRunnerTiming>;
  /** Agents started at once by `start()` (default 4). */
  startConcurrency?: number;
  /** Run the reconcile loop with simulated processes (default true). */
  reconciler?: boolean;
  /**
   * The witness configuration every agent starts with (version 1): a count
   * (the first nodes, n1..nk) or node names. Default: the first min(nodes, 3).
   */
  witnesses?: number | string[];
  /**
   * Per-node rate of the monotonic clock leases run on (1 = real time; 0.99
   * runs 1 % slow). Nodes not listed run at rate 1.
   */
  clockRates?: Readonly<Record<string, number>>;
  /**
   * Nodes that have the workload image before their first claim (default:
   * every node). The others fetch it from a node that has it
   * (`/silo/image/1`), found through the observed document's `images` record.
   */
  imageOn?: readonly string[];
  /** SWIM membership in every agent (default off). */
  membership?: SimMembership;
  /** Gossipsub mesh degree of every agent (default src/gossip/node.ts DEFAULT_MESH_DEGREE). */
  mesh?: Partial<MeshDegree>;
  /** Gossipsub flood publish in every agent (default the agent's: on). */
  floodPublish?: boolean;
  logger?: Logger;
}

/** SWIM in the simulator's agents: `liveness: "swim"` is a real agent's `services.lease = "swim"`. */
export interface SimMembership {
  liveness: 'acked-heartbeats' | 'swim';
  params?: Partial<SwimParams>;
  /**
   * With `liveness: "swim"`: heartbeats every this many ms instead of
   * timing.heartbeatMs, and SWIM vouches for live members in the heartbeat
   * detector (membership.heartbeat_interval of a real agent; default 10 s).
   */
  heartbeatIntervalMs?: number;
}

export type FaultKind =
  | 'start'
  | 'witnesses'
  | 'partition'
  | 'cut'
  | 'heal'
  | 'link'
  | 'crash'
  | 'restart'
  | 'copy'
  | 'join'
  | 'skew'
  | 'apply'
  | 'drain';

export interface FaultEvent {
  kind: FaultKind;
  at: number;
  nodes: string[];
  detail: string;
}

export interface AckedWrite {
  key: string;
  node: string;
  /** performance.now() when transactLocal returned (the write is durable on its node). */
  at: number;
  /** Size of the Yjs update the write made. */
  bytes: number;
}
