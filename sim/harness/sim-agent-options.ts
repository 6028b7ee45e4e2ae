import type { Logger } from 'pino';
import { heartbeatSchedule } from '../../src/agent/heartbeat-schedule.js';
import type { NodeAgentOptions } from '../../src/agent/node-agent.js';
import type { PrivateKey } from '../../src/gossip/index.js';
import type { ReconcilerOptions } from '../../src/reconciler/reconciler.js';
import type { SimNetwork } from '../net/sim-network.js';
import { SIM_ORG, type SimClusterOptions, type SimTiming } from './sim-cluster-options.js';
import type { SimImage } from './sim-image.js';
import type { SimRunner } from './sim-runner.js';

/** One simulated node as its agent is built. */
export interface SimAgentInput {
  name: string;
  dataDir: string;
  key: PrivateKey;
  /** The node's (possibly skewed) wall clock. */
  now: () => number;
  /** Its simulated processes; null: the agent runs no reconcile loop. */
  runner: SimRunner | null;
  /** Running agents it dials first. */
  bootstrap: string[];
}

/**
 * A simulated node's agent options: the real NodeAgent on the simulated
 * network with the cluster's scaled timings (docs/sim.md). Only the service
 * processes are simulated (the runner).
 */
export function simAgentOptions(
  input: SimAgentInput,
  cluster: {
    options: SimClusterOptions;
    timing: SimTiming;
    net: SimNetwork;
    image: SimImage;
    logger: Logger;
  },
): NodeAgentOptions {
  const t = cluster.timing;
  const { options } = cluster;
  const membership = options.membership;
  const reconciler: ReconcilerOptions | undefined =
    input.runner === null
      ? undefined
      : {
          runner: input.runner,
          verifyImageSignature: cluster.image.verify,
          timing: {
            fenceAfterMs: t.fenceAfterMs,
            claimSettleMs: t.claimSettleMs,
            fenceSlackMs: t.fenceSlackMs,
            clockDriftPpm: t.clockDriftPpm,
          },
          maxStopTimeoutMs: t.maxStopTimeoutMs,
          tickMs: t.tickMs,
          debounceMs: t.debounceMs,
          checkpointIntervalMs: t.checkpointIntervalMs,
          handoffMs: t.handoffMs,
          replicas: t.replicas,
          maxParallel: t.maxParallel,
          onStop: 'halt',
          monotonicNow: monotonicClock(options.clockRates?.[input.name] ?? 1),
          ...(membership?.liveness === 'swim' ? { leaseKind: 'swim' as const } : {}),
        };
  return {
    org: SIM_ORG,
    nodeId: input.name,
    dataDir: input.dataDir,
    durability: 'nosync',
    logger: cluster.logger,
    gossip: {
      customTransport: cluster.net.transport(input.name),
      listen: [cluster.net.address(input.name)],
      privateKey: input.key,
      bootstrap: input.bootstrap,
      now: input.now,
      ...heartbeatSchedule(membership?.liveness ?? 'acked-heartbeats', {
        heartbeatMs: t.heartbeatMs,
        ...(membership?.heartbeatIntervalMs !== undefined && {
          swimIntervalMs: membership.heartbeatIntervalMs,
        }),
      }),
      suspectAfterMs: t.suspectAfterMs,
      deadAfterMs: t.deadAfterMs,
      syncGraceMs: t.syncGraceMs,
      syncIntervalMs: t.syncIntervalMs,
      syncTimeoutMs: t.syncTimeoutMs,
      gossipHeartbeatMs: t.gossipHeartbeatMs,
      batchMs: t.batchMs,
      redialIntervalMs: t.redialIntervalMs,
      redialBackoffMaxMs: t.redialBackoffMaxMs,
      meshCheckIntervalMs: t.meshCheckIntervalMs,
      targetConnections: t.targetConnections,
      ...(options.mesh ? { mesh: options.mesh } : {}),
      ...(options.floodPublish !== undefined && { floodPublish: options.floodPublish }),
    },
    ...(reconciler ? { reconciler } : {}),
    ...(membership
      ? {
          membership: {
            swim: true,
            vouch: membership.liveness === 'swim',
            ...(membership.params ? { params: membership.params } : {}),
          },
        }
      : {}),
  };
}

/** A monotonic clock running at `rate` × real time (the clock-rate bound of docs/placement.md). */
function monotonicClock(rate: number): () => number {
  if (!(rate > 0.5 && rate < 1.5)) throw new RangeError(`clock rate must be in (0.5, 1.5), got ${rate}`);
  const origin = performance.now();
  return () => origin + (performance.now() - origin) * rate;
}
