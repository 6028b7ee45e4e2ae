import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  LeaseClaimant,
  type LeaseStatus,
  type LeaseWant,
  type Outgoing,
} from '../../src/ownership/claimant-core.js';
import type { LeaseReply, LeaseRequest } from '../../src/ownership/lease-messages.js';
import type { WitnessConfig } from '../../src/ownership/witness-config.js';
import { WitnessCore, type WitnessRecord } from '../../src/ownership/witness-core.js';
import { LeaseClaimant as PrefixClaimant } from './tmp-prefix-claimant.js';

/*
 * A deterministic model of the witness-lease protocol (src/ownership): the
 * real WitnessCore and LeaseClaimant exchange messages through an
 * adversarial network (any delay, loss, reordering, duplication,
 * partitions), processes crash and restart, and every node's clock runs at
 * its own fixed rate within the drift bound ρ, with an arbitrary offset per
 * process. Real time is a number the schedule advances; there are no timers.
 *
 * After every step the checker computes, in real time, when each claimant
 * process believes it holds each workload (from the first `held` it reports
 * until the real time of the latest `validUntil` it reported, or until it
 * unwants the workload or dies) and asserts:
 *   S1. no two claimant processes believe they hold one workload at
 *       overlapping real times;
 *   S2. a process that newly holds a workload holds it with a ballot above
 *       the ballot of every earlier holding of it by another node.
 *
 * One assumption is the model's, not the protocol claim's: when a claimant
 * process dies, the messages it sent that are still in flight die with it
 * (and replies to it are lost). Without it the protocol is not safe: see
 * "known protocol bug" at the end of this file (todo tests).
 */

const DRIFT_PPM = 10_000;
/** Lease lengths a claimant asks for (its own clock); a want may change between them. */
const DURATIONS = [1000, 2500] as const;
const MAX_DURATION = Math.max(...DURATIONS);
const STOP_BUDGET_MS = 200;
const WORKLOADS = ['a', 'b'] as const;
/** Fixed, so runs are reproducible; WITNESS_LEASE_SEED=n tries another. */
const SEED = Number(process.env.WITNESS_LEASE_SEED ?? 20_240_601);
/** A handover this close to the end of the previous holder's belief probes the drift margin. */
const TIGHT_MS = 60;

// ---------------------------------------------------------------------------
// Schedules

type Step =
  | { k: 'advance'; ms: number }
  /** Advance to `jitter` ms after the i-th next lease end (a witness's hold or a claimant's validUntil). */
  | { k: 'skip'; i: number; jitter: number }
  | { k: 'deliver'; i: number }
  | { k: 'flush' }
  | { k: 'dup'; i: number }
  | { k: 'drop'; i: number }
  | { k: 'crashWitness'; w: number; offset: number }
  | { k: 'crashClaimant'; c: number; offset: number }
  | { k: 'want'; c: number; wl: number; dur: number }
  | { k: 'unwant'; c: number; wl: number }
  | { k: 'cut'; mask: number }
  | { k: 'heal' }
  | { k: 'poll'; c: number }
  | { k: 'pollAll' }
  /** Poll claimant c and deliver what it sends, then the replies, at once (a prompt round trip). */
  | { k: 'exchange'; c: number };

interface Scenario {
  witnessCount: 3 | 5;
  claimantCount: 2 | 3;
  /** Claimant 0 runs on witness w1's node (its node id is w1). */
  shared: boolean;
  workloadCount: 1 | 2;
  /** Clock rate error per node, ppm in [-ρ, ρ]: witnesses w1.., then the claimant-only nodes. */
  ratePpm: number[];
  /** Initial clock offset per process, same order. */
  offsets: number[];
  /** Seeds the claimants' retry jitter. */
  seed: number;
  steps: Step[];
}

const offsetArb = fc.integer({ min: 0, max: 10_000_000 });
const ratePpmArb = fc.oneof(
  fc.constantFrom(-DRIFT_PPM, DRIFT_PPM, 0),
  fc.integer({ min: -DRIFT_PPM, max: DRIFT_PPM }),
);
const deltaArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 60 }) },
  { weight: 4, arbitrary: fc.integer({ min: 60, max: 1500 }) },
  { weight: 2, arbitrary: fc.integer({ min: 1500, max: 12_000 }) },
);

type StepKind = Step['k'];

/** How often each kind of step comes up, relative to the others. */
type StepWeights = Record<StepKind, number>;

/** Any mix of faults, for up to 5 witnesses, 3 claimants and 2 workloads. */
const BROAD: StepWeights = {
  deliver: 6,
  flush: 2,
  advance: 5,
  skip: 2,
  poll: 4,
  pollAll: 1,
  exchange: 3,
  dup: 1,
  drop: 1,
  crashWitness: 1,
  crashClaimant: 1,
  want: 3,
  unwant: 1,
  cut: 1,
  heal: 1,
};

/**
 * Two claimants contending for one workload on three witnesses, one message
 * at a time: long chains of slow, lost and reordered replies.
 */
const CONTENTION: StepWeights = {
  ...BROAD,
  deliver: 8,
  flush: 1,
  advance: 3,
  poll: 5,
  exchange: 2,
  drop: 4,
  want: 2,
  crashClaimant: 0,
};

