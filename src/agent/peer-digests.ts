import type { GossipLayer, PeerDigestReport } from '../gossip/index.js';
import type { ClusterState } from '../state/cluster-state.js';
import { DOC_NAMES, type DocName } from '../state/names.js';

/** What the last accepted heartbeat or SWIM probe of a peer said about its documents. */
export interface PeerDigestView {
  nodeId: string;
  digests: Record<DocName, string>;
  /** Local time the report arrived. */
  receivedAt: number;
  /** Documents whose digest differs from ours right now. */
  differing: DocName[];
  /** Local time since when this peer has been seen differing (null when in sync). */
  differingSince: number | null;
}

export interface ConvergenceEstimate {
  /** Every peer heard from recently shows our digests. */
  converged: boolean;
  /**
   * How long the longest-standing difference has lasted, ms: a lower bound of
   * the time the cluster takes to agree on the present state, refreshed on
   * every report. 0 when converged.
   */
  lagMs: number;
  peers: Array<{ nodeId: string; inSync: boolean; differing: DocName[]; heardAgoMs: number }>;
}

export interface PeerDigestsOptions {
  state: ClusterState;
  gossip: Pick<GossipLayer, 'onPeerDigests'>;
  /**
   * Reports older than this are left out of the estimate (their sender is
   * likely gone); a function when it follows the heartbeat interval.
   */
  staleAfterMs: number | (() => number);
  now?: () => number;
}

/**
 * Keeps each peer's latest document digests from its accepted heartbeats
 * and SWIM probes (GossipLayer.onPeerDigests), so the control API can say whether this node
 * agrees with the others and for how long it has not.
 */
export class PeerDigests {
  private readonly state: ClusterState;
  private readonly gossip: Pick<GossipLayer, 'onPeerDigests'>;
  private readonly staleAfterMs: () => number;
  private readonly now: () => number;
  private readonly peers = new Map<string, { digests: Record<DocName, string>; receivedAt: number }>();
  private readonly differingSince = new Map<string, number>();
  private unsubscribe: (() => void) | null = null;

  constructor(options: PeerDigestsOptions) {
    this.state = options.state;
    this.gossip = options.gossip;
    const stale = options.staleAfterMs;
    this.staleAfterMs = typeof stale === 'number' ? () => stale : stale;
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.unsubscribe ??= this.gossip.onPeerDigests((report) => this.observe(report));
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  /** The latest digests of `nodeId`, if a heartbeat or probe reported them. */
  get(nodeId: string): PeerDigestView | undefined {
    const peer = this.peers.get(nodeId);
    if (!peer) return undefined;
    const differing = this.compare(nodeId, peer.digests);
    return { nodeId, ...peer, differing, differingSince: this.differingSince.get(nodeId) ?? null };
  }

  estimate(): ConvergenceEstimate {
    const now = this.now();
    const staleAfterMs = this.staleAfterMs();
    const peers: ConvergenceEstimate['peers'] = [];
    let lagMs = 0;
    for (const [nodeId, peer] of [...this.peers].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const heardAgoMs = now - peer.receivedAt;
      if (heardAgoMs > staleAfterMs) continue;
      const differing = this.compare(nodeId, peer.digests);
      if (differing.length > 0) lagMs = Math.max(lagMs, now - (this.differingSince.get(nodeId) ?? now));
      peers.push({ nodeId, inSync: differing.length === 0, differing, heardAgoMs });
    }
    return { converged: peers.every((p) => p.inSync), lagMs, peers };
  }

  private observe(report: PeerDigestReport): void {
    const { nodeId, digests } = report;
    this.peers.set(nodeId, { digests, receivedAt: this.now() });
    this.compare(nodeId, digests);
  }

  /** Docs that differ from ours; keeps the "differing since" clock of the peer up to date. */
  private compare(nodeId: string, digests: Record<DocName, string>): DocName[] {
    const differing = DOC_NAMES.filter((doc) => digests[doc] !== this.state.digest(doc));
    if (differing.length === 0) this.differingSince.delete(nodeId);
    else if (!this.differingSince.has(nodeId)) this.differingSince.set(nodeId, this.now());
    return differing;
  }
}
