import type { LeaseReply, LeaseRequest } from './lease-messages.js';
import { quorumSize, type WitnessConfig } from './witness-config.js';

/**
 * The claimant side of the lease protocol (docs/placement.md, rules C1-C6):
 * which requests to send to which witness, and whether this node holds the
 * lease of a workload at a given time. Pure: time comes in as `now` (this
 * node's monotonic clock, ms), randomness as `random`; the caller sends what
 * `poll` returns and feeds replies to `onReply`.
 *
 * The lease counted from a grant starts at the SEND time of the request the
 * grant answers, never at the reply's arrival: however long the messages
 * took, the witness's hold began after we sent.
 */

export interface LeaseWant {
  /** Lease length on our clock: the run window plus the stop budget. */
  durationMs: number;
  /**
   * How long before the lease ends the workload must already be stopping:
   * its stop timeout plus slack. `mayRun` ends this much before `validUntil`.
   */
  stopBudgetMs: number;
}

export interface ClaimantOptions {
  selfId: string;
  /** This claimant process's incarnation (random, >= 1; default: drawn from `random`). */
  incarnation?: number;
  /** Rounds while the lease is held: renew this often (default: a third of the run window). */
  renewEveryMs?: (want: LeaseWant) => number;
  /** Rounds while acquiring: retry after this long times (0.5 .. 1.5) at random (default 500 ms). */
  retryMs?: number;
  random?: () => number;
}

export interface Outgoing {
  to: string;
  request: LeaseRequest;
}

/** What this node knows about its lease of one workload at `now`. */
export interface LeaseStatus {
  workload: string;
  /** The ballot we hold or are acquiring with (0: none yet). */
  ballot: number;
  /** A quorum's grants are live: no other node can hold the lease now. */
  held: boolean;
  /** Held and not yet within the stop budget of the end: the workload may run. */
  mayRun: boolean;
  /** End of the lease on our clock (null: not held). */
  validUntil: number | null;
  /** mayRun ends here. */
  runUntil: number | null;
  /** Witnesses whose live grant of our ballot counts now. */
  grantedBy: string[];
  /** Witnesses of the configuration without a live grant, with what they last said. */
  missing: { witness: string; said: string }[];
  quorum: number;
  configVersion: number;
}

interface SentRound {
  sentAt: number;
  ballot: number;
  /** The lease length the round asked for: its grants count for this long, whatever the want says now. */
  durationMs: number;
}

interface Grant {
  sentAt: number;
  ballot: number;
  durationMs: number;
}

interface WorkloadState {
  want: LeaseWant | null;
  ballot: number;
  /** Highest ballot any witness reported for this workload. */
  highestSeen: number;
  /** witness → the grant of `ballot` that lasts longest (by send time plus its duration). */
  grants: Map<string, Grant>;
  /** witness → what it said last (for status output). */
  said: Map<string, string>;
  /** round → when it was sent and with which ballot. */
  rounds: Map<number, SentRound>;
  nextRoundAt: number;
  /** Release rounds still to send after `unwant`. */
  releaseRounds: number;
  releaseBallot: number;
  /** A refusal showed our ballot cannot win: take a higher one at the next acquisition round. */
  bump: boolean;
  /**
   * Another node holds a witness while we hold no quorum: two claimants are
   * splitting the witnesses. The next round gives back what we got and
   * backs off at random (rule C4), so that one of them wins.
   */
  contended: boolean;
  /** Acquisition rounds lost to contention in a row (the back-off grows with it). */
  losses: number;
}

const KEEP_ROUNDS = 16;
const RELEASE_ROUNDS = 3;

export class LeaseClaimant {
  private readonly selfId: string;
  private readonly options: ClaimantOptions;
  private readonly random: () => number;
  private readonly states = new Map<string, WorkloadState>();
  private round = 0;
  readonly incarnation: number;

  constructor(options: ClaimantOptions) {
    this.selfId = options.selfId;
    this.options = options;
    this.random = options.random ?? Math.random;
    this.incarnation = options.incarnation ?? 1 + Math.floor(this.random() * (Number.MAX_SAFE_INTEGER - 1));
  }

  /** Ask for (or keep) the lease of `workload`. Idempotent; a changed want applies from the next round. */
  want(workload: string, want: LeaseWant, now: number): void {
    if (!(want.durationMs > want.stopBudgetMs && want.stopBudgetMs >= 0))
      throw new RangeError(`lease of ${workload}: durationMs must exceed stopBudgetMs`);
    const state = this.states.get(workload) ?? this.fresh();
    if (state.want === null) {
      state.nextRoundAt = now;
      state.releaseRounds = 0;
    }
    state.want = want;
    this.states.set(workload, state);
  }