function stepArb(weights: StepWeights): fc.Arbitrary<Step> {
  const arbitraries: { [K in StepKind]: fc.Arbitrary<Extract<Step, { k: K }>> } = {
    deliver: fc.record({ k: fc.constant('deliver'), i: fc.nat(999) }),
    flush: fc.constant({ k: 'flush' }),
    advance: fc.record({ k: fc.constant('advance'), ms: deltaArb }),
    skip: fc.record({
      k: fc.constant('skip'),
      i: fc.nat(7),
      jitter: fc.oneof(fc.integer({ min: -3, max: 3 }), fc.integer({ min: -40, max: 40 })),
    }),
    poll: fc.record({ k: fc.constant('poll'), c: fc.nat(2) }),
    pollAll: fc.constant({ k: 'pollAll' }),
    exchange: fc.record({ k: fc.constant('exchange'), c: fc.nat(2) }),
    dup: fc.record({ k: fc.constant('dup'), i: fc.nat(999) }),
    drop: fc.record({ k: fc.constant('drop'), i: fc.nat(999) }),
    crashWitness: fc.record({ k: fc.constant('crashWitness'), w: fc.nat(4), offset: offsetArb }),
    crashClaimant: fc.record({ k: fc.constant('crashClaimant'), c: fc.nat(2), offset: offsetArb }),
    want: fc.record({
      k: fc.constant('want'),
      c: fc.nat(2),
      wl: fc.nat(1),
      dur: fc.nat(DURATIONS.length - 1),
    }),
    unwant: fc.record({ k: fc.constant('unwant'), c: fc.nat(2), wl: fc.nat(1) }),
    cut: fc.record({ k: fc.constant('cut'), mask: fc.nat(255) }),
    heal: fc.constant({ k: 'heal' }),
  };
  const kinds = (Object.keys(arbitraries) as StepKind[]).filter((kind) => weights[kind] > 0);
  return fc.oneof(
    ...kinds.map((kind) => ({ weight: weights[kind], arbitrary: arbitraries[kind] as fc.Arbitrary<Step> })),
  );
}

function swarmWeights(): fc.Arbitrary<StepWeights> {
  const w = fc.constantFrom(0, 1, 3, 6);
  return fc
    .record({ ...Object.fromEntries(Object.keys(BROAD).map((k) => [k, w])) } as Record<
      StepKind,
      fc.Arbitrary<number>
    >)
    .map((weights) => ({
      ...weights,
      deliver: weights.deliver || 1,
      poll: weights.poll || 1,
      want: weights.want || 1,
      advance: weights.advance || 1,
    }));
}

function scenarioArb(maxSteps: number, profile: 'broad' | 'contention' = 'broad'): fc.Arbitrary<Scenario> {
  const broad = profile === 'broad';
  return fc.record({
    witnessCount: broad ? fc.constantFrom(3 as const, 5 as const) : fc.constant(3 as const),
    claimantCount: broad ? fc.constantFrom(2 as const, 3 as const) : fc.constant(2 as const),
    shared: fc.boolean(),
    workloadCount: broad ? fc.constantFrom(1 as const, 2 as const) : fc.constant(1 as const),
    ratePpm: fc.array(ratePpmArb, { minLength: 8, maxLength: 8 }),
    offsets: fc.array(offsetArb, { minLength: 8, maxLength: 8 }),
    seed: fc.nat(),
    steps: process.env.SWARM
      ? swarmWeights().chain((w) => fc.array(stepArb(w), { minLength: 1, maxLength: maxSteps, size: 'max' }))
      : fc.array(stepArb(broad ? BROAD : CONTENTION), { minLength: 1, maxLength: maxSteps, size: 'max' }),
  });
}

// ---------------------------------------------------------------------------
// Variants: the protocol as written, and deliberately broken ones

/** The part of a claimant the model drives. */
interface ClaimantLike {
  want(workload: string, want: LeaseWant, now: number): void;
  unwant(workload: string, now: number): void;
  poll(now: number, config: WitnessConfig | null): Outgoing[];
  onReply(reply: LeaseReply, now: number): void;
  status(
    workload: string,
    now: number,
    config: WitnessConfig | null,
  ): Pick<LeaseStatus, 'held' | 'validUntil' | 'ballot'>;
}

/**
 * Broken on purpose, claim_settle style: it believes it holds for
 * durationMs (from the reply's arrival) as soon as any one witness granted,
 * without a quorum.
 */
class SettleClaimant implements ClaimantLike {
  private readonly inner: LeaseClaimant;
  private readonly wants = new Map<string, LeaseWant>();
  private readonly settled = new Map<string, number>();

  constructor(
    private readonly selfId: string,
    random: () => number,
  ) {
    this.inner = new LeaseClaimant({ selfId, random });
  }

  want(workload: string, want: LeaseWant, now: number): void {
    this.inner.want(workload, want, now);
    this.wants.set(workload, want);
  }

  unwant(workload: string, now: number): void {
    this.inner.unwant(workload, now);
    this.wants.delete(workload);
    this.settled.delete(workload);
  }

  poll(now: number, config: WitnessConfig | null): Outgoing[] {
    return this.inner.poll(now, config);
  }

  onReply(reply: LeaseReply, now: number): void {
    this.inner.onReply(reply, now);
    const want = this.wants.get(reply.workload);
    if (!want || !reply.granted || reply.holder !== this.selfId) return;
    const until = this.settled.get(reply.workload);
    if (until === undefined || now >= until) this.settled.set(reply.workload, now + want.durationMs);
  }

