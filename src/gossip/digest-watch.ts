import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import type { ClusterState } from '../state/cluster-state.js';
import { DOC_NAMES, type DocName } from '../state/names.js';
import { counterIn } from '../util/metrics.js';

/**
 * A peer's document digests as one of its messages reported them: a
 * heartbeat on the liveness topic, or a SWIM ping or ack
 * (docs/protocol.md, "Membership probes"). Both carry the sender's digests,
 * so both can show that two nodes differ.
 */
export interface PeerDigestReport {
  nodeId: string;
  /** The libp2p peer id that sent it (the heartbeat's signer, the probe's authenticated connection). */
  peerId: string;
  digests: Record<DocName, string>;
  via: 'heartbeat' | 'probe';
}

export interface DigestWatchOptions {
  state: ClusterState;
  logger: Logger;
  registry: Registry;
  /** How long a peer's digests may differ from ours before we sync with it, ms. */
  graceMs: number;
  now: () => number;
  /** Called with the libp2p peer id of a node whose digests stayed different for longer than the grace. */
  requestSync: (peerId: string) => void;
}

export const DEFAULT_SYNC_GRACE_MS = 2000;

/**
 * Anti-entropy by digest (docs/protocol.md, "Anti-entropy"): asks for a
 * sync with a peer whose reported digests have differed from ours, unchanged,
 * for longer than a grace.
 *
 * A difference counts only while the peer's digests stay the same: a peer
 * whose digests keep changing is receiving writes, and a snapshot of two
 * nodes in the middle of a write burst almost always differs. Syncing on
 * every such report cost a session per peer per grace during any sustained
 * write load; a difference that survives the burst is caught once the peer
 * settles (or by the periodic sync meanwhile).
 */
export class DigestWatch {
  private readonly options: DigestWatchOptions;
  private readonly logger: Logger;
  private readonly syncs: Counter;
  /** nodeId → its (unchanged) differing digests and the local time they were first seen. */
  private readonly mismatch = new Map<string, { theirs: string; since: number }>();

  constructor(options: DigestWatchOptions) {
    if (!(Number.isFinite(options.graceMs) && options.graceMs >= 0))
      throw new RangeError(`graceMs must be ≥ 0, got ${options.graceMs}`);
    this.options = options;
    this.logger = options.logger;
    this.syncs = counterIn(options.registry, {
      name: 'silo_liveness_digest_syncs_total',
      help: 'Syncs requested because a peer digest (heartbeat or SWIM probe) differed for longer than the grace',
    });
  }

  /** True when `digests` equal ours for every document. */
  matchesOurs(digests: Record<DocName, string>): boolean {
    const ours = this.options.state.digestsAll();
    return DOC_NAMES.every((doc) => digests[doc] === ours[doc]);
  }

  observe(report: PeerDigestReport): void {
    if (this.matchesOurs(report.digests)) {
      this.mismatch.delete(report.nodeId);
      return;
    }
    const now = this.options.now();
    const theirs = DOC_NAMES.map((doc) => report.digests[doc]).join(' ');
    const entry = this.mismatch.get(report.nodeId);
    if (entry === undefined || entry.theirs !== theirs) {
      this.mismatch.set(report.nodeId, { theirs, since: now });
      return;
    }
    if (now - entry.since < this.options.graceMs) return;
    // Restart the grace so that a lasting difference (e.g. one side cannot
    // apply the other's update) costs one sync per grace, not one per report.
    entry.since = now;
    this.syncs.inc();
    this.logger.debug(
      { peerNode: report.nodeId, peer: report.peerId, via: report.via },
      'digests differ beyond grace; syncing',
    );
    this.options.requestSync(report.peerId);
  }
}
