import type { OwnershipClass } from './types.js';

/**
 * Quorum, lease and takeover rules (docs/placement.md, "Rules"). Pure
 * functions and one small state machine fed with the caller's clock; nothing
 * here reads a clock or sets a timer.
 *
 * All times are milliseconds on the calling node's own clock. Only
 * differences of one node's own readings are ever compared, so clock offsets
 * between nodes do not matter; clock *rates* do, bounded by `clockDriftPpm`.
 */

function requireCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`${name} must be an integer >= 0, got ${value}`);
}

function requireTime(name: string, value: number): void {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new RangeError(`${name} must be a finite number of ms, got ${String(value)}`);
  }
}

/** Smallest number of nodes that is more than half of `activeEnrolledCount`. */
export function majority(activeEnrolledCount: number): number {
  requireCount('activeEnrolledCount', activeEnrolledCount);
  if (activeEnrolledCount === 0) throw new RangeError('activeEnrolledCount must be at least 1 (this node)');
  return Math.floor(activeEnrolledCount / 2) + 1;
}

/**
 * More than half of the active enrolled nodes, this node included. With an
 * even count a half is not enough: two halves of a 2|2 split must not both
 * think they are the quorum.
 */
export function hasQuorum(activeEnrolledCount: number, aliveIncludingSelf: number): boolean {
  requireCount('aliveIncludingSelf', aliveIncludingSelf);
  const needed = majority(activeEnrolledCount);
  if (aliveIncludingSelf < 1)
    throw new RangeError('aliveIncludingSelf counts this node, so it is at least 1');
  if (aliveIncludingSelf > activeEnrolledCount) {
    throw new RangeError(
      `aliveIncludingSelf (${aliveIncludingSelf}) exceeds activeEnrolledCount (${activeEnrolledCount}): count enrolled nodes only`,
    );
  }
  return aliveIncludingSelf >= needed;
}

/**
 * A node is dead for takeover purposes only when a quorum (the deciding node
 * included) reports it dead for its current incarnation. Each reporter
 * promises never to acknowledge that incarnation again, so the reports are
 * permanent facts and any lease the node could hold needs one of them.
 */
export function isAttestedDead(activeEnrolledCount: number, reportersIncludingSelf: number): boolean {
  requireCount('reportersIncludingSelf', reportersIncludingSelf);
  if (reportersIncludingSelf === 0) return false;
  return hasQuorum(activeEnrolledCount, reportersIncludingSelf);
}

/** What a peer's latest heartbeat says about this node. */
export interface PeerAck {
  nodeId: string;
  /**
   * Local send time of this node's own heartbeat that the peer's latest
   * heartbeat acknowledges (it lists our incarnation and a seq; we look the
   * seq up in our send log). null when it acknowledges none of ours.
   */
  ackedSentAt: number | null;
}

export interface LeaseEvidence {
  /** A quorum (this node included) has acknowledged some heartbeat of ours. */
  quorumVisible: boolean;
  /**
   * The newest send time T such that a quorum heard a heartbeat of ours sent
   * at T or later: our lease is proven as of T (our clock). null without quorum.
   */
  provenAt: number | null;
}

/**
 * Acknowledged quorum: counts the peers that heard us, not the peers we hear.
 * "I see a majority" is not enough for a holder: in an asymmetric partition
 * it may hear a majority that cannot hear it, and after an event-loop stall
 * its view of who is alive is stale. A peer's acknowledgement of a heartbeat
 * we sent at T proves the peer heard us at T or later, whatever the network
 * delay, and T is on our own clock, so a stalled node wakes up to old proofs.
 */
export function leaseEvidence(input: {
  activeEnrolledCount: number;
  now: number;
  peers: readonly PeerAck[];
}): LeaseEvidence {
  requireTime('now', input.now);
  const needPeers = majority(input.activeEnrolledCount) - 1;
  if (!Array.isArray(input.peers)) throw new TypeError('leaseEvidence: peers must be an array');
  if (input.peers.length > input.activeEnrolledCount - 1) {
    throw new RangeError(
      `leaseEvidence: ${input.peers.length} peers but only ${input.activeEnrolledCount - 1} other enrolled nodes`,
    );
  }
  const seen = new Set<string>();
  const acked: number[] = [];
  for (const peer of input.peers) {
    if (seen.has(peer.nodeId)) throw new RangeError(`leaseEvidence: peer ${peer.nodeId} listed twice`);
    seen.add(peer.nodeId);
    if (peer.ackedSentAt === null) continue;
    requireTime(`ackedSentAt of ${peer.nodeId}`, peer.ackedSentAt);
    if (peer.ackedSentAt > input.now) {
      throw new RangeError(`leaseEvidence: ${peer.nodeId} acknowledges a heartbeat sent in the future`);
    }
    acked.push(peer.ackedSentAt);
  }
  if (needPeers === 0) return { quorumVisible: true, provenAt: input.now };
  if (acked.length < needPeers) return { quorumVisible: false, provenAt: null };
  acked.sort((a, b) => b - a);
  return { quorumVisible: true, provenAt: acked[needPeers - 1]! };
}