  /**
   * Give the lease up. The caller guarantees the workload is not running
   * here (stopped, or never started): a release tells the witnesses so
   * (rule C5), and from now on this node does not count the lease as held.
   */
  unwant(workload: string, now: number): void {
    const state = this.states.get(workload);
    if (!state || state.want === null) return;
    state.want = null;
    if (state.grants.size > 0 || state.rounds.size > 0) {
      state.releaseRounds = RELEASE_ROUNDS;
      state.releaseBallot = state.ballot;
      state.nextRoundAt = now;
    }
    state.grants.clear();
    // A round sent before now may be answered after a new want, granted
    // before the release reached the witness: its grant is void.
    state.rounds.clear();
    // The released ballot is used up at every witness that granted it.
    state.bump = true;
  }

  /**
   * The agent's loop stalled past the margin: whatever it concluded before
   * is suspect, so every grant is dropped and the workloads fence (rule C6).
   */
  dropAll(): void {
    for (const state of this.states.values()) {
      state.grants.clear();
      // Replies to rounds sent before the stall count for nothing either.
      state.rounds.clear();
    }
  }

  wanted(): string[] {
    return [...this.states.entries()]
      .filter(([, s]) => s.want !== null)
      .map(([w]) => w)
      .sort();
  }

  /** Requests due at `now` under `config` (null: no configuration known, so nothing is claimed). */
  poll(now: number, config: WitnessConfig | null): Outgoing[] {
    const out: Outgoing[] = [];
    if (config === null) return out;
    for (const [workload, state] of this.states) {
      if (now < state.nextRoundAt) continue;
      if (state.want === null) {
        // The state stays (no delete): a new want must take a ballot above
        // the released one, which a release still in flight would free.
        if (state.releaseRounds <= 0) continue;
        state.releaseRounds--;
        const round = ++this.round;
        for (const to of config.witnesses) {
          out.push({
            to,
            request: {
              op: 'release',
              workload,
              node: this.selfId,
              incarnation: this.incarnation,
              ballot: state.releaseBallot,
              configVersion: config.version,
              durationMs: 1,
              round,
            },
          });
        }
        state.nextRoundAt = now + this.retryDelay();
        continue;
      }
      const held = this.computeStatus(workload, state, now, config).held;
      if (!held && state.contended) {
        // Not held: nothing of the workload may run here any more (the stop
        // budget ended before the lease did), so giving grants back is as
        // safe as letting them expire, and lets the other claimant win.
        state.contended = false;
        state.losses = Math.min(state.losses + 1, 6);
        state.grants.clear();
        // As after unwant: a grant of a round sent before this release may
        // arrive after it, granted before the release freed the witness.
        state.rounds.clear();
        state.bump = true;
        const round = ++this.round;
        for (const to of config.witnesses) {
          out.push({
            to,
            request: {
              op: 'release',
              workload,
              node: this.selfId,
              incarnation: this.incarnation,
              ballot: state.ballot,
              configVersion: config.version,
              durationMs: 1,
              round,
            },
          });
        }
        state.nextRoundAt = now + this.retryDelay() * (1 + state.losses);
        continue;
      }
      if (held) state.losses = 0;
      if (!held && state.bump) {
        state.ballot = Math.max(state.ballot, state.highestSeen) + 1;
        state.grants.clear();
        state.bump = false;
      }
      if (state.ballot === 0) state.ballot = state.highestSeen + 1;
      const round = ++this.round;
      state.rounds.set(round, { sentAt: now, ballot: state.ballot, durationMs: state.want.durationMs });
      if (state.rounds.size > KEEP_ROUNDS) {
        const oldest = Math.min(...state.rounds.keys());
        state.rounds.delete(oldest);
      }
      for (const to of config.witnesses) {
        out.push({
          to,
          request: {
            op: 'hold',
            workload,
            node: this.selfId,
            incarnation: this.incarnation,
            ballot: state.ballot,
            configVersion: config.version,
            durationMs: state.want.durationMs,
            round,
          },
        });
      }
      state.nextRoundAt = now + (held ? this.renewEvery(state.want) : this.retryDelay());
    }
    return out;
  }

  /** When `poll` next has something to send (null: nothing wanted). */
  nextPollAt(): number | null {
    let next: number | null = null;
    for (const state of this.states.values()) {
      if (state.want === null && state.releaseRounds <= 0) continue;
      next = next === null ? state.nextRoundAt : Math.min(next, state.nextRoundAt);
    }
    return next;
  }