  status(workload: string, now: number, config: WitnessConfig | null) {
    const until = this.settled.get(workload);
    const held = until !== undefined && now < until && this.wants.has(workload);
    return { held, validUntil: held ? until : null, ballot: this.inner.status(workload, now, config).ballot };
  }
}

interface Variant {
  /** The drift bound the witnesses are told (the clocks really drift by up to DRIFT_PPM). */
  witnessDriftPpm: number;
  /** Witnesses persist what `handle` returns (false: a restart restores from nothing). */
  durable: boolean;
  claimant: 'quorum' | 'settle' | 'prefix';
  /** Every claimant clock at 1−ρ (slow), every witness clock at 1+ρ (fast). */
  adverseClocks: boolean;
  /**
   * What happens to a dead claimant process's messages in flight: they
   * `vanish` with it (the model's assumption); its requests linger and reach
   * the witnesses later, but replies to it are lost (`requests-linger`: a
   * request/response stream per batch, as /silo/lease/1); or both `linger`
   * (replies then reach the node's next process).
   */
  deadClaimantMessages: 'vanish' | 'requests-linger' | 'linger';
  /** S2 also between processes of one node: a restarted node must not hold with its old ballot again. */
  strictFencingAcrossRestarts: boolean;
}

const PROTOCOL: Variant = {
  witnessDriftPpm: DRIFT_PPM,
  durable: true,
  claimant: 'quorum',
  adverseClocks: false,
  deadClaimantMessages: 'vanish',
  strictFencingAcrossRestarts: false,
};

// ---------------------------------------------------------------------------
// The world

type Message =
  | { kind: 'request'; from: string; to: string; request: LeaseRequest }
  | { kind: 'reply'; from: string; to: string; reply: LeaseReply };

interface WitnessProcess {
  id: string;
  core: WitnessCore;
  offset: number;
}

interface ClaimantProcess {
  id: string;
  /** Unique per process: a restart is a new process. */
  incarnation: number;
  core: ClaimantLike;
  offset: number;
}

/** One stretch of real time in which one claimant process believes it holds one workload. */
interface Episode {
  workload: string;
  node: string;
  incarnation: number;
  ballot: number;
  /** Real time the process first reported `held`. */
  start: number;
  /** Real time of the latest validUntil it reported, or of its unwant or death if earlier. */
  end: number;
}

class Violation extends Error {
  override readonly name = 'Violation';
}

class World {
  readonly config: WitnessConfig;
  readonly witnessIds: string[];
  readonly workloads: string[];
  real = 0;
  inflight: Message[] = [];
  claimants: ClaimantProcess[];
  readonly episodes: Episode[] = [];
  readonly trace: string[] = [];
  /** Witness restarts while some claimant believed it held a workload. */
  restartsUnderLease = 0;
  /** Links "a|b" (sorted) that drop everything sent over them. */
  private readonly cut = new Set<string>();
  private readonly nodes: string[];
  private readonly witnesses = new Map<string, WitnessProcess>();
  private readonly stores = new Map<string, Map<string, WitnessRecord>>();
  /** incarnation/workload → the episode going on. */
  private readonly open = new Map<string, Episode>();
  private readonly rate = new Map<string, number>();
  private nextIncarnation = 0;

  constructor(
    private readonly scenario: Scenario,
    private readonly variant: Variant,
    private readonly tracing = false,
  ) {
    this.witnessIds = Array.from({ length: scenario.witnessCount }, (_, i) => `w${i + 1}`);
    const claimantIds = Array.from({ length: scenario.claimantCount }, (_, i) =>
      i === 0 && scenario.shared ? 'w1' : `c${i + 1}`,
    );
    this.nodes = [...this.witnessIds, ...claimantIds.filter((id) => !this.witnessIds.includes(id))];
    this.workloads = WORKLOADS.slice(0, scenario.workloadCount);
    this.config = { version: 1, witnesses: [...this.witnessIds].sort() };
    this.nodes.forEach((id, i) => {
      const isWitness = this.witnessIds.includes(id);
      const ppm = variant.adverseClocks ? (isWitness ? DRIFT_PPM : -DRIFT_PPM) : (scenario.ratePpm[i] ?? 0);
      this.rate.set(id, 1 + ppm / 1e6);
    });
    this.witnessIds.forEach((id, i) => {
      this.stores.set(id, new Map());
      this.witnesses.set(id, this.newWitness(id, scenario.offsets[i] ?? 0));
    });
    this.claimants = claimantIds.map((id, i) => this.newClaimant(id, scenario.offsets[5 + i] ?? 0));
  }

  private newWitness(id: string, offset: number): WitnessProcess {
    const core = new WitnessCore({ selfId: id, clockDriftPpm: this.variant.witnessDriftPpm });
    core.setConfig(this.config);
    core.restore(this.stores.get(id)!.values(), this.local(id, offset));
    return { id, core, offset };
  }

  private newClaimant(id: string, offset: number): ClaimantProcess {
    const random = mulberry32((this.scenario.seed + this.nextIncarnation * 0x9e3779b9) >>> 0);
    const core: ClaimantLike =
      this.variant.claimant === 'settle'
        ? new SettleClaimant(id, random)
        : this.variant.claimant === 'prefix'
          ? new PrefixClaimant({ selfId: id, random })
          : new LeaseClaimant({ selfId: id, random });
    return { id, incarnation: this.nextIncarnation++, core, offset };
  }

