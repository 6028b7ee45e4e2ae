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

/*
 * A deterministic model of the witness-lease protocol (src/ownership): the
 * real WitnessCore and LeaseClaimant exchange messages through an
 * adversarial network (any delay, loss, reordering, duplication,
 * partitions), processes crash and restart (a witness keeps what it
 * persisted, a claimant loses everything), and every node's clock runs at
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
 *       the ballot of every earlier holding of it by another process (a
 *       restarted process of the same node included).
 *
 * A dead claimant's requests still in flight reach the witnesses later;
 * replies to it die with it, as with /silo/lease/1 (a stream per batch). The
 * todo test at the end shows why a transport that routed replies by node id
 * would need more.
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
  /** Restart witness w on an older copy of its store: `back` writes ago (further back than its history: empty). */
  | { k: 'rollbackWitness'; w: number; offset: number; back: number }
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

const STEP_WEIGHTS: StepWeights = {
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
  rollbackWitness: 1,
  crashClaimant: 1,
  want: 3,
  unwant: 1,
  cut: 1,
  heal: 1,
};

function stepArb(weights: StepWeights): fc.Arbitrary<Step> {
  // One arbitrary per kind of step; indices are taken modulo what exists.
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
    rollbackWitness: fc.record({
      k: fc.constant('rollbackWitness'),
      w: fc.nat(4),
      offset: offsetArb,
      back: fc.nat(6),
    }),
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

function scenarioArb(maxSteps: number): fc.Arbitrary<Scenario> {
  return fc.record({
    witnessCount: fc.constantFrom(3 as const, 5 as const),
    claimantCount: fc.constantFrom(2 as const, 3 as const),
    shared: fc.boolean(),
    workloadCount: fc.constantFrom(1 as const, 2 as const),
    ratePpm: fc.array(ratePpmArb, { minLength: 8, maxLength: 8 }),
    offsets: fc.array(offsetArb, { minLength: 8, maxLength: 8 }),
    seed: fc.nat(),
    steps: fc.array(stepArb(STEP_WEIGHTS), { minLength: 1, maxLength: maxSteps, size: 'max' }),
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
  /** W6: a restarted witness grants nothing for one maximal hold (false: it grants at once). */
  quiet: boolean;
  claimant: 'quorum' | 'settle';
  /** Every claimant clock at 1−ρ (slow), every witness clock at 1+ρ (fast). */
  adverseClocks: boolean;
  /**
   * A dead claimant process's requests still in flight reach the witnesses
   * later, whatever the transport. Replies to it are lost with it when each
   * batch has its own request/response stream (`stream`, /silo/lease/1), or
   * reach the node's next process when replies are routed by node id
   * (`node`).
   */
  repliesTo: 'stream' | 'node';
  /** Each claimant process has its own incarnation (false: all have incarnation 1, as before incarnations). */
  incarnations: boolean;
}

const PROTOCOL: Variant = {
  witnessDriftPpm: DRIFT_PPM,
  durable: true,
  quiet: true,
  claimant: 'quorum',
  adverseClocks: false,
  repliesTo: 'stream',
  incarnations: true,
};

// ---------------------------------------------------------------------------
// The world

/** `process`: the pid of the claimant process that sent the request, or that the reply answers. */
type Message =
  | { kind: 'request'; from: string; to: string; process: number; request: LeaseRequest }
  | { kind: 'reply'; from: string; to: string; process: number; reply: LeaseReply };

interface WitnessProcess {
  id: string;
  core: WitnessCore;
  offset: number;
}

interface ClaimantProcess {
  id: string;
  /** The model's process id, unique per process: a restart is a new process. */
  pid: number;
  core: ClaimantLike;
  offset: number;
}

/** One stretch of real time in which one claimant process believes it holds one workload. */
interface Episode {
  workload: string;
  node: string;
  pid: number;
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
  /** A witness restarted on an older copy of its store in this run (S2 is no longer claimed). */
  private rolledBack = false;
  /** Every state each witness's store has been in, oldest first (what an older copy could hold). */
  private readonly history = new Map<string, Map<string, WitnessRecord>[]>();
  /** pid/workload → the episode going on. */
  private readonly open = new Map<string, Episode>();
  private readonly rate = new Map<string, number>();
  private nextPid = 0;

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
      this.history.set(id, []);
      this.witnesses.set(id, this.newWitness(id, scenario.offsets[i] ?? 0, false));
    });
    this.claimants = claimantIds.map((id, i) => this.newClaimant(id, scenario.offsets[5 + i] ?? 0));
  }

  /** `restarted`: the process starts on a store that existed (W6 applies); false only for the first start. */
  private newWitness(id: string, offset: number, restarted: boolean): WitnessProcess {
    const core = new WitnessCore({
      selfId: id,
      clockDriftPpm: this.variant.witnessDriftPpm,
      maxLeaseMs: MAX_DURATION,
    });
    core.setConfig(this.config);
    const now = this.local(id, offset);
    core.restore(this.stores.get(id)!.values(), now);
    if (restarted && this.variant.quiet) core.startQuietPeriod(now);
    return { id, core, offset };
  }

  private newClaimant(id: string, offset: number): ClaimantProcess {
    const random = mulberry32((this.scenario.seed + this.nextPid * 0x9e3779b9) >>> 0);
    const core: ClaimantLike =
      this.variant.claimant === 'settle'
        ? new SettleClaimant(id, random)
        : new LeaseClaimant({ selfId: id, random, ...(this.variant.incarnations ? {} : { incarnation: 1 }) });
    return { id, pid: this.nextPid++, core, offset };
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
      if (persist !== null && this.variant.durable) {
        const store = this.stores.get(witness.id)!;
        store.set(persist.workload, persist);
        this.history.get(witness.id)!.push(new Map(store));
      }
      this.send({ kind: 'reply', from: witness.id, to: message.from, process: message.process, reply });
    } else {
      const claimant = this.claimants.find((c) => c.id === message.to)!;
      // The process that asked is dead: only a transport that routes replies
      // by node id hands its reply to the node's next process.
      if (claimant.pid !== message.process && this.variant.repliesTo === 'stream') {
        this.log(`  lost: the process that asked is gone`);
        return;
      }
      claimant.core.onReply(message.reply, this.claimantNow(claimant));
    }
  }

  private poll(claimant: ClaimantProcess): void {
    for (const out of claimant.core.poll(this.claimantNow(claimant), this.config)) {
      this.log(`send ${claimant.id}#${claimant.pid}→${out.to} ${describeRequest(out.request)}`);
      this.send({
        kind: 'request',
        from: claimant.id,
        to: out.to,
        process: claimant.pid,
        request: out.request,
      });
    }
  }

  /** The process stopped the workload (or died): its belief ends now. */
  private endBelief(claimant: ClaimantProcess, workload: string | null): void {
    for (const wl of workload === null ? this.workloads : [workload]) {
      const key = `${claimant.pid}/${wl}`;
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
        this.witnesses.set(id, this.newWitness(id, step.offset, true));
        break;
      }
      case 'rollbackWitness': {
        const id = pick(this.witnessIds, step.w);
        if (this.open.size > 0) this.restartsUnderLease++;
        const history = this.history.get(id)!;
        const kept = Math.max(0, history.length - 1 - step.back);
        const copy = kept === 0 ? new Map<string, WitnessRecord>() : new Map(history[kept - 1]);
        history.length = kept;
        this.stores.set(id, copy);
        this.rolledBack = true;
        this.log(`restart witness ${id} on a copy of its store ${step.back + 1} writes old`);
        this.witnesses.set(id, this.newWitness(id, step.offset, true));
        break;
      }
      case 'crashClaimant': {
        const index = step.c % this.claimants.length;
        const old = this.claimants[index]!;
        this.endBelief(old, null);
        this.claimants[index] = this.newClaimant(old.id, step.offset);
        this.log(`crash+restart claimant ${old.id}#${old.pid} → #${this.claimants[index]!.pid}`);
        break;
      }
      case 'want': {
        const claimant = pick(this.claimants, step.c);
        const workload = pick(this.workloads, step.wl);
        const durationMs = pick(DURATIONS, step.dur);
        this.log(`${claimant.id}#${claimant.pid} wants ${workload} for ${durationMs}`);
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
        this.log(`${claimant.id}#${claimant.pid} unwants ${workload} (stopped)`);
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
        const key = `${claimant.pid}/${workload}`;
        let episode = this.open.get(key);
        if (episode && (!status.held || status.ballot !== episode.ballot)) {
          this.open.delete(key);
          episode = undefined;
        }
        if (!status.held) continue;
        if (status.validUntil === null)
          throw new Violation(`${claimant.id} holds ${workload} without validUntil`);
        const end = this.realOf(claimant.id, claimant.offset, status.validUntil);
        const extended = !episode || end > episode.end;
        if (!episode) {
          this.checkFencing(claimant, workload, status.ballot);
          episode = {
            workload,
            node: claimant.id,
            pid: claimant.pid,
            ballot: status.ballot,
            start: this.real,
            end: Number.NEGATIVE_INFINITY,
          };
          this.episodes.push(episode);
          this.open.set(key, episode);
        }
        // The belief lasts until the latest validUntil ever reported.
        if (extended) {
          episode.end = end;
          this.log(
            `  ${claimant.id}#${claimant.pid} holds ${workload} with ballot ${status.ballot} until t=${episode.end.toFixed(1)}`,
          );
        }
        for (const other of this.episodes) {
          if (other.workload !== workload || other.pid === episode.pid) continue;
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
    // S2 is not claimed once a witness restarted on an older copy of its
    // store: it forgot the ballots it granted since, and a quorum of
    // witnesses none of which remembers a ballot lets it be granted again
    // (W6 keeps S1; docs/placement.md, "What stays open").
    if (this.rolledBack) return;
    for (const earlier of this.episodes) {
      if (earlier.workload !== workload) continue;
      // A process may hold again with its own ballot (after a lapse nobody
      // else filled); anyone else, a restarted process of the node included,
      // needs a higher one.
      const other = earlier.pid !== claimant.pid;
      if (other ? earlier.ballot >= ballot : earlier.ballot > ballot) {
        throw new Violation(
          `S2: ${claimant.id}#${claimant.pid} newly holds ${workload} at t=${this.real} with ballot ${ballot}, ` +
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
 * A lone claimant holds within this long of the network healing: the
 * leases granted before (or renewed by requests still in flight) run out,
 * ≤ 2.6 s (the longest hold, stretched by the drift bound, on a fast
 * clock); a back-off begun just before, ≤ 5.25 s (a claimant refused as
 * `held` gives its ballot back and waits up to 7 × 1.5 retry periods);
 * then two acquisition rounds (learn the ballot, win), ≤ 1.5 s.
 */
const LIVENESS_BOUND_MS = 4 * MAX_DURATION;

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
  return `${e.node}#${e.pid} (ballot ${e.ballot}) over [${e.start}, ${e.end.toFixed(1)})`;
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
function searchCounterexample(variant: Variant, numRuns: number) {
  return fc.check(
    fc.property(scenarioArb(150), (scenario) => runScenario(scenario, variant).violation === null),
    { seed: SEED, numRuns },
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
  test('S1 and S2 hold under loss, delay, duplication, partitions, restarts and drifting clocks (S1 also when a witness restarts on an older copy of its store)', () => {
    const runs = 50_000;
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
    // (Quiet periods after witness restarts, W6, make handovers rarer: about
    // 80 tight ones in 50,000 runs with this seed, down from about 200.)
    assert.ok(
      seen.tightHandovers >= runs / 1000,
      `only ${seen.tightHandovers} tight handovers in ${runs} runs`,
    );
    assert.ok(
      seen.restartsUnderLease >= runs / 20,
      `only ${seen.restartsUnderLease} witness restarts under a lease`,
    );
  });

  test('a lone claimant holds within a few lease lengths once the network heals, and keeps the lease', () => {
    let worst = 0;
    const runs = 1000;
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
  const caught = (name: string, variant: Variant, numRuns: number) => {
    const details = searchCounterexample(variant, numRuns);
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

  test('witnesses restarted on an older copy of their store that grant at once (no quiet period, W6)', () => {
    const why = caught('no quiet period', { ...PROTOCOL, quiet: false }, 5000);
    assert.match(why, /^S1:/);
    assert.match(why, /restart witness w\d on a copy of its store/);
  });

  test('witnesses that do not stretch holds for drift', () => {
    const why = caught('no drift stretch', { ...PROTOCOL, witnessDriftPpm: 0 }, 30_000);
    assert.match(why, /^S[12]:/);
  });

  test('witnesses that do not stretch holds for drift, slow claimant clocks and fast witness clocks', () => {
    const why = caught(
      'no drift stretch, adverse clocks',
      { ...PROTOCOL, witnessDriftPpm: 0, adverseClocks: true },
      3000,
    );
    assert.match(why, /^S[12]:/);
  });

  test('claimants without incarnations (a restarted process looks like its predecessor)', () => {
    const why = caught('no incarnations', { ...PROTOCOL, incarnations: false }, 3000);
    assert.match(why, /^S[12]:/);
  });

  test('a claim_settle claimant that holds after one grant, without a quorum', () => {
    const why = caught('settle claimant', { ...PROTOCOL, claimant: 'settle' }, 1000);
    assert.match(why, /^S[12]:/);
  });
});

describe('regressions (found by this model): lease lengths', () => {
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
    // restart: they must hold 2500 again (from the restart), not 1000.
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 1 },
      { k: 'want', c: 1, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // c1 holds until t=2500
      { k: 'exchange', c: 1 }, // c2 learns ballot 1
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'advance', ms: 800 },
      { k: 'poll', c: 0 }, // c1 renews for 1000...
      { k: 'flush' }, // ...the witnesses grant it, the replies stay out
      { k: 'crashWitness', w: 0, offset: 0 },
      { k: 'crashWitness', w: 1, offset: 0 },
      { k: 'advance', ms: 1100 },
      { k: 'exchange', c: 1 }, // t=1900: c1 still believes it holds
      { k: 'advance', ms: 1700 },
      { k: 'exchange', c: 1 },
      { k: 'advance', ms: 1500 },
      { k: 'exchange', c: 1 }, // t=5100: everything expired, c2 takes over
    ]);
    const world = new World(s, PROTOCOL);
    for (const step of s.steps) world.apply(step);
    assert.ok(world.held(1, 'a') && world.handovers().all === 1, explain(s, PROTOCOL));
  });
});

describe('regressions (found by this model): unwant', () => {
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
  test('a new want after the releases went out takes a ballot above the released one', () => {
    // c1 releases ballot 1 (three rounds, all slow) and, after the last,
    // wants the workload again: ballot 1 again would be renewed now and
    // freed by the releases when they arrive.
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'want', c: 1, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // c1 holds ballot 1
      { k: 'unwant', c: 0, wl: 0 },
      { k: 'poll', c: 0 }, // release rounds, all in flight
      { k: 'advance', ms: 750 },
      { k: 'poll', c: 0 },
      { k: 'advance', ms: 750 },
      { k: 'poll', c: 0 },
      { k: 'advance', ms: 750 },
      { k: 'poll', c: 0 }, // nothing more to send
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // c1 holds again, until t=3250
      { k: 'flush' }, // the releases arrive
      { k: 'exchange', c: 1 },
      { k: 'advance', ms: 750 },
      { k: 'exchange', c: 1 }, // t=3000: c2 asks with ballot 2
    ]);
    const world = new World(s, PROTOCOL);
    for (const step of s.steps) world.apply(step);
    assert.ok(world.held(0, 'a') && !world.held(1, 'a'), explain(s, PROTOCOL));
  });
});

describe('regressions (found by this model): contention', () => {
  test('a grant of a round sent before a contended claimant gave its ballot back counts for nothing', () => {
    // c2 holds w3 only; c1 gets w1 and w2 (slow replies) and "held" from w3,
    // so it gives its ballot back (contention) before the grants arrive. c2
    // then wins w1 and w2: c1's late grants answer a round its release
    // overtook.
    const s = scenario([
      { k: 'want', c: 1, wl: 0, dur: 1 },
      { k: 'want', c: 0, wl: 0, dur: 1 },
      { k: 'poll', c: 1 },
      { k: 'drop', i: 0 },
      { k: 'drop', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 }, // c2 holds w3 (ballot 1), not a quorum
      { k: 'poll', c: 0 },
      { k: 'drop', i: 0 },
      { k: 'drop', i: 0 },
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 }, // c1 learns ballot 1 from w3
      { k: 'advance', ms: 750 },
      { k: 'poll', c: 0 }, // c1 asks with ballot 2
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 }, // w1, w2 grant it: the replies are slow
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 2 }, // w3: held by c2, so c1 is contended
      { k: 'advance', ms: 750 },
      { k: 'poll', c: 0 }, // c1 gives ballot 2 back
      { k: 'deliver', i: 2 },
      { k: 'deliver', i: 2 },
      { k: 'deliver', i: 2 },
      { k: 'drop', i: 2 },
      { k: 'drop', i: 2 },
      { k: 'drop', i: 2 },
      { k: 'exchange', c: 1 }, // c2 learns ballot 2
      { k: 'advance', ms: 750 },
      { k: 'exchange', c: 1 }, // c2 holds ballot 3
      { k: 'deliver', i: 0 },
      { k: 'deliver', i: 0 }, // c1's slow grants of ballot 2 arrive
    ]);
    const world = new World(s, PROTOCOL);
    for (const step of s.steps) world.apply(step);
    assert.ok(world.held(1, 'a') && !world.held(0, 'a'), explain(s, PROTOCOL));
  });
});