  onReply(reply: LeaseReply, _now: number): void {
    const state = this.states.get(reply.workload);
    if (!state) return;
    if (reply.ballot > state.highestSeen) state.highestSeen = reply.ballot;
    const sent = state.rounds.get(reply.round);
    if (reply.granted) {
      // A release's acknowledgement, a reply to a round we forgot, a grant
      // of a ballot we no longer use, or one of another ballot than the round
      // asked for (not an answer to that round): counts for nothing.
      if (!sent || state.want === null || sent.ballot !== state.ballot || reply.ballot !== sent.ballot)
        return;
      // A round asks for its own duration (a changed want applies from the
      // next round): the grant counts for that long, and the one that lasts
      // longest stands, so validUntil never moves back.
      const previous = state.grants.get(reply.witness);
      if (!previous || previous.sentAt + previous.durationMs < sent.sentAt + sent.durationMs)
        state.grants.set(reply.witness, { ...sent });
      state.said.set(reply.witness, `granted ballot ${sent.ballot}`);
      return;
    }
    // A refused release (or a reply to a forgotten round) says nothing about
    // our claim: it would only hide what the witness said to the claim.
    if (!sent) return;
    const what =
      reply.refusal === 'held'
        ? `held by ${reply.holder ?? '?'} for ${reply.remainingMs ?? '?'} ms more`
        : reply.refusal === 'stale-ballot'
          ? `has granted ballot ${reply.ballot}${reply.holder ? ` to ${reply.holder}` : ''}`
          : reply.refusal === 'config-mismatch'
            ? `counts in configuration ${reply.configVersion}`
            : reply.refusal === 'quiet'
              ? 'restarted: grants nothing until every lease it may have granted before has ended'
              : reply.refusal === 'too-long'
                ? 'refuses a lease this long (stop_timeout above its services.max_stop_timeout)'
                : (reply.refusal ?? 'refused');
    state.said.set(reply.witness, what);
    if (sent.ballot === state.ballot && reply.refusal === 'stale-ballot') state.bump = true;
    if (sent.ballot === state.ballot && reply.refusal === 'held' && reply.holder !== this.selfId)
      state.contended = true;
    // A refusal does not take a grant back: the witness still holds it until
    // it expires, and our count ends at the grant's own expiry.
  }

  status(workload: string, now: number, config: WitnessConfig | null): LeaseStatus {
    const state = this.states.get(workload);
    if (!state || state.want === null || config === null) {
      return {
        workload,
        ballot: state?.ballot ?? 0,
        held: false,
        mayRun: false,
        validUntil: null,
        runUntil: null,
        grantedBy: [],
        missing: (config?.witnesses ?? []).map((witness) => ({
          witness,
          said: config ? 'not asked' : 'no witness configuration',
        })),
        quorum: config ? quorumSize(config) : 0,
        configVersion: config?.version ?? 0,
      };
    }
    return this.computeStatus(workload, state, now, config);
  }

  private computeStatus(
    workload: string,
    state: WorkloadState,
    now: number,
    config: WitnessConfig,
  ): LeaseStatus {
    const want = state.want;
    const quorum = quorumSize(config);
    const live: { witness: string; until: number }[] = [];
    for (const witness of config.witnesses) {
      const grant = state.grants.get(witness);
      if (!grant || grant.ballot !== state.ballot || want === null) continue;
      const until = grant.sentAt + grant.durationMs;
      if (until > now) live.push({ witness, until });
    }
    live.sort((a, b) => b.until - a.until);
    const held = live.length >= quorum;
    // The lease ends when fewer than a quorum of grants are live: at the
    // quorum-th latest expiry.
    const validUntil = held ? live[quorum - 1]!.until : null;
    const runUntil = validUntil === null || want === null ? null : validUntil - want.stopBudgetMs;
    const grantedBy = live.map((l) => l.witness).sort();
    const missing = config.witnesses
      .filter((w) => !grantedBy.includes(w))
      .map((witness) => ({ witness, said: state.said.get(witness) ?? 'no answer yet' }));
    return {
      workload,
      ballot: state.ballot,
      held,
      mayRun: held && runUntil !== null && now < runUntil,
      validUntil,
      runUntil,
      grantedBy,
      missing,
      quorum,
      configVersion: config.version,
    };
  }

  private fresh(): WorkloadState {
    return {
      want: null,
      ballot: 0,
      highestSeen: 0,
      grants: new Map(),
      said: new Map(),
      rounds: new Map(),
      nextRoundAt: 0,
      releaseRounds: 0,
      releaseBallot: 0,
      bump: false,
      contended: false,
      losses: 0,
    };
  }

  private renewEvery(want: LeaseWant): number {
    if (this.options.renewEveryMs) return this.options.renewEveryMs(want);
    return Math.max(10, Math.floor((want.durationMs - want.stopBudgetMs) / 3));
  }

  private retryDelay(): number {
    const base = this.options.retryMs ?? 500;
    return Math.max(1, Math.round(base * (0.5 + this.random())));
  }
}
