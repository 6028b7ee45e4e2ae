import type { LeaseStatus } from '../ownership/index.js';
import type { SnapshotRef } from '../state/schemas.js';
import { shortDigest } from './peer-fetch.js';
import type { LocalAction, Restore, ViewEvaluation } from './placement/index.js';
import type { Slot } from './slot.js';

/** What the reconcile loop reports of itself (`silo status`, the simulator's liveness checker). */
export interface ReconcileStatus {
  nodeId: string;
  leaseSource: string;
  workloads: {
    name: string;
    /** Where placement puts it (a node id, or "pending: <reason>"). */
    assignment: string | null;
    /** This node's current placement action for it. */
    action: string | null;
    /** Why this node waits, when it does. */
    waiting: string | null;
    /** The action running for it now. */
    task: string | null;
    /** The last failed action, retried later. */
    error: string | null;
    checkpoint: SnapshotRef | null;
    /** This node's witness lease of it (exclusive workloads it claims or runs), else null. */
    lease: LeaseSummary | null;
  }[];
}

/**
 * This node's witness lease of one workload, as status output shows it
 * (the loop's status, and the API's workload rows through it).
 */
export interface LeaseSummary {
  ballot: number;
  held: boolean;
  mayRun: boolean;
  configVersion: number;
  quorum: number;
  grantedBy: string[];
  /** "witness: what it said" for each witness without a live grant. */
  missing: string[];
}

/** One line on a lease for reasons and logs: who granted, or what is missing. */
export function describeLease(status: LeaseStatus): string {
  if (status.configVersion === 0) return 'no witness configuration';
  const missing = status.missing.map((m) => `${m.witness}: ${m.said}`).join('; ');
  if (status.mayRun) return `ballot ${status.ballot} granted by ${status.grantedBy.join(', ')}`;
  if (status.held) {
    // Grants that are still live but about to end: their renewals have not come back (yet).
    const why = missing === '' ? `no renewal back from ${status.grantedBy.join(', ')} in time` : missing;
    return `ballot ${status.ballot} ends within the stop budget; renewal missing (${why})`;
  }
  return `ballot ${status.ballot}: ${status.grantedBy.length} of ${status.quorum} needed grants (${missing})`;
}

/** One line on where a claim's state comes from, for its `pulling` reason. */
export function describeRestore(restore: Restore): string {
  switch (restore.from) {
    case 'none':
      return 'volatile: no state to restore';
    case 'local':
      return 'state: this node’s STATE_DIRECTORY';
    case 'snapshot':
      return `state: ${restore.nodeId}'s released snapshot ${shortDigest(restore.snapshot.digest)}`;
    case 'checkpoint':
      return `state: ${restore.nodeId}'s checkpoint ${shortDigest(restore.snapshot.digest)} (writes after it are lost)`;
    case 'empty':
      return `state: none (${restore.lostStateOf} left no checkpoint; its state is lost)`;
  }
}

/** What the loop knows at a status request (reconcile-loop.ts `status`). */
export interface StatusSources {
  /** Every workload to list: specs, slots and waits. */
  names: Iterable<string>;
  slot: (name: string) => Slot | undefined;
  /** The last pass's placement, if a pass evaluated one. */
  assignments: ViewEvaluation['placement']['assignments'] | undefined;
  lastActions: readonly LocalAction[];
  waits: ReadonlyMap<string, string>;
  lease: (name: string) => LeaseSummary | null;
}

/** One row per workload, sorted by name. */
export function workloadStatuses(sources: StatusSources): ReconcileStatus['workloads'] {
  const workloads: ReconcileStatus['workloads'] = [];
  for (const name of [...new Set(sources.names)].sort()) {
    const slot = sources.slot(name);
    const assignment = sources.assignments?.get(name);
    workloads.push({
      name,
      assignment:
        assignment === undefined
          ? null
          : 'node' in assignment
            ? assignment.node
            : // Why it left its holder, if it did: a drained holder with nowhere to go says "is draining".
              `pending: ${assignment.pending}${assignment.movedBecause ? `; ${assignment.movedBecause}` : ''}`,
      action: sources.lastActions.find((action) => action.workload === name)?.kind ?? null,
      waiting: sources.waits.get(name) ?? null,
      task: slot?.task?.kind ?? null,
      error: slot?.error ? `${slot.error.what}: ${slot.error.message}` : null,
      checkpoint: slot?.checkpoint ?? null,
      lease: sources.lease(name),
    });
  }
  return workloads;
}