/** The timing parameters of ownership (config: gossip.dead_after, services.fence_after, ...). */
export interface OwnershipTiming {
  /** Silence after which the failure detector declares a node dead. */
  deadAfterMs: number;
  /** A holder whose newest quorum proof is this old stops its exclusive workloads. */
  fenceAfterMs: number;
  /** How long a claim must be visible (and unchallenged) before the claimant starts the process. */
  claimSettleMs: number;
  /** Added to a workload's stop_timeout: SIGKILL and reaping, plus how late a fence check may run. */
  fenceSlackMs: number;
  /** Bound on how much two nodes' clock rates differ, in parts per million. */
  clockDriftPpm: number;
}

export const DEFAULT_OWNERSHIP_TIMING: Readonly<OwnershipTiming> = {
  deadAfterMs: 10_000,
  fenceAfterMs: 6000,
  claimSettleMs: 3000,
  fenceSlackMs: 2000,
  clockDriftPpm: 1000,
};

export function checkTiming(timing: OwnershipTiming): OwnershipTiming {
  for (const key of ['deadAfterMs', 'fenceAfterMs', 'claimSettleMs', 'fenceSlackMs'] as const) {
    const value = timing[key];
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new RangeError(`timing.${key} must be a finite number of ms >= 0, got ${String(value)}`);
    }
  }
  if (!(timing.fenceAfterMs > 0 && timing.fenceAfterMs < timing.deadAfterMs)) {
    throw new RangeError(
      `timing.fenceAfterMs (${timing.fenceAfterMs}) must be > 0 and < deadAfterMs (${timing.deadAfterMs})`,
    );
  }
  const ppm = timing.clockDriftPpm;
  if (typeof ppm !== 'number' || !Number.isFinite(ppm) || ppm < 0 || ppm >= 100_000) {
    throw new RangeError(`timing.clockDriftPpm must be in [0, 100000), got ${String(ppm)}`);
  }
  return timing;
}

/**
 * How long, after a quorum attests the holder dead, a taker still waits
 * before it claims an exclusive workload. The holder's last process is gone
 * at most (fence_after + stop_timeout + fence_slack) after the newest
 * heartbeat a quorum acknowledged, measured on the holder's clock; an
 * attester reports it dead no earlier than dead_after after it last heard
 * it, on the attester's clock. fence_after < dead_after alone does not cover
 * the stop itself (a stop_timeout of 30 s dwarfs the 4 s gap of the default
 * config) nor clock rate differences, so the taker waits out the rest:
 *
 *   extra = max(0, (fence_after + stop_timeout + fence_slack) × (1+ρ)/(1−ρ) − dead_after)
 */
export function takeoverExtraWaitMs(timing: OwnershipTiming, stopTimeoutMs: number): number {
  checkTiming(timing);
  requireTime('stopTimeoutMs', stopTimeoutMs);
  const rho = timing.clockDriftPpm / 1e6;
  const holderGoneAfter =
    (timing.fenceAfterMs + stopTimeoutMs + timing.fenceSlackMs) * ((1 + rho) / (1 - rho));
  return Math.max(0, Math.ceil(holderGoneAfter - timing.deadAfterMs));
}

export type TakeoverDecision = { allowed: true } | { allowed: false; reason: string; retryAt: number | null };

export interface TakeoverInput {
  now: number;
  ownership: OwnershipClass;
  /** Local time the holder was last heard (failure detector lastSeenAt); for a never-heard node, when we started listening. */
  holderLastHeardAt: number;
  deadAfterMs: number;
  /** This node holds a quorum lease (FenceTracker state). */
  quorumVisible: boolean;
  /** Local time at which we first saw a quorum attest the holder's incarnation dead; null if not (yet). */
  holderAttestedDeadSince: number | null;
  /** takeoverExtraWaitMs for the workload. */
  extraWaitMs: number;
  /**
   * claim_settle: the claimer starts no earlier than this after its claim
   * (K1), so the claim may come this much before the extra wait ends and the
   * start still waits it out. Default 0 (claim only after the whole wait).
   */
  claimSettleMs?: number;
}

/**
 * May this node begin an unplanned takeover (write its claim) of a workload
 * whose holder has gone silent?
 * - relaxed (volatile, on_partition = "keep"): after dead_after of silence in
 *   the local view; no quorum needed, each side of a partition runs its own.
 * - exclusive: additionally this node holds a quorum lease, a quorum attests
 *   the holder dead, and the extra wait for the holder's stop has passed by
 *   the time the claim can start (claim + claim_settle): the claim itself
 *   runs nothing, so settling overlaps the wait instead of following it.
 */
