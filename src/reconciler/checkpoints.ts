import type { SnapshotRef } from '../state/schemas.js';
import { rankNodes } from './placement/rendezvous.js';

/**
 * Where checkpoints live besides their holder (docs/placement.md, "Open
 * questions", answered): the next `count` live nodes in the workload's
 * rendezvous order, the holder left out, pull every checkpoint the holder
 * announces (pull model, `/silo/scratch/1`) and keep it. Placement ranks
 * takeover targets by the same order, so the node that takes a workload
 * over from a dead holder is usually a replica already and restores
 * without any transfer; any other taker asks the replicas in this order.
 */
export function replicaNodes(
  workload: string,
  holderId: string,
  candidateIds: Iterable<string>,
  count: number,
): string[] {
  if (count <= 0) return [];
  const others = [...candidateIds].filter((nodeId) => nodeId !== holderId);
  return rankNodes(workload, others).slice(0, count);
}

/**
 * The checkpoints recently announced per workload, newest first. A holder
 * can die between announcing a checkpoint and a replica pulling it; the
 * taker then falls back to the newest older one a replica does have (they
 * keep what they pulled until garbage collection, which spares these).
 */
export class CheckpointHistory {
  private readonly byWorkload = new Map<string, SnapshotRef[]>();

  constructor(private readonly keep = 4) {}

  record(workload: string, ref: SnapshotRef): void {
    const list = this.byWorkload.get(workload) ?? [];
    if (list.some((known) => known.digest === ref.digest)) return;
    list.push(ref);
    list.sort((a, b) => b.at - a.at);
    this.byWorkload.set(workload, list.slice(0, this.keep));
  }

  /** Checkpoints of `workload` older than `ref`, newest first. */
  olderThan(workload: string, ref: SnapshotRef): SnapshotRef[] {
    return (this.byWorkload.get(workload) ?? []).filter(
      (known) => known.digest !== ref.digest && known.at <= ref.at,
    );
  }

  digests(): Set<string> {
    const out = new Set<string>();
    for (const list of this.byWorkload.values()) for (const ref of list) out.add(ref.digest);
    return out;
  }

  /** Drops workloads that no longer exist. */
  retain(workloads: ReadonlySet<string>): void {
    for (const name of [...this.byWorkload.keys()]) if (!workloads.has(name)) this.byWorkload.delete(name);
  }
}