  /** A process's clock reading now: offset + rate × real time. */
  private local(node: string, offset: number): number {
    return offset + this.rate.get(node)! * this.real;
  }

  private realOf(node: string, offset: number, local: number): number {
    return (local - offset) / this.rate.get(node)!;
  }

  private claimantNow(claimant: ClaimantProcess): number {
    return this.local(claimant.id, claimant.offset);
  }

  private log(line: string): void {
    if (this.tracing) this.trace.push(`t=${this.real} ${line}`);
  }

  private send(message: Message): void {
    if (this.cut.has(linkKey(message.from, message.to))) {
      this.log(`  lost on a cut link: ${describeMessage(message)}`);
      return;
    }
    this.inflight.push(message);
  }

  private deliver(message: Message): void {
    this.log(`deliver ${describeMessage(message)}`);
    if (message.kind === 'request') {
      const witness = this.witnesses.get(message.to)!;
      const { reply, persist } = witness.core.handle(message.request, this.local(witness.id, witness.offset));
      // W1: on disk before the reply leaves.
      if (persist !== null && this.variant.durable)
        this.stores.get(witness.id)!.set(persist.workload, persist);
      this.send({ kind: 'reply', from: witness.id, to: message.from, reply });
    } else {
      const claimant = this.claimants.find((c) => c.id === message.to)!;
      claimant.core.onReply(message.reply, this.claimantNow(claimant));
    }
  }

  private poll(claimant: ClaimantProcess): void {
    for (const out of claimant.core.poll(this.claimantNow(claimant), this.config)) {
      this.log(`send ${claimant.id}#${claimant.incarnation}→${out.to} ${describeRequest(out.request)}`);
      this.send({ kind: 'request', from: claimant.id, to: out.to, request: out.request });
    }
  }

  /** The process stopped the workload (or died): its belief ends now. */
  private endBelief(claimant: ClaimantProcess, workload: string | null): void {
    for (const wl of workload === null ? this.workloads : [workload]) {
      const key = `${claimant.incarnation}/${wl}`;
      const episode = this.open.get(key);
      if (!episode) continue;
      episode.end = Math.min(episode.end, this.real);
      this.open.delete(key);
    }
  }

  apply(step: Step): void {
    const pick = <T>(list: readonly T[], i: number): T => list[i % list.length]!;
    switch (step.k) {
      case 'advance':
        this.real += step.ms;
        this.log(`advance ${step.ms}`);
        break;
      case 'skip': {
        const ends = this.leaseEnds().filter((t) => t > this.real);
        if (ends.length === 0) break;
        const to = Math.ceil(ends[step.i % ends.length]!) + step.jitter;
        if (to > this.real) {
          this.log(`advance ${to - this.real} (to a lease end${step.jitter >= 0 ? '+' : ''}${step.jitter})`);
          this.real = to;
        }
        break;
      }
      case 'deliver':
        if (this.inflight.length > 0)
          this.deliver(this.inflight.splice(step.i % this.inflight.length, 1)[0]!);
        break;
      case 'flush': {
        const batch = this.inflight;
        this.inflight = [];
        for (const message of batch) this.deliver(message);
        break;
      }
      case 'dup':
        if (this.inflight.length > 0) this.inflight.push(pick(this.inflight, step.i));
        break;
      case 'drop':
        if (this.inflight.length > 0) {
          const [message] = this.inflight.splice(step.i % this.inflight.length, 1);
          this.log(`drop ${describeMessage(message!)}`);
        }
        break;
      case 'crashWitness': {
        const id = pick(this.witnessIds, step.w);
        if (this.open.size > 0) this.restartsUnderLease++;
        this.log(`crash+restart witness ${id}`);
        this.witnesses.set(id, this.newWitness(id, step.offset));
        break;
      }
      case 'crashClaimant': {
        const index = step.c % this.claimants.length;
        const old = this.claimants[index]!;
        this.endBelief(old, null);
        const lost = this.variant.deadClaimantMessages;
        if (lost !== 'linger') {
          this.inflight = this.inflight.filter((m) =>
            m.kind === 'request' ? lost === 'requests-linger' || m.from !== old.id : m.to !== old.id,
          );
        }
        this.claimants[index] = this.newClaimant(old.id, step.offset);
        this.log(
          `crash+restart claimant ${old.id}#${old.incarnation} → #${this.claimants[index]!.incarnation}`,
        );
        break;
      }
      case 'want': {
        const claimant = pick(this.claimants, step.c);
        const workload = pick(this.workloads, step.wl);
        const durationMs = pick(DURATIONS, step.dur);
        this.log(`${claimant.id}#${claimant.incarnation} wants ${workload} for ${durationMs}`);
        claimant.core.want(
          workload,
          { durationMs, stopBudgetMs: STOP_BUDGET_MS },
          this.claimantNow(claimant),
        );
        break;
      }
      case 'unwant': {
        const claimant = pick(this.claimants, step.c);
        const workload = pick(this.workloads, step.wl);
        this.log(`${claimant.id}#${claimant.incarnation} unwants ${workload} (stopped)`);
        this.endBelief(claimant, workload);
        claimant.core.unwant(workload, this.claimantNow(claimant));
        break;
      }
      case 'cut': {
        const side = this.nodes.filter((_, i) => (step.mask >> i) & 1);
        const rest = this.nodes.filter((n) => !side.includes(n));
        for (const a of side) for (const b of rest) this.cut.add(linkKey(a, b));
        this.log(`cut ${side.join(',')} | ${rest.join(',')}`);
        break;
      }
      case 'heal':
        this.cut.clear();
        this.log('heal');
        break;
      case 'poll':
        this.poll(pick(this.claimants, step.c));
        break;
      case 'pollAll':
        for (const claimant of this.claimants) this.poll(claimant);
        break;
      case 'exchange': {
        const mark = this.inflight.length;
        this.poll(pick(this.claimants, step.c));
        for (const message of this.inflight.splice(mark)) this.deliver(message);
        for (const message of this.inflight.splice(mark)) this.deliver(message);
        break;
      }
    }
    this.check();
  }

