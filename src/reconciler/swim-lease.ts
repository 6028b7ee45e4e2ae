import type { Liveness } from '../gossip/failure-detector.js';
import type { MemberState } from '../membership/swim-core.js';
import { Listeners } from '../util/listeners.js';
import type { LeaseSource } from './lease.js';
import { type LeaseEvidence, leaseEvidence } from './placement/quorum.js';

/** What the source needs of SWIM membership (SwimMembership, src/gossip/swim-transport.ts). */
export interface SwimLivenessView {
  stateOf(nodeId: string): { state: MemberState; incarnation: number } | null;
  onChange(listener: (event: { node: string; state: MemberState; incarnation: number }) => void): () => void;
}

export interface SwimLeaseSourceOptions {
  selfId: string;
  swim: SwimLivenessView;
  /** Node ids of the active enrolled nodes (draining included), read on every call. */
  activeNodeIds: () => readonly string[];
  /** The loop's clock: every time this source returns is on it. */
  now: () => number;
}

/**
 * The liveness view placement reads, from SWIM membership
 * (`services.lease = "swim"`, docs/reconciler.md "The liveness source";
 * docs/membership.md). SWIM's views converge by refutation and
 * dissemination, not by every node hearing every node, so this source
 * costs nothing per peer; heartbeats then travel without acks.
 *
 * - `liveness(now)`: SWIM's state of each active enrolled node (this node
 *   alive). A node SWIM does not know yet (just enrolled) is left out: dead
 *   until SWIM has a view of it.
 * - `lastHeard()`: SWIM has no per-peer "last heard" (at 1,000 nodes a node
 *   probes a given member once every few minutes), so a member SWIM holds
 *   alive counts as heard now, and a suspect or dead one as last heard when
 *   it stopped being alive in SWIM's view (for the dead_after silence that
 *   decides who tries a takeover; the witnesses decide who may).
 * - `attestedDeadSince`/`evidence`: kept for the interface, from the same
 *   view; the loop no longer reads them (docs/reconciler.md).
 */
export class SwimLeaseSource implements LeaseSource {
  readonly kind = 'swim';
  private readonly options: SwimLeaseSourceOptions;
  private readonly startedAt: number;
  /** nodeId → loop time it stopped being alive in SWIM's view (suspect or dead since). */
  private readonly leftAliveAt = new Map<string, number>();
  /** nodeId → loop time SWIM declared it dead. */
  private readonly deadSince = new Map<string, number>();
  // A failing listener must not stop the others or SWIM's event delivery.
  private readonly listeners = new Listeners<[]>(() => undefined);
  private readonly unsubscribe: () => void;

  constructor(options: SwimLeaseSourceOptions) {
    this.options = options;
    this.startedAt = options.now();
    this.unsubscribe = options.swim.onChange(({ node, state }) => {
      const at = this.options.now();
      if (state === 'alive') {
        this.leftAliveAt.delete(node);
        this.deadSince.delete(node);
      } else {
        if (!this.leftAliveAt.has(node)) this.leftAliveAt.set(node, at);
        if (state === 'dead' && !this.deadSince.has(node)) this.deadSince.set(node, at);
      }
      this.listeners.emit();
    });
  }

  listeningSince(): number {
    return this.startedAt;
  }

  liveness(_now: number): ReadonlyMap<string, Liveness> {
    const out = new Map<string, Liveness>();
    for (const nodeId of this.options.activeNodeIds()) {
      if (nodeId === this.options.selfId) continue;
      const view = this.options.swim.stateOf(nodeId);
      if (view !== null) out.set(nodeId, view.state);
    }
    out.set(this.options.selfId, 'alive');
    return out;
  }

  lastHeard(): ReadonlyMap<string, number> {
    const now = this.options.now();
    const out = new Map<string, number>();
    for (const nodeId of this.options.activeNodeIds()) {
      if (nodeId === this.options.selfId) continue;
      const view = this.options.swim.stateOf(nodeId);
      if (view === null) continue;
      out.set(nodeId, view.state === 'alive' ? now : (this.leftAliveAt.get(nodeId) ?? this.startedAt));
    }
    return out;
  }

  attestedDeadSince(_now: number): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const nodeId of this.options.activeNodeIds()) {
      if (nodeId === this.options.selfId) continue;
      if (this.options.swim.stateOf(nodeId)?.state !== 'dead') continue;
      out.set(nodeId, this.deadSince.get(nodeId) ?? this.startedAt);
    }
    return out;
  }

  evidence(now: number): LeaseEvidence {
    const active = this.options.activeNodeIds();
    if (!active.includes(this.options.selfId)) return { quorumVisible: false, provenAt: null };
    const heard = this.lastHeard();
    const peers = active
      .filter((nodeId) => nodeId !== this.options.selfId)
      .map((nodeId) => {
        const state = this.options.swim.stateOf(nodeId)?.state;
        const at = heard.get(nodeId);
        return {
          nodeId,
          ackedSentAt: state === undefined || state === 'dead' || at === undefined ? null : Math.min(at, now),
        };
      });
    return leaseEvidence({ activeEnrolledCount: active.length, now, peers });
  }

  onChange(listener: () => void): () => void {
    return this.listeners.add(listener);
  }

  close(): void {
    this.unsubscribe();
    this.listeners.clear();
  }
}
