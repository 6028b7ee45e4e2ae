import type { FailureDetector, Liveness } from '../gossip/failure-detector.js';
import type { HeartbeatLedger } from '../gossip/heartbeat-ledger.js';
import { Listeners } from '../util/listeners.js';
import type { LeaseSource } from './lease.js';
import { type LeaseEvidence, leaseEvidence, majority } from './placement/quorum.js';

export interface HeartbeatLeaseSourceOptions {
  selfId: string;
  /** The gossip layer's heartbeat ledger (GossipLayer.heartbeatLedger). */
  ledger: HeartbeatLedger;
  /** The failure detector the ledger works with. */
  detector: FailureDetector;
  /** Node ids of the active enrolled nodes (draining included), read on every call. */
  activeNodeIds: () => readonly string[];
  /** The detector's clock. */
  now: () => number;
  /**
   * Rejoin with a higher incarnation once a peer lists ours dead and our
   * lease under it has been gone for dead_after (placement A3); default true.
   */
  rejoin?: boolean;
}

/**
 * The lease from acknowledged heartbeats (docs/placement.md L1-L3, A1-A2):
 *
 * - Evidence counts the peers that *hear us*: a peer's latest heartbeat
 *   acknowledges one of ours, and the send log turns that into "P heard us
 *   as of T" on our own clock. A holder that hears a majority which no
 *   longer hears it (asymmetric partition, hole 2) loses its lease
 *   fence_after after the last heartbeat a quorum acknowledged.
 * - Attested dead: a quorum (self included) lists a node's current
 *   incarnation dead; `attestedDeadSince` is the local time we first saw it
 *   (hole 3). Attestations count from our own ledger and from the latest
 *   heartbeats of the active peers we do not consider dead (a peer that
 *   restarted forgot its promises; its new heartbeats replace the old ones).
 * - A declared-dead incarnation is never acknowledged again and stays in
 *   our `dead` list (A1, HeartbeatLedger) until the node returns with a
 *   higher incarnation; the placement liveness view still follows the
 *   detector (see `liveness`).
 * - Rejoin (A3): a peer lists our incarnation dead, so it will never ack it
 *   again. Once our lease under that incarnation has been gone for
 *   dead_after (> fence_after: the reconcile loop has seen the lapse and
 *   fenced), we start a higher incarnation; otherwise such a node would stay
 *   dead in its peers' views for good after a healed partition.
 *
 * `evidence` is the one call with a side effect (the rejoin), as it is the
 * one the loop makes every tick.
 */
export class HeartbeatLeaseSource implements LeaseSource {
  readonly kind = 'acked-heartbeats';
  private readonly options: HeartbeatLeaseSourceOptions;
  private readonly ledger: HeartbeatLedger;
  /** nodeId → the incarnation a quorum attests dead and the local time we first saw that. */
  private readonly attested = new Map<string, { incarnation: number; since: number }>();
  /** Newest provenAt under the current incarnation. */
  private lastProven: { incarnation: number; at: number } | null = null;
  // A failing listener must not stop the others.
  private readonly listeners = new Listeners<[]>(() => undefined);
  private readonly unsubscribes: (() => void)[] = [];

  constructor(options: HeartbeatLeaseSourceOptions) {
    this.options = options;
    this.ledger = options.ledger;
    this.ledger.setExpectedNodes(options.activeNodeIds);
    this.unsubscribes.push(
      this.ledger.onReport((_peer, affected) => {
        if (this.evaluate(affected, this.options.now())) this.notify();
      }),
      this.ledger.onRejoin(() => this.notify()),
    );
    for (const state of ['alive', 'suspect', 'dead'] as const) {
      this.unsubscribes.push(
        options.detector.on(state, (event) => {
          this.evaluate([event.nodeId], this.options.now());
          this.notify();
        }),
      );
    }
  }

  /** Detaches from the ledger and detector. */
  close(): void {
    for (const off of this.unsubscribes.splice(0)) off();
    this.listeners.clear();
  }

  listeningSince(): number {
    return this.ledger.startedAt;
  }

  evidence(now: number): LeaseEvidence {
    const { selfId } = this.options;
    const active = new Set(this.options.activeNodeIds());
    if (!active.has(selfId)) return { quorumVisible: false, provenAt: null };
    const incarnation = this.ledger.incarnation;
    const peers = [...active]
      .filter((nodeId) => nodeId !== selfId)
      .map((nodeId) => ({ nodeId, ackedSentAt: this.ackedSentAt(nodeId, incarnation, now) }));
    const evidence = leaseEvidence({ activeEnrolledCount: active.size, now, peers });
    if (evidence.provenAt !== null) {
      const last = this.lastProven;
      if (last === null || last.incarnation !== incarnation || evidence.provenAt > last.at) {
        this.lastProven = { incarnation, at: evidence.provenAt };
      }
    }
    if (this.options.rejoin !== false) this.maybeRejoin(active, incarnation, now);
    return evidence;
  }