  /** Real times at which a witness's hold or a claimant's belief ends, sorted. */
  private leaseEnds(): number[] {
    const ends: number[] = [];
    for (const workload of this.workloads) {
      for (const witness of this.witnesses.values()) {
        const record = witness.core.recordOf(workload);
        if (record && record.holder !== null && !record.released)
          ends.push(this.realOf(witness.id, witness.offset, record.expiresAt));
      }
      for (const claimant of this.claimants) {
        const { validUntil } = claimant.core.status(workload, this.claimantNow(claimant), this.config);
        if (validUntil !== null) ends.push(this.realOf(claimant.id, claimant.offset, validUntil));
      }
    }
    return ends.sort((a, b) => a - b);
  }

  held(claimant: number, workload: string): boolean {
    const process = this.claimants[claimant]!;
    return process.core.status(workload, this.claimantNow(process), this.config).held;
  }

  /** Throws Violation when S1 or S2 fails now. */
  check(): void {
    for (const claimant of this.claimants) {
      for (const workload of this.workloads) {
        const status = claimant.core.status(workload, this.claimantNow(claimant), this.config);
        const key = `${claimant.incarnation}/${workload}`;
        let episode = this.open.get(key);
        if (episode && (!status.held || status.ballot !== episode.ballot)) {
          this.open.delete(key);
          episode = undefined;
        }
        if (!status.held) continue;
        if (status.validUntil === null)
          throw new Violation(`${claimant.id} holds ${workload} without validUntil`);
        const end = this.realOf(claimant.id, claimant.offset, status.validUntil);
        if (!episode) {
          this.checkFencing(claimant, workload, status.ballot);
          episode = {
            workload,
            node: claimant.id,
            incarnation: claimant.incarnation,
            ballot: status.ballot,
            start: this.real,
            end,
          };
          this.episodes.push(episode);
          this.open.set(key, episode);
        }
        // The belief lasts until the latest validUntil ever reported.
        if (end > episode.end || (episode.start === this.real && !this.open.has(key))) {
          episode.end = Math.max(episode.end, end);
          this.log(
            `  ${claimant.id}#${claimant.incarnation} holds ${workload} with ballot ${status.ballot} until t=${episode.end.toFixed(1)}`,
          );
        }
        for (const other of this.episodes) {
          if (other.workload !== workload || other.incarnation === episode.incarnation) continue;
          if (other.start < episode.end && episode.start < other.end) {
            throw new Violation(
              `S1: ${workload} held by ${describeEpisode(episode)} and by ${describeEpisode(other)} at once`,
            );
          }
        }
      }
    }
  }

  private checkFencing(claimant: ClaimantProcess, workload: string, ballot: number): void {
    for (const earlier of this.episodes) {
      if (earlier.workload !== workload) continue;
      const strict =
        earlier.node !== claimant.id ||
        (this.variant.strictFencingAcrossRestarts && earlier.incarnation !== claimant.incarnation);
      if (strict ? earlier.ballot >= ballot : earlier.ballot > ballot) {
        throw new Violation(
          `S2: ${claimant.id}#${claimant.incarnation} newly holds ${workload} at t=${this.real} with ballot ${ballot}, ` +
            `not above the ballot of ${describeEpisode(earlier)}`,
        );
      }
    }
  }

  /**
   * Holdings of a workload by a node after another node's, and how many of
   * them began within TIGHT_MS of the end of the previous holder's belief.
   */
  handovers(): { all: number; tight: number } {
    const counts = { all: 0, tight: 0 };
    for (const workload of this.workloads) {
      let last: Episode | null = null;
      for (const episode of this.episodes) {
        if (episode.workload !== workload) continue;
        if (last !== null && last.node !== episode.node) {
          counts.all++;
          if (episode.start - last.end < TIGHT_MS) counts.tight++;
        }
        last = episode;
      }
    }
    return counts;
  }
}

interface RunResult {
  violation: string | null;
  holdings: number;
  handovers: number;
  tightHandovers: number;
  restartsUnderLease: number;
}

function runScenario(scenario: Scenario, variant: Variant): RunResult {
  const world = new World(scenario, variant);
  let violation: string | null = null;
  try {
    world.check();
    for (const step of scenario.steps) world.apply(step);
  } catch (err) {
    if (!(err instanceof Violation)) throw err;
    violation = err.message;
  }
  const handovers = world.handovers();
  return {
    violation,
    holdings: world.episodes.length,
    handovers: handovers.all,
    tightHandovers: handovers.tight,
    restartsUnderLease: world.restartsUnderLease,
  };
}

