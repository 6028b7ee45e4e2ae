import type { Logger } from 'pino';
import type { WorkloadSpec } from '../state/schemas.js';
import { DeletedState } from './deleted-state.js';
import type { LoopMetrics } from './loop-metrics.js';
import type { ReconcileLoopOptions } from './loop-options.js';
import type { OwnershipTiming } from './placement/index.js';
import type { Slot } from './slot.js';
import { SlotActions } from './slot-actions.js';
import { SlotBook } from './slot-book.js';
import { SlotLeases } from './slot-leases.js';
import { SlotTasks } from './slot-tasks.js';
import { SnapshotKeeper } from './snapshot-keeper.js';
import { StateRestorer } from './state-restorer.js';

/**
 * The reconcile loop's parts, wired to each other and to the loop
 * (reconcile-loop.ts): each has one job and is tested alone
 * (docs/reconciler.md, the module table); this is only who talks to whom.
 */

export interface LoopParts {
  /** Checkpoint history, replica pulls, pins and snapshot garbage collection. */
  keeper: SnapshotKeeper;
  /** The slots and this node's observed entries: the one writer of both. */
  book: SlotBook;
  /** Which exclusive workloads this node asks a witness lease for. */
  slotLeases: SlotLeases;
  /** Empties deleted workloads' STATE_DIRECTORY. */
  deletedState: DeletedState;
  /** Puts a claim's state in place (snapshot, checkpoint, fallback). */
  restorer: StateRestorer;
  /** Claim, start, restart, release, let go, checkpoint. */
  actions: SlotActions;
  /** Runs each slot's one task, with back-off after failures. */
  tasks: SlotTasks;
}

/** What the loop has already made of its options. */
export interface LoopContext {
  nodeId: string;
  logger: Logger;
  metrics: LoopMetrics;
  timing: OwnershipTiming;
  replicas: number;
}

/** What the parts ask of the loop itself. */
export interface LoopHooks {
  /** The loop's clock, never running backwards. */
  now: () => number;
  /** Snapshots the loop's slots hold: kept by garbage collection. */
  heldDigests: () => Iterable<string>;
  /** Nodes to ask for a snapshot of `holderId`'s, best first. */
  snapshotSources: (workload: string, holderId: string) => string[];
  specOf: (name: string) => WorkloadSpec | undefined;
  /** Nodes to ask for `spec`'s image, best first. */
  imageHints: (spec: WorkloadSpec) => string[];
  /** A slot's task ended. */
  settled: (slot: Slot) => void;
}

export function buildLoopParts(
  options: ReconcileLoopOptions,
  context: LoopContext,
  hooks: LoopHooks,
): LoopParts {
  const keeper = new SnapshotKeeper({
    nodeId: context.nodeId,
    snapshots: options.snapshots,
    observed: options.observed,
    replicas: context.replicas,
    gcIntervalMs: options.gcIntervalMs ?? 60_000,
    now: hooks.now,
    logger: context.logger,
    replicaPulls: context.metrics.replicaPulls,
    heldDigests: hooks.heldDigests,
  });
  const book = new SlotBook({
    nodeId: context.nodeId,
    observed: options.observed,
    workloads: options.workloads,
    runner: options.runner,
    leases: options.leases,
    snapshots: options.snapshots,
    logger: context.logger,
    now: hooks.now,
  });
  const busy = (workload: string) => Boolean(book.get(workload)?.task);
  const slotLeases = new SlotLeases({
    nodeId: context.nodeId,
    leases: options.leases,
    observed: options.observed,
    runner: options.runner,
    timing: context.timing,
    busy,
  });
  const deletedState = new DeletedState({
    runner: options.runner,
    snapshots: options.snapshots,
    logger: context.logger,
    busy,
  });
  const restorer = new StateRestorer({
    snapshots: options.snapshots,
    keeper: keeper,
    metrics: context.metrics,
    logger: context.logger,
    now: hooks.now,
    lastHeard: (nodeId) => options.lease.lastHeard().get(nodeId),
    sources: hooks.snapshotSources,
  });
  const actions = new SlotActions({
    nodeId: context.nodeId,
    runner: options.runner,
    images: options.images,
    snapshots: options.snapshots,
    leases: options.leases,
    restorer: restorer,
    metrics: context.metrics,
    logger: context.logger,
    now: hooks.now,
    slots: {
      write: (slot) => book.write(slot),
      drop: (slot) => book.drop(slot),
      desired: (slot) => book.desired(slot),
    },
    specOf: hooks.specOf,
    imageHints: hooks.imageHints,
  });
  const tasks = new SlotTasks({
    logger: context.logger,
    actions: context.metrics.actions,
    now: hooks.now,
    settled: hooks.settled,
  });
  return { keeper, book, slotLeases, deletedState, restorer, actions, tasks };
}