  /** Local send time of our newest heartbeat that `nodeId`'s latest heartbeat acknowledges. */
  ackedSentAt(nodeId: string, incarnation: number, now: number): number | null {
    const ack = this.ledger.report(nodeId)?.ackOfSelf;
    if (ack === undefined || ack[0] !== incarnation) return null;
    const at = this.ledger.sentAt(incarnation, ack[1]);
    return at === undefined ? null : Math.min(at, now);
  }

  /**
   * The detector's view: a node declared dead and heard again with the same
   * incarnation is live here, although we never ack it again (A1 holds in
   * the ledger, for acks and attestations). Keeping it dead here, as A1 was
   * first written, broke safety in the flapping-node scenario: a node that
   * alone had declared the current holder dead (a minority, so the holder
   * kept its lease and had no reason to rejoin) ranked the holder's records
   * below its own stale entry (rule H: live before dead) and restarted the
   * workload beside it. A holder that a quorum declared dead cannot renew
   * its lease under that incarnation anyway, and rejoins.
   */
  liveness(_now: number): ReadonlyMap<string, Liveness> {
    const { selfId, detector } = this.options;
    const out = new Map<string, Liveness>();
    for (const nodeId of this.options.activeNodeIds()) {
      if (nodeId === selfId) continue;
      const member = detector.member(nodeId);
      if (member !== undefined) out.set(nodeId, member.state); // never heard: left out, dead
    }
    out.set(selfId, 'alive');
    return out;
  }

  lastHeard(): ReadonlyMap<string, number> {
    return new Map(this.options.detector.view().map((m) => [m.nodeId, m.lastSeenAt]));
  }

  attestedDeadSince(now: number): ReadonlyMap<string, number> {
    const active = this.options.activeNodeIds();
    this.evaluate(active, now);
    const out = new Map<string, number>();
    for (const nodeId of active) {
      const entry = this.attested.get(nodeId);
      if (entry !== undefined) out.set(nodeId, entry.since);
    }
    return out;
  }

  /** How many active nodes (self included) attest `nodeId`'s current incarnation dead right now. */
  attesters(nodeId: string, now: number = this.options.now()): string[] {
    const { selfId, detector } = this.options;
    const current = this.ledger.knownIncarnation(nodeId);
    const out: string[] = [];
    if (this.ledger.ownDeadIncarnation(nodeId, now) === current) out.push(selfId);
    for (const peer of this.options.activeNodeIds()) {
      if (peer === selfId || peer === nodeId) continue;
      const report = this.ledger.report(peer);
      if (report === undefined || report.dead.get(nodeId) !== current) continue;
      // A peer we consider dead may have restarted and forgotten its promise.
      if (detector.state(peer) === 'dead' || this.ledger.isDeclaredDead(peer, report.incarnation)) continue;
      out.push(peer);
    }
    return out;
  }

  onChange(listener: () => void): () => void {
    return this.listeners.add(listener);
  }

  /** Re-evaluates attestations of `nodeIds`; true when one began. */
  private evaluate(nodeIds: Iterable<string>, now: number): boolean {
    const active = this.options.activeNodeIds();
    const activeSet = new Set(active);
    if (!activeSet.has(this.options.selfId) || activeSet.size === 0) {
      this.attested.clear();
      return false;
    }
    const needed = majority(activeSet.size);
    let began = false;
    for (const nodeId of nodeIds) {
      if (nodeId === this.options.selfId || !activeSet.has(nodeId)) {
        this.attested.delete(nodeId);
        continue;
      }
      const incarnation = this.ledger.knownIncarnation(nodeId);
      if (this.attesters(nodeId, now).length >= needed) {
        const entry = this.attested.get(nodeId);
        if (entry === undefined || entry.incarnation !== incarnation) {
          this.attested.set(nodeId, { incarnation, since: now });
          began = true;
        }
      } else {
        this.attested.delete(nodeId);
      }
    }
    for (const nodeId of this.attested.keys()) if (!activeSet.has(nodeId)) this.attested.delete(nodeId);
    return began;
  }

  private maybeRejoin(active: ReadonlySet<string>, incarnation: number, now: number): void {
    const { selfId } = this.options;
    const listedDead = [...active].some(
      (peer) => peer !== selfId && this.ledger.report(peer)?.dead.get(selfId) === incarnation,
    );
    if (!listedDead) return;
    const proven = this.lastProven?.incarnation === incarnation ? this.lastProven.at : null;
    const since = Math.max(proven ?? this.ledger.incarnationSince, this.ledger.incarnationSince);
    if (now - since < this.options.detector.deadAfterMs) return;
    this.ledger.rejoin();
  }

  private notify(): void {
    this.listeners.emit();
  }
}
