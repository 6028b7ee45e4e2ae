import type { Liveness } from '../gossip/failure-detector.js';
import type { ObservedStatus, Phase, WorkloadSpec } from '../state/schemas.js';
import { livenessOf, rankNodes } from './placement/index.js';

/** Observed phases whose node ran the workload's current revision (it has the image). */
const RAN_PHASES = new Set<Phase>(['starting', 'running', 'stopping', 'released', 'failed']);

export interface ImageHintInput {
  selfId: string;
  spec: Pick<WorkloadSpec, 'imageDigest'>;
  /** Nodes whose image store holds the image (the observed document's image records). */
  holders: Iterable<string>;
  /** Every spec, by workload name. */
  specs: ReadonlyMap<string, Pick<WorkloadSpec, 'imageDigest' | 'revision'>>;
  /** Every node's observed statuses. */
  observed: Iterable<[string, ReadonlyMap<string, Pick<ObservedStatus, 'phase' | 'revision'>>]>;
  liveness: ReadonlyMap<string, Liveness>;
}

/**
 * Nodes to ask for an image: those whose store holds it (connected to us or
 * not), then those that ran a workload at a revision whose spec names it;
 * dead ones last, this node never. Peers we are merely connected to come
 * after these (fetchFromPeers).
 */
export function imageHintNodes(input: ImageHintInput): string[] {
  const nodes = new Set<string>(input.holders);
  for (const [nodeId, statuses] of input.observed) {
    for (const [name, status] of statuses) {
      const other = input.specs.get(name);
      if (
        other?.imageDigest === input.spec.imageDigest &&
        other.revision === status.revision &&
        RAN_PHASES.has(status.phase)
      ) {
        nodes.add(nodeId);
      }
    }
  }
  nodes.delete(input.selfId);
  const dead = (nodeId: string) => Number(livenessOf(input.liveness, nodeId) === 'dead');
  return [...nodes].sort((a, b) => dead(a) - dead(b));
}

/**
 * Where to look for a snapshot of `holderId`'s: the holder itself (first
 * while it is not dead in our view, else last: a dial to a dead node can
 * take long), then the other active nodes in the workload's rendezvous
 * order (its replicas come first there); never this node.
 */
export function snapshotSourceNodes(input: {
  selfId: string;
  workload: string;
  holderId: string;
  activeNodeIds: readonly string[];
  liveness: ReadonlyMap<string, Liveness>;
}): string[] {
  const others = input.activeNodeIds.filter((id) => id !== input.holderId && id !== input.selfId);
  const ordered = rankNodes(input.workload, others);
  const holderDead = livenessOf(input.liveness, input.holderId) === 'dead';
  return holderDead ? [...ordered, input.holderId] : [input.holderId, ...ordered];
}