export function mayTakeOver(input: TakeoverInput): TakeoverDecision {
  requireTime('now', input.now);
  requireTime('holderLastHeardAt', input.holderLastHeardAt);
  requireTime('deadAfterMs', input.deadAfterMs);
  requireTime('extraWaitMs', input.extraWaitMs);
  const deadAt = input.holderLastHeardAt + input.deadAfterMs;
  if (input.now < deadAt) {
    return {
      allowed: false,
      reason: `holder silent for ${input.now - input.holderLastHeardAt} ms, not yet dead_after`,
      retryAt: deadAt,
    };
  }
  if (input.ownership === 'relaxed') return { allowed: true };
  if (!input.quorumVisible) return { allowed: false, reason: 'no quorum lease on this node', retryAt: null };
  if (input.holderAttestedDeadSince === null) {
    return { allowed: false, reason: 'holder not (yet) attested dead by a quorum', retryAt: null };
  }
  requireTime('holderAttestedDeadSince', input.holderAttestedDeadSince);
  const settleMs = input.claimSettleMs ?? 0;
  requireTime('claimSettleMs', settleMs);
  if (settleMs < 0) throw new RangeError(`claimSettleMs must be >= 0, got ${settleMs}`);
  const claimAt = input.holderAttestedDeadSince + Math.max(0, input.extraWaitMs - settleMs);
  if (input.now < claimAt) {
    return {
      allowed: false,
      reason: `waiting ${claimAt - input.now} ms more for the old holder's stop to complete (less claim_settle)`,
      retryAt: claimAt,
    };
  }
  return { allowed: true };
}

export interface LeaseState {
  /** This node holds a quorum lease now: it may run and start exclusive workloads. */
  held: boolean;
  /** Start of the current unbroken lease; exclusive work begun before it must be fenced. null when not held. */
  heldSince: number | null;
  /** Newest quorum proof (LeaseEvidence.provenAt, or the observation time for a plain boolean). */
  lastQuorumAt: number | null;
  /** When the lease lapses without new proof; the watchdog kill deadline is fenceAt + stop budget. null when not held. */
  fenceAt: number | null;
  /** When the last lapse happened (lease deadline passed), and how late it was noticed (an event-loop stall). */
  lastLapse: { at: number; noticedLateByMs: number } | null;
}

/**
 * The holder side of fencing: a lease that lives while a quorum proves it
 * and lapses `fenceAfterMs` after the newest proof. Feed it at every
 * reconcile tick; whenever `held` is false the node must fence-stop its
 * exclusive workloads, and work begun before `heldSince` must be fenced too:
 * a lapse and a re-acquisition noticed in the same observation (the agent
 * was stalled or suspended) still broke the lease, and a taker may already
 * run the workload.
 *
 * The deadline is checked against the previous proof *before* the new
 * observation is applied, for the same reason.
 */
export class FenceTracker {
  readonly fenceAfterMs: number;
  private lastNow: number | null = null;
  private lastQuorumAt: number | null = null;
  private heldSince: number | null = null;
  private lastLapse: LeaseState['lastLapse'] = null;

  constructor(options: { fenceAfterMs: number }) {
    requireTime('fenceAfterMs', options.fenceAfterMs);
    if (!(options.fenceAfterMs > 0)) throw new RangeError('fenceAfterMs must be > 0');
    this.fenceAfterMs = options.fenceAfterMs;
  }

  /**
   * Records one observation. `quorumProvenAt` is the time the quorum proof
   * dates from (LeaseEvidence.provenAt); it defaults to `now`, which is right
   * only for evidence gathered fresh at `now` (a plain "I see a quorum"
   * boolean trusts the view to be current: see docs/placement.md).
   */
  observe(now: number, quorumVisible: boolean, quorumProvenAt: number = now): LeaseState {
    this.advance(now);
    if (quorumVisible) {
      requireTime('quorumProvenAt', quorumProvenAt);
      if (quorumProvenAt > now) throw new RangeError('FenceTracker: quorum proven in the future');
      if (now - quorumProvenAt < this.fenceAfterMs) {
        this.lastQuorumAt =
          this.lastQuorumAt === null ? quorumProvenAt : Math.max(this.lastQuorumAt, quorumProvenAt);
        if (this.heldSince === null) this.heldSince = now;
      }
    }
    return this.snapshot();
  }

  /** The state at `now` without new evidence (the lease may lapse). */
  state(now: number): LeaseState {
    this.advance(now);
    return this.snapshot();
  }

  private advance(now: number): void {
    requireTime('now', now);
    if (this.lastNow !== null && now < this.lastNow) {
      throw new RangeError(
        `FenceTracker: time went backwards (${now} < ${this.lastNow}); use a monotonic clock`,
      );
    }
    this.lastNow = now;
    if (
      this.heldSince !== null &&
      this.lastQuorumAt !== null &&
      now >= this.lastQuorumAt + this.fenceAfterMs
    ) {
      const at = this.lastQuorumAt + this.fenceAfterMs;
      this.lastLapse = { at, noticedLateByMs: now - at };
      this.heldSince = null;
    }
  }

  private snapshot(): LeaseState {
    const held = this.heldSince !== null;
    return {
      held,
      heldSince: this.heldSince,
      lastQuorumAt: this.lastQuorumAt,
      fenceAt: held && this.lastQuorumAt !== null ? this.lastQuorumAt + this.fenceAfterMs : null,
      lastLapse: this.lastLapse,
    };
  }
}
