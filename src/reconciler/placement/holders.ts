import type { Phase, SnapshotRef } from '../../state/schemas.js';
import { compareAsc, compareDesc, rendezvousScore } from './rendezvous.js';
import type { Claim, Holder, LivenessView, ObservedDoc } from './types.js';
import { livenessOf } from './types.js';

/**
 * How strongly a status entry holds its workload:
 * - 3: a process exists or is being started/stopped (running, starting, stopping);
 * - 2: a claim that is fetching image/snapshot, nothing runs yet (pulling);
 * - 1: no process, but the node keeps the workload's state or its crash-loop
 *      verdict (released with a snapshot; failed): it stays the holder until
 *      someone picks it up, so placement is sticky to it and no other node
 *      starts from empty state;
 * - 0: not holding (pending; released without a snapshot).
 */
export function holdRank(phase: Phase, snapshot: SnapshotRef | null): 0 | 1 | 2 | 3 {
  switch (phase) {
    case 'running':
    case 'starting':
    case 'stopping':
      return 3;
    case 'pulling':
      return 2;
    case 'failed':
      return 1;
    case 'released':
      return snapshot ? 1 : 0;
    case 'pending':
      return 0;
  }
}

export interface DeriveHoldersOptions {
  /** The local liveness view: entries of dead nodes are stale and lose to any live entry. */
  liveness?: LivenessView;
  /** This node: never stale in its own view. */
  selfId?: string;
}

/**
 * Every node's entry per workload, best first (see deriveHolders for the
 * order), in workload name order. Workloads nobody holds are included too:
 * a released record without snapshot still tells that a move is under way.
 */
export function collectClaims(
  observed: ObservedDoc,
  options: DeriveHoldersOptions = {},
): Map<string, Claim[]> {
  if (!(observed instanceof Map))
    throw new TypeError('observed must be a Map of nodeId → Map of workload → status');
  const isStale = (nodeId: string): boolean =>
    options.liveness !== undefined &&
    nodeId !== options.selfId &&
    livenessOf(options.liveness, nodeId) === 'dead';
  const byWorkload = new Map<string, Claim[]>();
  for (const [nodeId, statuses] of observed) {
    if (!(statuses instanceof Map))
      throw new TypeError(`observed entry of ${nodeId} must be a Map of workload → status`);
    const stale = isStale(nodeId);
    for (const [workload, status] of statuses) {
      let list = byWorkload.get(workload);
      if (!list) {
        list = [];
        byWorkload.set(workload, list);
      }
      list.push({
        nodeId,
        phase: status.phase,
        since: status.since,
        revision: status.revision,
        snapshot: status.snapshot,
        reason: status.reason,
        epoch: status.epoch ?? null,
        stale,
      });
    }
  }
  const out = new Map<string, Claim[]>();
  for (const workload of [...byWorkload.keys()].sort(compareAsc)) {
    out.set(workload, sortClaims(workload, byWorkload.get(workload) ?? []));
  }
  return out;
}

/** The first claim that holds (holdRank > 0), or undefined. */
export function pickHolder(claims: readonly Claim[]): Claim | undefined {
  return claims.find((claim) => holdRank(claim.phase, claim.snapshot) > 0);
}

/**
 * Per workload, the node that holds it according to the observed document,
 * with every node's entry ranked best first. Conflicts (two nodes claiming
 * the same workload: a planned move in flight, a takeover while the old
 * holder's record is stale, a race between two claimants with different
 * views, duplicates after a partition heals) resolve by, in order:
 *
 * 1. entries of live nodes before entries of dead ones (a dead node's record
 *    describes the past);
 * 2. hold rank (holdRank above): running beats a claim, a claim beats a
 *    released snapshot;
 * 3. the newer `since`: the later claim saw (or could have seen) the earlier
 *    one, and a node that took over must win against the record its
 *    predecessor wrote before it was cut off;
 * 4. the higher rendezvous score, then the node id: total, so every node picks
 *    the same winner from the same document.
 *
 * Without `liveness`, no entry is stale: the result is a function of the
 * document alone. Workloads nobody holds are absent.
 */
export function deriveHolders(
  observed: ObservedDoc,
  options: DeriveHoldersOptions = {},
): Map<string, Holder> {
  const holders = new Map<string, Holder>();
  for (const [workload, claims] of collectClaims(observed, options)) {
    const best = pickHolder(claims);
    if (best) holders.set(workload, { ...best, claims });
  }
  return holders;
}

/** Orders one workload's entries best first (see deriveHolders). */
export function sortClaims(workload: string, claims: readonly Claim[]): Claim[] {
  return [...claims].sort(
    (a, b) =>
      Number(a.stale) - Number(b.stale) ||
      holdRank(b.phase, b.snapshot) - holdRank(a.phase, a.snapshot) ||
      // A higher lease epoch is a later owner, whatever the clocks say.
      (b.epoch ?? 0) - (a.epoch ?? 0) ||
      b.since - a.since ||
      compareDesc(rendezvousScore(workload, a.nodeId), rendezvousScore(workload, b.nodeId)) ||
      compareAsc(a.nodeId, b.nodeId),
  );
}
