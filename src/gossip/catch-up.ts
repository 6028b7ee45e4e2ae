import type { Logger } from 'pino';
import type { DigestWatch, PeerDigestReport } from './digest-watch.js';
import type { FailureDetector } from './failure-detector.js';

export interface CatchUpOptions {
  detector: FailureDetector;
  /** The peer id a node's heartbeats are signed with, once heard. */
  peerIdOf: (nodeId: string) => string | undefined;
  digestWatch: Pick<DigestWatch, 'matchesOurs'>;
  /** One anti-entropy session with the peer. */
  syncWith: (peerId: string) => Promise<unknown>;
  logger: Logger;
  now: () => number;
}

/**
 * The gossip layer's catch-up policy (docs/protocol.md, "Anti-entropy"):
 * which peers count as returning from a silence, and an immediate sync with
 * a returned node whose digests differ from ours.
 */
export class CatchUp {
  private readonly options: CatchUpOptions;
  /** nodeId → when it came back from dead (this.now() clock); watched for dead_after. */
  private readonly returned = new Map<string, number>();
  /** A catch-up sync with a node heard again after silence is under way (at most one at a time). */
  private catchingUp = false;
  /** When start() ran; a peer unheard for dead_after since then counts as returned. */
  private startedAtMs = 0;
  private running = false;
  private offAlive: (() => void) | null = null;

  constructor(options: CatchUpOptions) {
    this.options = options;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.startedAtMs = this.options.now();
    this.offAlive = this.options.detector.on('alive', (event) => {
      // Not on suspect → alive: a loaded event loop makes heartbeats late and
      // nodes flap through suspect; the digest rule covers short silences.
      if (event.previous === 'dead') this.returned.set(event.nodeId, this.options.now());
    });
  }

  stop(): void {
    this.running = false;
    this.offAlive?.();
    this.offAlive = null;
    this.returned.clear();
  }

  /**
   * A node heard again after being dead (a healed partition, a restart)
   * very likely holds writes we lack and lacks ours. While its heartbeats
   * show other digests than ours, sync with it at once instead of waiting
   * out the digest grace: without this, after a heal only the two ends of
   * the first connection across merged at once, and everyone else waited a
   * grace period. One catch-up at a time; a returned node whose heartbeat
   * came while another ran is tried again at its next heartbeat, for
   * dead_after after its return.
   */
  observe(report: PeerDigestReport): void {
    const since = this.returned.get(report.nodeId);
    if (since === undefined) return;
    if (this.options.now() - since > this.options.detector.deadAfterMs) {
      this.returned.delete(report.nodeId);
      return;
    }
    // Equal now is no reason to stop watching: right after a heal a relay
    // can make us equal to a returned node before that node has merged the
    // other side, and its digests then move away from ours again. Forgetting
    // it at the first equal heartbeat left such differences to the digest
    // grace (seconds in the partition-heal scenario).
    if (this.options.digestWatch.matchesOurs(report.digests)) return;
    this.catchUpWith(report.nodeId, report.peerId);
  }

  private catchUpWith(nodeId: string, peerId: string): void {
    if (this.catchingUp || !this.running) return;
    this.catchingUp = true;
    this.options
      .syncWith(peerId)
      .catch((err: unknown) => this.options.logger.debug({ err, peerNode: nodeId }, 'catch-up sync failed'))
      .finally(() => {
        this.catchingUp = false;
      });
  }

  /**
   * The node behind `peerId` is dead in our view, or returned from dead and
   * still differs from us: what we learn from it, our side most likely lacks.
   * So is a node we have never heard although we have run for dead_after:
   * to us it was dead all along (a partition that began before its first
   * heartbeat reached us, as when a cluster splits right after it started).
   * Not before: what a node that just started learns by sync is old news to
   * everyone else.
   */
  isReturning(peerId: string): boolean {
    let heard = false;
    for (const member of this.options.detector.view()) {
      if (this.options.peerIdOf(member.nodeId) !== peerId) continue;
      heard = true;
      if (member.state === 'dead' || this.returned.has(member.nodeId)) return true;
    }
    return !heard && this.options.now() - this.startedAtMs >= this.options.detector.deadAfterMs;
  }

  /** True when a fresh heartbeat of the node behind `peerId` arrived (through any path). */
  isHeard(peerId: string): boolean {
    return this.options.detector
      .view()
      .some((member) => member.state === 'alive' && this.options.peerIdOf(member.nodeId) === peerId);
  }
}
