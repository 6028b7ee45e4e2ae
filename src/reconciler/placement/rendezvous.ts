import { createHash } from 'node:crypto';

/**
 * Rendezvous (highest-random-weight) hashing. Every node computes the same
 * score for (workload, node) without coordination; a workload's candidates
 * are tried in descending score order. Removing a node only moves the
 * workloads that ranked it first, adding one only takes the workloads that
 * rank it first.
 *
 * The score is sha256(`${workload}\0${nodeId}`) as lowercase hex: names
 * cannot contain NUL, so distinct pairs never hash the same input, and
 * equal-length hex strings compare like the numbers they encode.
 */
export function rendezvousScore(workload: string, nodeId: string): string {
  return createHash('sha256').update(`${workload}\0${nodeId}`).digest('hex');
}

/** Node ids in descending score for `workload`, ties (never seen for sha256) broken by node id. */
export function rankNodes(workload: string, nodeIds: Iterable<string>): string[] {
  const scored = [...nodeIds].map((nodeId) => ({ nodeId, score: rendezvousScore(workload, nodeId) }));
  scored.sort((a, b) => compareDesc(a.score, b.score) || compareAsc(a.nodeId, b.nodeId));
  return scored.map((entry) => entry.nodeId);
}

export function compareAsc(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function compareDesc(a: string, b: string): number {
  return compareAsc(b, a);
}
