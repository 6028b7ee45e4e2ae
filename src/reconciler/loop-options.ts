import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { LeaseStatus, LeaseWant } from '../ownership/index.js';
import type { EnrollmentView } from '../state/enrollment-view.js';
import type { ObservedView } from '../state/observed-view.js';
import type { SignedEnrollment } from '../state/schemas.js';
import type { WorkloadsView } from '../state/workloads-view.js';
import type { ImageSource } from './image-fetch.js';
import type { LeaseSource } from './lease.js';
import type { OwnershipTiming } from './placement/index.js';
import type { ServiceRunner } from './service-runner.js';
import type { StateSnapshots } from './snapshots.js';

/** What the reconcile loop (reconcile-loop.ts) is built from. */
export interface ReconcileLoopOptions {
  nodeId: string;
  workloads: Pick<WorkloadsView, 'list' | 'onChange'>;
  observed: Pick<
    ObservedView,
    'listAll' | 'listForNode' | 'get' | 'setStatus' | 'remove' | 'onChange' | 'holdersOf' | 'batch'
  >;
  /** Drain flags (and their changes). */
  enrollment: Pick<EnrollmentView, 'isDraining' | 'onChange'>;
  /** The verified, active (unrevoked) enrolled nodes, draining ones included. */
  activeNodes: () => readonly SignedEnrollment[];
  /** Subscribes to changes of the active set (trust recomputed). */
  onActiveNodesChange?: (listener: () => void) => () => void;
  /** Liveness (who is alive, last heard, warm-up); ownership no longer comes from it. */
  lease: LeaseSource;
  /** This node's witness leases of exclusive workloads (docs/placement.md, "Witness leases"). */
  leases: WorkloadLeases;
  runner: ServiceRunner;
  snapshots: StateSnapshots;
  images: ImageSource;
  /** The local clock; the same one the failure detector uses. */
  now?: () => number;
  timing: OwnershipTiming;
  /** Reconcile at least this often (default 1 s). */
  tickMs?: number;
  /** Document changes are coalesced for this long (default 50 ms). */
  debounceMs?: number;
  /** services.checkpoint_interval; 0 disables checkpoints (default 30 s). */
  checkpointIntervalMs?: number;
  /** services.replicas: nodes that keep a copy of each checkpoint (default 1). */
  replicas?: number;
  /** services.max_parallel (default 1). */
  maxParallel?: number;
  /** Stored snapshots nobody references are collected this often (default 60 s). */
  gcIntervalMs?: number;
  /** Graceful stop: how long to wait for a replica to pull each released snapshot (default 3 s). */
  handoffMs?: number;
  logger: Logger;
  registry: Registry;
}

/** What the loop needs of the LeaseManager (src/ownership/lease-manager.ts). */
export interface WorkloadLeases {
  want(workload: string, want: LeaseWant): void;
  /** Only once nothing of the workload runs here. */
  unwant(workload: string): void;
  wanted(): string[];
  status(workload: string): LeaseStatus;
  /** A witness configuration is known. */
  configured(): boolean;
  /** Called when a lease starts or ends. */
  onChange(listener: () => void): () => void;
  /** The run window to ask for, at least `baseMs` (longer on a slow network). */
  windowFor?(baseMs: number): number;
}

/** How the loop stops: hand everything over, or just halt (a crash, as the cluster sees it). */
export type StopPolicy = 'release' | 'halt';

/** Refuses settings the loop cannot run with (negative or non-finite times, fractional replicas). */
export function checkLoopOptions(options: ReconcileLoopOptions): void {
  for (const [key, value] of [
    ['tickMs', options.tickMs],
    ['debounceMs', options.debounceMs],
    ['checkpointIntervalMs', options.checkpointIntervalMs],
    ['gcIntervalMs', options.gcIntervalMs],
    ['handoffMs', options.handoffMs],
  ] as const) {
    if (value !== undefined && !(Number.isFinite(value) && value >= 0))
      throw new RangeError(`ReconcileLoop: ${key} must be a number of ms >= 0, got ${String(value)}`);
  }
  if (options.replicas !== undefined && !(Number.isSafeInteger(options.replicas) && options.replicas >= 0))
    throw new RangeError(`ReconcileLoop: replicas must be an integer >= 0, got ${options.replicas}`);
}
