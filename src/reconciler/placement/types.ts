import type {
  Capacity,
  EnrollmentRole,
  ObservedStatus,
  Phase,
  SnapshotRef,
  WorkloadSpec,
} from '../../state/schemas.js';

/**
 * Shared input and output shapes of the pure placement, ownership and move
 * logic (docs/placement.md). Nothing here does I/O: every function takes one
 * node's view of the cluster and returns a decision, so two nodes with the
 * same view compute the same decision.
 */

/** A node's liveness in the local failure detector (same strings as gossip/failure-detector.ts). */
export type Liveness = 'alive' | 'suspect' | 'dead';

/** This node's witness lease of one exclusive workload, as placement needs it. */
export interface LeaseView {
  /** A quorum of witnesses granted a live lease, not yet within the stop budget of its end. */
  mayRun: boolean;
  /** Why not (or who granted), for status output. */
  why: string;
}

/** A verified, active (unrevoked) enrolled node as placement sees it. */
export interface PlacementNode {
  nodeId: string;
  capacity: Capacity;
  labels: Readonly<Record<string, string>>;
  /** Operator drain flag: no new workloads, and its workloads move away one by one. */
  draining: boolean;
  /**
   * Enrollment role (docs/protocol.md, "Enrollment roles"); absent = node. A
   * `client` is never chosen and holds nothing sticky: the agent leaves
   * clients out of the input already, this keeps the rule in the pure core.
   */
  role?: EnrollmentRole;
}

/** nodeId → liveness. A node missing from the map counts as dead (never heard). */
export type LivenessView = ReadonlyMap<string, Liveness> | Readonly<Record<string, Liveness>>;

/** The observed document as ObservedView.listAll() returns it: nodeId → workload → status. */
export type ObservedDoc = ReadonlyMap<string, ReadonlyMap<string, ObservedStatus>>;

/** One node's status entry for one workload: a claim on it, an old record, or a leftover. */
export interface Claim {
  nodeId: string;
  phase: Phase;
  since: number;
  revision: number;
  snapshot: SnapshotRef | null;
  reason: string | null;
  /** The lease ballot it ran under (exclusive workloads), null when none is recorded. */
  epoch: number | null;
  /** True when the node is dead in the local view: its record describes the past. */
  stale: boolean;
}

/** Who holds a workload (see holders.ts for how conflicts are resolved). */
export interface Holder extends Claim {
  /** Every node's entry for this workload, best first; the holder is the first one that holds. */
  claims: readonly Claim[];
}

/** workload name → holder; workloads nobody holds are absent. */
export type Holders = ReadonlyMap<string, Holder>;

/** The minimum placement needs about a holder. */
export interface HolderRef {
  nodeId: string;
  phase: Phase;
  since: number;
  /**
   * It stopped the workload because it lost its lease (released, reason
   * "fenced"): it is not sticky, and other nodes are preferred, so that a
   * holder cut off from the witnesses hands the workload on (rule O4).
   */
  fenced?: boolean;
}

export type Assignment =
  | {
      node: string;
      /** True when the workload stays with its current holder. */
      sticky: boolean;
      /** Why the previous holder lost it, when there was one and it is not sticky. */
      movedBecause?: string;
    }
  | { pending: string; movedBecause?: string };

export interface PlacementResult {
  /** workload name → assignment, in workload name order. */
  assignments: ReadonlyMap<string, Assignment>;
  /** nodeId → capacity taken by the workloads assigned to it, in node id order (every input node but clients). */
  used: ReadonlyMap<string, Capacity>;
}

export interface PlacementInput {
  specs: readonly WorkloadSpec[];
  nodes: readonly PlacementNode[];
  liveness: LivenessView;
  holders: ReadonlyMap<string, HolderRef> | Readonly<Record<string, HolderRef>>;
}

/**
 * How a workload behaves when the cluster partitions. `exclusive` workloads
 * (persistent scratch, or volatile with on_partition = "stop") run on at most
 * one node: they need a quorum lease to run and a quorum-attested death to be
 * taken over. `relaxed` ones (volatile with on_partition = "keep") run on
 * every side of a partition that has a place for them.
 */
export type OwnershipClass = 'exclusive' | 'relaxed';

export function ownershipClass(spec: Pick<WorkloadSpec, 'scratchClass' | 'onPartition'>): OwnershipClass {
  // A persistent workload is always exclusive: its state directory must never
  // diverge on two nodes, whatever on_partition says.
  if (spec.scratchClass === 'persistent') return 'exclusive';
  return spec.onPartition === 'keep' ? 'relaxed' : 'exclusive';
}

export function livenessOf(view: LivenessView, nodeId: string): Liveness {
  if (view instanceof Map) return view.get(nodeId) ?? 'dead';
  const record = view as Readonly<Record<string, Liveness>>;
  // hasOwn: a node id like "constructor" must not find Object.prototype's.
  return Object.hasOwn(record, nodeId) ? (record[nodeId] ?? 'dead') : 'dead';
}
