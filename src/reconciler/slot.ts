import type { ObservedStatus, Phase, SnapshotRef } from '../state/schemas.js';
import type { Restore } from './placement/index.js';

/**
 * What the reconcile loop (reconcile-loop.ts) keeps per workload on this
 * node: the status it writes or mirrors, the claim or release under way,
 * the task running for it and its retry state.
 */

export interface ClaimState {
  revision: number;
  restore: Restore;
  takeoverFrom: string | null;
  /** Image and state are in place: `start` may run the process. */
  prepared: boolean;
}

/** A pending release (stop + snapshot) that must complete even if its first attempt failed. */
export interface ReleaseState {
  reason: string;
  snapshot: boolean;
}

export interface Task {
  kind: string;
  urgent: boolean;
  controller: AbortController;
  done: Promise<void>;
}

export interface Slot {
  readonly name: string;
  /** The status the loop writes itself; null while the runner's status is mirrored. */
  authored: ObservedStatus | null;
  /** The phase last mirrored from the runner, and since when on the loop's clock. */
  mirrored: { phase: Phase; since: number } | null;
  /** Newest checkpoint of the current run, announced as `snapshot` while mirrored. */
  checkpoint: SnapshotRef | null;
  lastCheckpointAt: number | null;
  claim: ClaimState | null;
  release: ReleaseState | null;
  /** Shown as the reason while the runner gives none (where the state came from, what was lost). */
  note: string | null;
  task: Task | null;
  error: { what: string; message: string } | null;
  failures: number;
  retryAt: number;
  dropped: boolean;
}

export function newSlot(name: string): Slot {
  return {
    name,
    authored: null,
    mirrored: null,
    checkpoint: null,
    lastCheckpointAt: null,
    claim: null,
    release: null,
    note: null,
    task: null,
    error: null,
    failures: 0,
    retryAt: 0,
    dropped: false,
  };
}
