import type { LeaseStatus } from '../ownership/index.js';
import type { ObservedStatus, Phase } from '../state/schemas.js';
import { type LocalView, livenessOf, rankNodes, type ViewEvaluation } from './placement/index.js';
import type { RunnerStatus } from './service-runner.js';
import type { Slot } from './slot.js';

/**
 * What the reconcile loop writes as this node's status of a workload
 * (observed document, docs/protocol.md): pure functions of the slot, the
 * runner's status, the lease and the loop's clock, so they are tested
 * without a loop.
 */

/** Runner phases in which something runs (or is about to). */
export const RUNNING_PHASES: ReadonlySet<Phase> = new Set<Phase>([
  'pending',
  'starting',
  'running',
  'stopping',
]);
/** Longest reason written (the schema's bound). */
const MAX_REASON = 2000;

/**
 * The status this node should show for the slot's workload, or null when it
 * has nothing to say: what the loop authored itself, else the runner's
 * status mirrored (its `pending`, a moment inside ensureRunning, shown as
 * `starting`; `since` is when the loop first saw the phase, on its clock).
 * A failed task of the loop is appended to the reason. Updates
 * `slot.mirrored` when the mirrored phase changed.
 */
export function slotStatus(slot: Slot, runner: RunnerStatus | null, now: number): ObservedStatus | null {
  let status: ObservedStatus;
  if (slot.authored !== null) {
    status = slot.authored;
  } else {
    if (runner === null) return null;
    const phase: Phase = runner.phase === 'pending' ? 'starting' : runner.phase;
    if (slot.mirrored?.phase !== phase) slot.mirrored = { phase, since: now };
    const active = phase === 'running' || phase === 'starting';
    status = {
      phase,
      since: slot.mirrored.since,
      revision: runner.revision,
      restarts: runner.restarts,
      lastExit: runner.lastExit,
      reason: runner.reason ?? (active ? slot.note : null),
      sandbox: runner.sandbox,
      scratchUsedMb: runner.scratchUsedMb,
      snapshot: slot.checkpoint,
    };
  }
  if (slot.error !== null) {
    status = {
      ...status,
      reason: joinReason(status.reason, `${slot.error.what} failed: ${slot.error.message}; retrying`),
    };
  }
  return status;
}

/**
 * The lease ballot as the status's epoch (a fencing token) while this node
 * runs an exclusive workload under a lease it holds; `lease` is null when
 * the node does not want one for it. No epoch otherwise.
 */
export function withEpoch(status: ObservedStatus, lease: LeaseStatus | null): ObservedStatus {
  if (!RUNNING_PHASES.has(status.phase) || lease === null) {
    if (status.epoch === undefined) return status;
    const { epoch: _dropped, ...rest } = status;
    return rest;
  }
  if (!lease.held) return status;
  return { ...status, epoch: lease.ballot };
}

/** A status the loop authors (pending, pulling, released, failed), nothing run yet. */
export function blankStatus(
  now: number,
  phase: Phase,
  revision: number,
  reason: string | null,
): ObservedStatus {
  return {
    phase,
    since: now,
    revision,
    restarts: 0,
    lastExit: null,
    reason: reason === null ? null : truncate(reason),
    sandbox: null,
    scratchUsedMb: null,
    snapshot: null,
  };
}

/**
 * The workloads whose `pending` status (placement's reason) this node
 * writes for the cluster: those no node can take and none holds, reported
 * by one node only, the first alive one in the workload's rendezvous order,
 * so that every node shows why. Nothing before dead_after has passed since
 * the node started listening (it may not know every node yet).
 */
export function pendingReportsOf(
  nodeId: string,
  view: LocalView,
  evaluation: ViewEvaluation,
  deadAfterMs: number,
): Set<string> {
  const out = new Set<string>();
  if (view.now < view.listeningSince + deadAfterMs) return out;
  const alive = view.nodes.map((n) => n.nodeId).filter((id) => livenessOf(view.liveness, id) === 'alive');
  for (const [name, assignment] of evaluation.placement.assignments) {
    if (!('pending' in assignment)) continue;
    if (evaluation.holders.get(name) !== undefined) continue; // its holder's status says what it is doing
    if (rankNodes(name, alive)[0] !== nodeId) continue;
    out.add(name);
  }
  return out;
}

/** Two reasons as one ("; "-joined, empty parts left out), truncated to the schema's bound. */
export function joinReason(first: string | null, second: string | null): string | null {
  const parts = [first, second].filter((part): part is string => part !== null && part.length > 0);
  return parts.length === 0 ? null : truncate(parts.join('; '));
}

function truncate(reason: string): string {
  return reason.length <= MAX_REASON ? reason : `${reason.slice(0, MAX_REASON - 3)}...`;
}
