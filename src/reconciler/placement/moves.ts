import { compareAsc } from './rendezvous.js';
import type { Claim, PlacementResult } from './types.js';

/**
 * A planned move: the holder is live and cooperates (stops, snapshots,
 * writes `released`), the target picks the snapshot up. Unplanned takeovers
 * (the holder is dead) are not moves: they are not throttled, since nothing
 * is running that could be kept running a little longer.
 */
export interface PlannedMove {
  workload: string;
  from: string;
  to: string;
  /** Why placement moved it (holder draining, constraints, capacity). */
  reason: string;
  /**
   * - in-flight: the holder is stopping or has released and the target is not running yet;
   * - may-start: the holder may begin now (a move slot is free);
   * - queued: waits until earlier moves have finished.
   */
  state: 'in-flight' | 'may-start' | 'queued';
}

export interface MovePlan {
  /** Every planned move, in workload name order. */
  moves: readonly PlannedMove[];
  inFlight: number;
  /** Workload names whose holder may begin its move now. */
  mayStart: ReadonlySet<string>;
}

/** Phases in which the process has stopped or is stopping for good: the move has begun. */
function hasLetGo(claim: Claim): boolean {
  return claim.phase === 'stopping' || claim.phase === 'released';
}

/**
 * Which planned moves may begin now. At most `maxParallel` moves are in
 * flight at once across the cluster (every node computes the same answer
 * from the same view): a drain moves the next workload only when the
 * previous one runs on its new node. Moves begin in workload name order.
 *
 * `claims` is collectClaims() of the same view placement saw.
 */
export function planMoves(input: {
  claims: ReadonlyMap<string, readonly Claim[]>;
  placement: PlacementResult;
  maxParallel: number;
}): MovePlan {
  if (!Number.isSafeInteger(input.maxParallel) || input.maxParallel < 1) {
    throw new RangeError(`maxParallel must be an integer >= 1, got ${input.maxParallel}`);
  }
  const moves: PlannedMove[] = [];
  const candidates: PlannedMove[] = [];
  const names = [...input.placement.assignments.keys()].sort(compareAsc);
  for (const workload of names) {
    const assignment = input.placement.assignments.get(workload)!;
    if (!('node' in assignment)) continue;
    const target = assignment.node;
    const claims = input.claims.get(workload) ?? [];
    const live = claims.filter((claim) => !claim.stale);
    const targetClaim = live.find((claim) => claim.nodeId === target);
    const targetSettled =
      targetClaim !== undefined && (targetClaim.phase === 'running' || targetClaim.phase === 'failed');
    const reason = assignment.movedBecause ?? 'placement changed';

    // A node that has let go while the target is not running yet: in flight.
    const source = live.find((claim) => claim.nodeId !== target && hasLetGo(claim));
    if (source && !targetSettled) {
      moves.push({ workload, from: source.nodeId, to: target, reason, state: 'in-flight' });
      continue;
    }
    // A live node still running it elsewhere: a move that has not begun.
    const holding = live.find(
      (claim) =>
        claim.nodeId !== target &&
        (claim.phase === 'running' ||
          claim.phase === 'starting' ||
          claim.phase === 'pulling' ||
          claim.phase === 'failed'),
    );
    if (holding && holding === live[0]) {
      const move: PlannedMove = { workload, from: holding.nodeId, to: target, reason, state: 'queued' };
      moves.push(move);
      candidates.push(move);
    }
  }
  const inFlight = moves.filter((move) => move.state === 'in-flight').length;
  const slots = Math.max(0, input.maxParallel - inFlight);
  const mayStart = new Set<string>();
  for (const move of candidates.slice(0, slots)) {
    move.state = 'may-start';
    mayStart.add(move.workload);
  }
  return { moves, inFlight, mayStart };
}