/** The violation of a scenario with the trace of its run (for failure messages). */
function explain(scenario: Scenario, variant: Variant): string {
  const world = new World(scenario, variant, true);
  try {
    world.check();
    for (const step of scenario.steps) world.apply(step);
    return `no violation\n${world.trace.join('\n')}`;
  } catch (err) {
    return `${(err as Error).message}\n${world.trace.join('\n')}`;
  }
}

const LIVENESS_TICK_MS = 20;
/**
 * A lone claimant holds within this long of the network healing: leases
 * granted before it (or renewed by requests still in flight) run out
 * (the longest hold, stretched by the drift bound, on a fast clock), then
 * at most two acquisition rounds (one to learn the ballot, one to win),
 * each at most 1.5 retry periods apart.
 */
const LIVENESS_BOUND_MS = 3 * MAX_DURATION;

/**
 * After the scenario's (faulty) schedule: heal, make claimant `lone` the
 * only one that wants workload `a`, and deliver everything promptly. From
 * LIVENESS_BOUND_MS after healing on, the lone claimant must hold the lease
 * without a break (for two more lease lengths). Returns how long after
 * healing its last (unbroken) holding began, or a problem.
 */
function runLiveness(scenario: Scenario, lone: number): { waitedMs: number } | { problem: string } {
  const world = new World(scenario, PROTOCOL);
  try {
    for (const step of scenario.steps) world.apply(step);
    world.apply({ k: 'heal' });
    const chosen = lone % world.claimants.length;
    for (let c = 0; c < world.claimants.length; c++) {
      for (let wl = 0; wl < world.workloads.length; wl++) {
        if (c !== chosen || wl !== 0) world.apply({ k: 'unwant', c, wl });
      }
    }
    world.apply({ k: 'want', c: chosen, wl: 0, dur: 0 });
    const start = world.real;
    let heldSince: number | null = null;
    while (world.real - start <= LIVENESS_BOUND_MS + 2 * MAX_DURATION) {
      world.apply({ k: 'pollAll' });
      for (let i = 0; i < 4 && world.inflight.length > 0; i++) world.apply({ k: 'flush' });
      const held = world.held(chosen, 'a');
      if (!held) heldSince = null;
      else if (heldSince === null) heldSince = world.real;
      if (!held && world.real - start >= LIVENESS_BOUND_MS)
        return { problem: `not held at t=${world.real}, ${world.real - start} ms after healing` };
      world.apply({ k: 'advance', ms: LIVENESS_TICK_MS });
    }
    return { waitedMs: heldSince! - start };
  } catch (err) {
    if (!(err instanceof Violation)) throw err;
    return { problem: err.message };
  }
}

