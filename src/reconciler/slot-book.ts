import type { Logger } from 'pino';
import type { ObservedView } from '../state/observed-view.js';
import type { ObservedStatus, SnapshotRef, WorkloadSpec } from '../state/schemas.js';
import type { WorkloadsView } from '../state/workloads-view.js';
import type { WorkloadLeases } from './loop-options.js';
import type { ViewEvaluation } from './placement/index.js';
import type { ServiceRunner } from './service-runner.js';
import { newSlot, type Slot } from './slot.js';
import { blankStatus, RUNNING_PHASES, slotStatus, withEpoch } from './slot-status.js';
import type { StateSnapshots } from './snapshots.js';
import { sameObservedStatus } from './status-equality.js';

export interface SlotBookOptions {
  nodeId: string;
  observed: Pick<ObservedView, 'get' | 'setStatus' | 'remove' | 'listForNode'>;
  workloads: Pick<WorkloadsView, 'list'>;
  runner: Pick<ServiceRunner, 'status'>;
  leases: Pick<WorkloadLeases, 'wanted' | 'status'>;
  snapshots: Pick<StateSnapshots, 'capture'>;
  logger: Logger;
  /** The reconcile loop's clock. */
  now: () => number;
}

/**
 * The reconcile loop's per-workload slots and this node's entries in the
 * observed document (docs/reconciler.md): the one place that writes them.
 * A slot's status is what it authored (a claim, a release, a pending
 * report) or else the runner's, mirrored (slot-status.ts), with the lease
 * epoch of what it holds; it is written only when it differs from the
 * entry there (every field compared, status-equality.ts).
 */
export class SlotBook {
  private readonly options: SlotBookOptions;
  private readonly slots = new Map<string, Slot>();

  constructor(options: SlotBookOptions) {
    this.options = options;
  }

  get(name: string): Slot | undefined {
    return this.slots.get(name);
  }

  names(): IterableIterator<string> {
    return this.slots.keys();
  }

  all(): IterableIterator<Slot> {
    return this.slots.values();
  }

  get size(): number {
    return this.slots.size;
  }

  /**
   * `pending` reports for the workloads this node reports on (pendingReportsOf): written only where
   * nothing else of ours stands; dropped once this node no longer reports on them.
   */
  writePendingReports(
    pendingReports: ReadonlySet<string>,
    evaluation: ViewEvaluation,
    specs: ReadonlyMap<string, WorkloadSpec>,
  ): void {
    for (const name of pendingReports) {
      const assignment = evaluation.placement.assignments.get(name);
      const spec = specs.get(name);
      if (!assignment || !('pending' in assignment) || !spec) continue;
      const slot = this.slotFor(name);
      if (slot.task !== null || (slot.authored !== null && slot.authored.phase !== 'pending')) continue;
      if (slot.authored === null && this.options.runner.status(name) !== null) continue;
      const reason = `not placed: ${assignment.pending}`;
      if (slot.authored?.reason === reason && slot.authored.revision === spec.revision) continue;
      slot.authored = blankStatus(this.options.now(), 'pending', spec.revision, reason);
    }
    for (const slot of [...this.slots.values()]) {
      if (slot.authored?.phase === 'pending' && slot.task === null && !pendingReports.has(slot.name)) {
        this.drop(slot);
      }
    }
  }

  /** The status this node should show for the workload, or null when it has nothing to say. */
  desired(slot: Slot): ObservedStatus | null {
    return slotStatus(slot, this.options.runner.status(slot.name), this.options.now());
  }

  /** Writes the slot's status when it differs from this node's entry (a failure is logged, not thrown). */
  write(slot: Slot): void {
    if (slot.dropped) return;
    const found = this.desired(slot);
    if (found === null) return;
    const wanted = this.options.leases.wanted().includes(slot.name);
    const desired = withEpoch(found, wanted ? this.options.leases.status(slot.name) : null);
    const current = this.options.observed.get(this.options.nodeId, slot.name);
    if (current !== undefined && sameObservedStatus(current, desired)) return;
    try {
      this.options.observed.setStatus(this.options.nodeId, slot.name, desired);
    } catch (err) {
      this.options.logger.error({ err, workload: slot.name }, 'cannot write observed status');
    }
  }

  slotFor(name: string): Slot {
    let slot = this.slots.get(name);
    if (slot === undefined) {
      slot = newSlot(name);
      this.slots.set(name, slot);
    }
    return slot;
  }

  /** Forgets the slot and removes this node's entry for it. */
  drop(slot: Slot): void {
    slot.dropped = true;
    if (this.slots.get(slot.name) === slot) this.slots.delete(slot.name);
    try {
      this.options.observed.remove(this.options.nodeId, slot.name);
    } catch (err) {
      this.options.logger.error({ err, workload: slot.name }, 'cannot remove observed status');
    }
  }

  /**
   * At start-up this node's entries describe a previous agent life whose
   * processes are gone (reaped): a claim is dropped, a running workload is
   * recorded as released (persistent: with a snapshot of its state, so it
   * stays this node's and restarts from it), the rest is kept as it is.
   */
  async adopt(): Promise<void> {
    const specs = new Map(this.options.workloads.list().map((spec) => [spec.name, spec]));
    for (const [name, status] of this.options.observed.listForNode(this.options.nodeId)) {
      const slot = this.slotFor(name);
      const spec = specs.get(name);
      if (status.phase === 'pulling' || (spec === undefined && RUNNING_PHASES.has(status.phase))) {
        this.drop(slot);
        continue;
      }
      if (status.phase === 'starting' || status.phase === 'running' || status.phase === 'stopping') {
        let snapshot: SnapshotRef | null = null;
        if (spec?.scratchClass === 'persistent') {
          try {
            snapshot = await this.options.snapshots.capture(name, { live: false });
          } catch (err) {
            this.options.logger.error(
              { err, workload: name },
              'cannot snapshot the state left by the previous agent',
            );
          }
        }
        slot.authored = {
          ...status,
          phase: 'released',
          since: this.options.now(),
          reason: 'agent restarted: nothing runs here any more',
          snapshot,
        };
      } else {
        slot.authored = status;
      }
      this.write(slot);
    }
  }
}