describe('regressions (found by this model): a restarted claimant is another claimant', () => {
  test('a release sent by a dead process does not free the lease its restarted successor holds', () => {
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'want', c: 1, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // c1 holds ballot 1
      { k: 'exchange', c: 1 }, // c2 learns ballot 1 (stale-ballot)
      { k: 'unwant', c: 0, wl: 0 }, // c1 stops the workload...
      { k: 'poll', c: 0 }, // ...and sends a release of ballot 1, still in flight
      { k: 'crashClaimant', c: 0, offset: 0 },
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // without incarnations: renews ballot 1
      { k: 'advance', ms: 750 },
      { k: 'exchange', c: 0 }, // the new c1 holds until t=1750
      { k: 'flush' }, // the old release arrives (without incarnations: frees ballot 1)
      { k: 'exchange', c: 1 }, // c2 asks with ballot 2 at t=750
    ]);
    const world = new World(s, PROTOCOL);
    for (const step of s.steps) world.apply(step);
    assert.ok(world.held(0, 'a') && !world.held(1, 'a'), explain(s, PROTOCOL));
  });

  test('a restarted process does not hold again with the ballot of its predecessor', () => {
    const s = scenario([
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // c1 holds ballot 1
      { k: 'crashClaimant', c: 0, offset: 0 },
      { k: 'want', c: 0, wl: 0, dur: 0 },
      { k: 'exchange', c: 0 }, // refused: ballot 1 is its predecessor's
      { k: 'advance', ms: 750 },
      { k: 'exchange', c: 0 }, // ballot 2
    ]);
    const world = new World(s, PROTOCOL);
    for (const step of s.steps) world.apply(step);
    assert.ok(world.held(0, 'a'), explain(s, PROTOCOL));
    assert.deepEqual(
      world.episodes.map((e) => e.ballot),
      [1, 2],
    );
  });
});

describe('open: replies routed by node id reach a restarted process', () => {
  // /silo/lease/1 answers each batch on its own stream, so a reply never
  // outlives the process that asked. A transport that routed replies by node
  // id would hand a dead process's grant (round 1, ballot 1) to its
  // successor, whose own round 1 with ballot 1 it seems to answer: the
  // successor counts it from its own, later, send time. Replies would have
  // to name the incarnation they answer (or rounds be unique across
  // processes) for such a transport.
  const NODE_ROUTED: Variant = { ...PROTOCOL, repliesTo: 'node' };

  test('S1 and S2 when replies to a dead process reach its successor', { todo: true }, () => {
    const details = searchCounterexample(NODE_ROUTED, 3000);
    const found = details.counterexample?.[0];
    assert.ok(!found, found ? explain(found, NODE_ROUTED) : '');
  });
});