function linkKey(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

function describeRequest(r: LeaseRequest): string {
  return `${r.op} ${r.workload} ballot ${r.ballot} round ${r.round}${r.op === 'hold' ? ` for ${r.durationMs}` : ''}`;
}

function describeMessage(message: Message): string {
  if (message.kind === 'request') return `${message.from}→${message.to} ${describeRequest(message.request)}`;
  const r = message.reply;
  const what = r.granted ? 'granted' : `refused (${r.refusal})`;
  return `${message.from}→${message.to} reply ${r.workload} round ${r.round} ${what}, ballot ${r.ballot} holder ${r.holder}`;
}

function describeEpisode(e: Episode): string {
  return `${e.node}#${e.incarnation} (ballot ${e.ballot}) over [${e.start}, ${e.end.toFixed(1)})`;
}

/** Small deterministic PRNG for the claimants' retry jitter. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs the property for `variant`; the details of the first counterexample, if any. */
function searchCounterexample(variant: Variant, numRuns: number, maxSteps = 150, seed = SEED) {
  return fc.check(
    fc.property(scenarioArb(maxSteps), (scenario) => runScenario(scenario, variant).violation === null),
    { seed, numRuns },
  );
}

function scenario(steps: Step[], overrides: Partial<Scenario> = {}): Scenario {
  return {
    witnessCount: 3,
    claimantCount: 2,
    shared: false,
    workloadCount: 1,
    ratePpm: [0, 0, 0, 0, 0, 0, 0, 0],
    offsets: [0, 0, 0, 0, 0, 0, 0, 0],
    seed: 1,
    steps,
    ...overrides,
  };
}

// ---------------------------------------------------------------------------
// Tests

describe('witness lease protocol, model-checked', () => {
  test('S1 and S2 hold under loss, delay, duplication, partitions, restarts and drifting clocks', () => {
    const runs = 10_000;
    const seen = { runsHolding: 0, holdings: 0, handovers: 0, tightHandovers: 0, restartsUnderLease: 0 };
    fc.assert(
      fc.property(scenarioArb(150), (s) => {
        const result = runScenario(s, PROTOCOL);
        if (result.holdings > 0) seen.runsHolding++;
        seen.holdings += result.holdings;
        seen.handovers += result.handovers;
        seen.tightHandovers += result.tightHandovers;
        seen.restartsUnderLease += result.restartsUnderLease;
        if (result.violation !== null) throw new Error(explain(s, PROTOCOL));
      }),
      { seed: SEED, numRuns: runs, includeErrorInReport: true },
    );
    console.log(
      `protocol: ${runs} runs, ${seen.runsHolding} with a holder, ${seen.holdings} holdings, ` +
        `${seen.handovers} handovers (${seen.tightHandovers} within ${TIGHT_MS} ms of the previous belief's end), ` +
        `${seen.restartsUnderLease} witness restarts under a lease`,
    );
    // Not vacuous: claimants get leases, leases change hands, some of them
    // right at the margin, and witnesses restart while leases are held.
    assert.ok(seen.runsHolding >= runs / 5, `only ${seen.runsHolding} of ${runs} runs had a holder`);
    assert.ok(seen.handovers >= runs / 50, `only ${seen.handovers} handovers in ${runs} runs`);
    assert.ok(
      seen.tightHandovers >= runs / 500,
      `only ${seen.tightHandovers} tight handovers in ${runs} runs`,
    );
    assert.ok(
      seen.restartsUnderLease >= runs / 20,
      `only ${seen.restartsUnderLease} witness restarts under a lease`,
    );
  });

  test('a lone claimant holds within a few lease lengths once the network heals, and keeps the lease', () => {
    let worst = 0;
    const runs = 300;
    fc.assert(
      fc.property(scenarioArb(80), fc.nat(2), (s, lone) => {
        const result = runLiveness(s, lone);
        if ('problem' in result) throw new Error(result.problem);
        worst = Math.max(worst, result.waitedMs);
      }),
      { seed: SEED, numRuns: runs, includeErrorInReport: true },
    );
    console.log(
      `liveness: ${runs} runs, longest wait after healing ${worst} ms (bound ${LIVENESS_BOUND_MS} ms)`,
    );
  });
});

describe('the checker catches broken variants', () => {
  const caught = (name: string, variant: Variant, numRuns: number, maxSteps?: number) => {
    const details = searchCounterexample(variant, numRuns, maxSteps);
    const found = details.counterexample?.[0];
    console.log(
      `${name}: ${details.failed ? `counterexample after ${details.numRuns} runs (${details.numShrinks} shrinks)` : `none in ${numRuns} runs`}`,
    );
    assert.ok(details.failed && found, `${name}: no counterexample in ${numRuns} runs`);
    return explain(found, variant);
  };

  test('witnesses that grant without a durable record', () => {
    const why = caught('no durable record', { ...PROTOCOL, durable: false }, 2000);
    assert.match(why, /^S[12]:/);
  });

  test('witnesses that do not stretch holds for drift', () => {
    const why = caught('no drift stretch', { ...PROTOCOL, witnessDriftPpm: 0 }, 30_000);
    assert.match(why, /^S1:/);
  });

  test('witnesses that do not stretch holds for drift, slow claimant clocks and fast witness clocks', () => {
    const why = caught(
      'no drift stretch, adverse clocks',
      { ...PROTOCOL, witnessDriftPpm: 0, adverseClocks: true },
      3000,
    );
    assert.match(why, /^S1:/);
  });

  test('a claim_settle claimant that holds after one grant, without a quorum', () => {
    const why = caught('settle claimant', { ...PROTOCOL, claimant: 'settle' }, 1000);
    assert.match(why, /^S[12]:/);
  });
});

describe('regressions (found by this model)', () => {
  test('a changed want applies from the next round: earlier grants count for the duration they asked for', () => {
    // c1 asks for 1000 ms, then for 2500 before the grants arrive: they must
    // count for 1000 (the witnesses hold 1000 stretched), or c2 takes over
    // while c1 still believes it holds.
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'want', c: 1, wl: 0, dur: 0 },
      { k: 'poll', c: 0 },
      { k: 'want', c: 0, wl: 0, dur: 1 },
      { k: 'flush' },
      { k: 'flush' },
      { k: 'poll', c: 1 },
      { k: 'flush' },
      { k: 'flush' },
      { k: 'advance', ms: 1100 },
      { k: 'poll', c: 1 },
      { k: 'flush' },
      { k: 'flush' },
    ]);
    const world = new World(s, PROTOCOL);
    for (const step of s.steps) world.apply(step);
    assert.equal(world.handovers().all, 1, explain(s, PROTOCOL));
  });

  test('a restarted witness holds the longest duration a renewal of the ballot asked for', () => {
    // c1 holds for 2500 ms, renews asking for 1000, and two witnesses
    // restart: they must hold 2500 again, not 1000.
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 1 },
      { k: 'want', c: 1, wl: 0, dur: 0 },
      { k: 'poll', c: 0 },
      { k: 'flush' },
      { k: 'flush' },
      { k: 'poll', c: 1 },
      { k: 'flush' },
      { k: 'flush' },
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'advance', ms: 800 },
      { k: 'poll', c: 0 },
      { k: 'flush' },
      { k: 'crashWitness', w: 0, offset: 0 },
      { k: 'crashWitness', w: 1, offset: 0 },
      { k: 'advance', ms: 1100 },
      { k: 'poll', c: 1 },
      { k: 'flush' },
      { k: 'flush' },
      { k: 'advance', ms: 1700 },
      { k: 'poll', c: 1 },
      { k: 'flush' },
      { k: 'flush' },
    ]);
    const world = new World(s, PROTOCOL);
    for (const step of s.steps) world.apply(step);
    assert.equal(world.handovers().all, 1, explain(s, PROTOCOL));
  });
});

