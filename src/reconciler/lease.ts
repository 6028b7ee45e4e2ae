import type { FailureDetector, Liveness } from '../gossip/failure-detector.js';
import { type LeaseEvidence, leaseEvidence } from './placement/quorum.js';

/**
 * What the reconcile loop needs from the liveness layer to apply the
 * ownership rules of docs/placement.md: the quorum evidence that feeds the
 * holder's FenceTracker (L1-L3), the liveness view placement works on, when
 * each node was last heard, since when this node has listened (K3), and
 * since when a quorum attests each node dead (A2).
 *
 * Every time is on the same local clock as the loop's `now()`.
 *
 * Two implementations exist (config `services.lease`, `LeaseKind`):
 * - `HeartbeatLeaseSource` (heartbeat-lease.ts, the default): heartbeats
 *   carry `acks` and `dead` lists; `evidence` counts the peers that heard
 *   *our* heartbeats (by our send times) and `attestedDeadSince` the time a
 *   quorum's heartbeats listed a node's incarnation dead.
 * - `DetectorLeaseSource` (here): everything computed from this node's own
 *   failure detector. It is the weaker single-view rule described below.
 */
export interface LeaseSource {
  /** Short name of the rule set, shown in status output ("local-detector", "acked-heartbeats"). */
  readonly kind: string;
  /** FenceTracker input at `now`: does a quorum (self included) prove us, and as of when. */
  evidence(now: number): LeaseEvidence;
  /**
   * nodeId → liveness for the active enrolled nodes, this node `alive`.
   * A node left out counts as dead. The strong source keeps a node dead
   * until it returns with a higher incarnation (placement A1).
   */
  liveness(now: number): ReadonlyMap<string, Liveness>;
  /** nodeId → local time its last fresh heartbeat arrived. */
  lastHeard(): ReadonlyMap<string, number>;
  /** nodeId → local time at which a quorum was first seen attesting its current incarnation dead. */
  attestedDeadSince(now: number): ReadonlyMap<string, number>;
  /** When this node began listening to heartbeats (its liveness view is incomplete for dead_after after). */
  listeningSince(): number;
  /** Called when liveness changed (a node turned alive, suspect or dead), so the loop can act early. */
  onChange?(listener: () => void): () => void;
  /** Detach from the layers it listens to (the reconciler stopped). */
  close?(): void;
}

/** The built-in lease sources, by `LeaseSource.kind`. */
export const LEASE_KINDS = ['acked-heartbeats', 'local-detector', 'swim'] as const;
export type LeaseKind = (typeof LEASE_KINDS)[number];

export interface DetectorLeaseSourceOptions {
  selfId: string;
  detector: FailureDetector;
  /** Node ids of the active enrolled nodes (draining included), read on every call. */
  activeNodeIds: () => readonly string[];
  /** The clock the detector uses. */
  now: () => number;
}

/**
 * The single-view lease source (`services.lease = "local-detector"`):
 * everything comes from this node's own failure detector, heartbeats'
 * acknowledgements are ignored. Kept for comparison and as a fallback.
 *
 * - Quorum: this node plus the active enrolled peers it does not consider
 *   dead, against the active enrolled count. The proof date is the time we
 *   last *heard* the quorum-th freshest peer, so a cut-off holder fences
 *   fence_after after the last heartbeat it heard from a quorum (not
 *   dead_after + fence_after later: hole 1 of docs/placement.md is closed).
 *   What it cannot see is an asymmetric partition: a holder that hears a
 *   majority that does not hear it keeps its lease (hole 2).
 * - Attested dead = dead in the local detector (since it turned dead), or,
 *   for an active node never heard, dead_after after we began listening.
 *   One view, not a quorum's (hole 3): two nodes that disagree about a
 *   third may both act on their own view. The takeover extra wait still
 *   covers a holder that is really gone.
 * - A dead node that is heard again is alive again (same incarnation).
 */
export class DetectorLeaseSource implements LeaseSource {
  readonly kind = 'local-detector';
  private readonly options: DetectorLeaseSourceOptions;
  private readonly startedAt: number;

  constructor(options: DetectorLeaseSourceOptions) {
    this.options = options;
    this.startedAt = options.now();
  }

  listeningSince(): number {
    return this.startedAt;
  }

  evidence(now: number): LeaseEvidence {
    const { selfId, detector } = this.options;
    const active = new Set(this.options.activeNodeIds());
    // A node that is not (or no longer) an active enrolled node holds no lease.
    if (!active.has(selfId)) return { quorumVisible: false, provenAt: null };
    const members = new Map(detector.view().map((m) => [m.nodeId, m]));
    const peers = [...active]
      .filter((nodeId) => nodeId !== selfId)
      .map((nodeId) => {
        const member = members.get(nodeId);
        const heard =
          member !== undefined && member.state !== 'dead' ? Math.min(member.lastSeenAt, now) : null;
        return { nodeId, ackedSentAt: heard };
      });
    return leaseEvidence({ activeEnrolledCount: active.size, now, peers });
  }

  liveness(_now: number): ReadonlyMap<string, Liveness> {
    const out = new Map<string, Liveness>();
    const states = new Map(this.options.detector.view().map((m) => [m.nodeId, m.state]));
    for (const nodeId of this.options.activeNodeIds()) {
      if (nodeId === this.options.selfId) out.set(nodeId, 'alive');
      else {
        const state = states.get(nodeId);
        if (state !== undefined) out.set(nodeId, state);
      }
    }
    out.set(this.options.selfId, 'alive');
    return out;
  }

  lastHeard(): ReadonlyMap<string, number> {
    return new Map(this.options.detector.view().map((m) => [m.nodeId, m.lastSeenAt]));
  }

  attestedDeadSince(now: number): ReadonlyMap<string, number> {
    const { detector, selfId } = this.options;
    const members = new Map(detector.view().map((m) => [m.nodeId, m]));
    const neverHeardDeadAt = this.startedAt + detector.deadAfterMs;
    const out = new Map<string, number>();
    for (const nodeId of this.options.activeNodeIds()) {
      if (nodeId === selfId) continue;
      const member = members.get(nodeId);
      if (member === undefined) {
        if (now >= neverHeardDeadAt) out.set(nodeId, neverHeardDeadAt);
      } else if (member.state === 'dead') {
        out.set(nodeId, member.since);
      }
    }
    return out;
  }

  onChange(listener: () => void): () => void {
    const { detector } = this.options;
    const offs = (['alive', 'suspect', 'dead'] as const).map((state) => detector.on(state, () => listener()));
    return () => {
      for (const off of offs) off();
    };
  }
}
