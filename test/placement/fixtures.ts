import type { LocalView } from '../../src/reconciler/placement/local-actions.js';
import { DEFAULT_OWNERSHIP_TIMING } from '../../src/reconciler/placement/quorum.js';
import type { Liveness, PlacementNode } from '../../src/reconciler/placement/types.js';
import type { ObservedStatus, Phase, SnapshotRef, WorkloadSpec } from '../../src/state/schemas.js';

/** Test data builders for the placement tests (not a test file itself). */

export function makeSpec(name: string, overrides: Partial<WorkloadSpec> = {}): WorkloadSpec {
  return {
    name,
    tier: 'app',
    image: 'example/app',
    imageDigest: `sha256:${'ab'.repeat(32)}`,
    imageSignature: 'c2lnbmF0dXJl',
    command: '/bin/app',
    args: [],
    env: {},
    scratchMb: 100,
    scratchClass: 'persistent',
    network: 'overlay',
    cpus: 1,
    memoryMb: 256,
    restart: 'always',
    stopSignal: 'SIGTERM',
    stopTimeoutMs: 10_000,
    startTimeoutMs: 30_000,
    constraints: {},
    onPartition: 'stop',
    revision: 1,
    ...overrides,
  };
}

export function makeNode(nodeId: string, overrides: Partial<PlacementNode> = {}): PlacementNode {
  return {
    nodeId,
    capacity: { cpus: 8, memoryMb: 16_384, scratchMb: 100_000 },
    labels: {},
    draining: false,
    ...overrides,
  };
}

export const SNAPSHOT: SnapshotRef = { digest: `sha256:${'cd'.repeat(32)}`, size: 4096, at: 1 };

export function status(phase: Phase, since: number, overrides: Partial<ObservedStatus> = {}): ObservedStatus {
  return {
    phase,
    since,
    revision: 1,
    restarts: 0,
    lastExit: null,
    reason: null,
    sandbox: null,
    scratchUsedMb: null,
    snapshot: null,
    ...overrides,
  };
}

/** observed document from nodeId → workload → status literals. */
export function observedDoc(
  entries: Record<string, Record<string, ObservedStatus>>,
): Map<string, Map<string, ObservedStatus>> {
  return new Map(
    Object.entries(entries).map(([nodeId, statuses]) => [nodeId, new Map(Object.entries(statuses))]),
  );
}

export const NOW = 10_000_000;

export interface ViewOptions {
  specs: WorkloadSpec[];
  nodes: PlacementNode[];
  liveness: Record<string, Liveness>;
  observed?: Record<string, Record<string, ObservedStatus>>;
  /** `{ held: false }`: no workload's witness lease may run (unless `leases` names it). */
  lease?: { held: boolean };
  /** Per workload: this node's witness lease (overrides `lease`). */
  leases?: Record<string, { mayRun: boolean; why: string }>;
  witnessConfigured?: boolean;
  lastHeard?: Record<string, number>;
  now?: number;
  listeningSince?: number;
  maxParallel?: number;
}

/**
 * A view of an agent that has been up for an hour, knows a witness configuration
 * and may run every workload under its witness lease, unless told otherwise.
 */
export function makeView(options: ViewOptions): LocalView {
  const now = options.now ?? NOW;
  return {
    now,
    specs: options.specs,
    nodes: options.nodes,
    liveness: options.liveness,
    observed: observedDoc(options.observed ?? {}),
    // Every workload's witness lease is held unless told otherwise.
    leases: new Map(
      options.specs.map((spec) => [
        spec.name,
        options.leases?.[spec.name] ??
          (options.lease?.held === false
            ? { mayRun: false, why: 'test: no lease' }
            : { mayRun: true, why: 'test: granted' }),
      ]),
    ),
    witnessConfigured: options.witnessConfigured ?? true,
    lastHeard: new Map(Object.entries(options.lastHeard ?? {})),
    listeningSince: options.listeningSince ?? now - 3_600_000,
    timing: { ...DEFAULT_OWNERSHIP_TIMING },
    maxParallel: options.maxParallel ?? 1,
  };
}