describe('regressions (found by this model), continued', () => {
  test('after unwant and a new want, a grant of a round sent before the release counts for nothing', () => {
    // c2 renews ballot 1, then stops the workload and releases ballot 1; c1
    // takes ballot 2. c2 wants the workload again before the renewal's
    // grants arrive: they answer a round the release overtook.
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'want', c: 1, wl: 0, dur: 0 },
      { k: 'exchange', c: 1 }, // c2 holds ballot 1
      { k: 'exchange', c: 0 }, // c1 learns ballot 1 (stale-ballot)
      { k: 'advance', ms: 760 },
      { k: 'poll', c: 1 }, // c2 renews ballot 1 (round 2)...
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 }, // ...every witness grants it; the replies are slow
      { k: 'unwant', c: 1, wl: 0 },
      { k: 'exchange', c: 1 }, // c2 releases ballot 1
      { k: 'exchange', c: 0 }, // c1 holds ballot 2
      { k: 'want', c: 1, wl: 0, dur: 0 },
      { k: 'flush' }, // the round-2 grants reach c2
    ]);
    const world = new World(s, PROTOCOL);
    for (const step of s.steps) world.apply(step);
    assert.ok(world.held(0, 'a') && !world.held(1, 'a'), explain(s, PROTOCOL));
  });
});

describe('scratchC', () => {
  test('contended release', () => {
    const s = scenario([
      { k: 'want', c: 1, wl: 0, dur: 1 },
      { k: 'want', c: 0, wl: 0, dur: 1 },
      { k: 'poll', c: 1 },
      { k: 'drop', i: 0 },
      { k: 'drop', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'poll', c: 0 },
      { k: 'drop', i: 0 },
      { k: 'drop', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'advance', ms: 750 },
      { k: 'poll', c: 0 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 2 },
      { k: 'advance', ms: 750 },
      { k: 'poll', c: 0 },
      { k: 'deliver', i: 2 },
      { k: 'deliver', i: 2 },
      { k: 'deliver', i: 2 },
      { k: 'drop', i: 2 },
      { k: 'drop', i: 2 },
      { k: 'drop', i: 2 },
      { k: 'exchange', c: 1 },
      { k: 'advance', ms: 750 },
      { k: 'exchange', c: 1 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 },
    ]);
    console.log(explain(s, { ...PROTOCOL, claimant: 'prefix' }));
  });
});

describe('known protocol bug: a restarted claimant cannot be told from its predecessor', () => {
  // Witnesses know a claimant by node id only, and a restarted claimant
  // starts from ballot highestSeen + 1 = 1 and round 1 again. So
  //  - it renews its dead predecessor's ballot instead of taking a higher one
  //    (the fencing token repeats across the restart), and
  //  - a release its predecessor sent before dying, still in flight, matches
  //    the new process's ballot and frees the lease under it.
  // Fix (not small; wire format and witness records change): a per-process
  // incarnation (random) in every request and in the witness record, which
  // renewals and releases must match; replies echo it. These tests pass once
  // that is in; PROTOCOL then drops deadClaimantMessages: 'vanish'.
  const FULL: Variant = { ...PROTOCOL, deadClaimantMessages: 'linger', strictFencingAcrossRestarts: true };

  test('a release sent by a dead process frees the lease its restarted successor holds', {
    todo: true,
  }, () => {
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'want', c: 1, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // c1 holds ballot 1
      { k: 'exchange', c: 1 }, // c2 learns ballot 1 (stale-ballot)
      { k: 'unwant', c: 0, wl: 0 }, // c1 stops the workload...
      { k: 'poll', c: 0 }, // ...and sends a release of ballot 1, still in flight
      { k: 'crashClaimant', c: 0, offset: 0 },
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // the new c1 renews ballot 1: holds until t=1000
      { k: 'flush' }, // the old release arrives: every witness frees ballot 1
      { k: 'advance', ms: 750 },
      { k: 'exchange', c: 1 }, // c2 takes ballot 2 at t=750
    ]);
    const why = explain(s, { ...PROTOCOL, deadClaimantMessages: 'requests-linger' });
    assert.match(why, /^no violation/, why);
  });

  test('a restarted process holds again with the ballot of its predecessor', { todo: true }, () => {
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 },
      { k: 'crashClaimant', c: 0, offset: 0 },
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 },
    ]);
    const why = explain(s, { ...PROTOCOL, strictFencingAcrossRestarts: true });
    assert.match(why, /^no violation/, why);
  });

  test("S1 and S2 when a dead process's messages are still delivered", { todo: true }, () => {
    const details = searchCounterexample(FULL, 2000);
    const found = details.counterexample?.[0];
    assert.ok(!found, found ? explain(found, FULL) : '');
  });
});

describe('scratch3', () => {
  test('explore', () => {
    const mode = process.env.MODE ?? 'vanish';
    const v: Variant = {
      ...PROTOCOL,
      claimant: 'prefix',
      deadClaimantMessages: mode as Variant['deadClaimantMessages'],
    };
    const steps = Number(process.env.STEPS ?? 150);
    for (let seed = Number(process.env.FROM ?? 1); seed <= Number(process.env.TO ?? 10); seed++) {
      const d = fc.check(
        fc.property(
          scenarioArb(steps, (process.env.PROFILE ?? 'broad') as 'broad'),
          (s) => runScenario(s, v).violation === null,
        ),
        { seed, numRuns: Number(process.env.RUNS ?? 10000) },
      );
      if (d.failed) {
        console.log(`seed ${seed}: after ${d.numRuns} ${String(d.errorInstance).slice(0, 300)}`);
      } else console.log(`seed ${seed}: ok`);
    }
  });
});
