import type { LeaseStatus } from '../ownership/index.js';
import type { SnapshotRef } from '../state/schemas.js';
import { shortDigest } from './peer-fetch.js';
import type { Restore } from './placement/index.js';

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
