import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  MemberIndex,
  type MemberState,
  type MemberUpdate,
  SwimCore,
  type SwimCoreOptions,
  type SwimMessage,
  SwimParamsError,
} from '../../src/membership/swim-core.js';

/*
 * A deterministic model of the membership protocol (src/membership): real
 * SwimCores exchange messages through an adversarial network (any delay up
 * to several probe periods, so reordering; loss; duplication; partitions),
 * processes crash and restart without their incarnation, and each process's
 * monotonic clock has its own offset. Real time is a number the schedule
 * advances; there are no timers.
 *
 * Checked:
 *   M1. monotone views: what one process believes of a member only ever
 *       moves up the (incarnation, alive < suspect < dead) order;
 *   M2. convergence: some time after the network heals, every live process
 *       sees every other live process alive at that process's own
 *       incarnation, and every crashed one dead;
 *   M3. accuracy in a good network: with delays under the probe timeout and
 *       no loss, nobody is ever suspected;
 *   M4. completeness: a crash in a good network is declared dead by every
 *       live process within a bound.
 * Broken variants (no refutation, no probing of dead members) are run
 * through the same checker and must fail it.
 */

const SEED = Number(process.env.SWIM_SEED ?? 20_261_203);
const PARAMS = { probeIntervalMs: 1000, probeTimeoutMs: 500 } as const;
/** Enough for awareness to decay from its ceiling, a full round-robin pass, the longest suspicion and a reconnect. */
const SETTLE_MS = 240_000;

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type CoreFactory = (options: SwimCoreOptions) => SwimCore;

/** Broken on purpose: never answers a suspicion of itself. */
class NoRefuteCore extends SwimCore {
  protected override refute(_update: MemberUpdate): void {}
}

/** Broken on purpose: never pings a dead member, so a partition both sides declared dead never heals. */
class NoReconnectCore extends SwimCore {
  protected override pingDeadMember(): void {}
}

/** Broken on purpose: counts no confirmations, so every suspicion runs its longest timeout. */
class NoConfirmCore extends SwimCore {
  protected override confirm(_member: number, _from: string): void {}
}

const correct: CoreFactory = (o) => new SwimCore(o);
const noConfirm: CoreFactory = (o) => new NoConfirmCore(o);
const noRefute: CoreFactory = (o) => new NoRefuteCore(o);
const noReconnect: CoreFactory = (o) => new NoReconnectCore(o);

// ---------------------------------------------------------------------------
// Schedules

type Step =
  | { k: 'run'; ms: number }
  | { k: 'delay'; min: number; max: number }
  | { k: 'loss'; pct: number }
  | { k: 'dup'; pct: number }
  | { k: 'crash'; node: number }
  | { k: 'restart'; node: number }
  | { k: 'partition'; mask: number }
  | { k: 'heal' };

function stepArb(nodes: number): fc.Arbitrary<Step> {
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({ k: fc.constant('run' as const), ms: fc.integer({ min: 1, max: 8000 }) }),
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 3000 }))
        .map(([a, b]) => ({ k: 'delay' as const, min: Math.min(a, b), max: Math.max(a, b) })),
    },
    {
      weight: 2,
      arbitrary: fc.record({ k: fc.constant('loss' as const), pct: fc.integer({ min: 0, max: 100 }) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ k: fc.constant('dup' as const), pct: fc.integer({ min: 0, max: 100 }) }),
    },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('crash' as const), node: fc.nat(nodes - 1) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('restart' as const), node: fc.nat(nodes - 1) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        k: fc.constant('partition' as const),
        mask: fc.integer({ min: 1, max: (1 << nodes) - 2 }),
      }),
    },
    { weight: 1, arbitrary: fc.constant({ k: 'heal' as const }) },
  );
}

const scheduleArb = fc.integer({ min: 3, max: 6 }).chain((nodes) =>
  fc.record({
    nodes: fc.constant(nodes),
    seed: fc.nat(),
    offsets: fc.array(fc.integer({ min: 0, max: 1_000_000 }), { minLength: nodes, maxLength: nodes }),
    steps: fc.array(stepArb(nodes), { minLength: 1, maxLength: 40 }),
  }),
);

type Schedule = { nodes: number; seed: number; offsets: number[]; steps: Step[] };

// ---------------------------------------------------------------------------
// The world

interface Flight {
  at: number;
  from: number;
  to: number;
  message: SwimMessage;
}

const ORDER: Record<MemberState, number> = { alive: 0, suspect: 1, dead: 2 };

class World {
  readonly names: string[];
  readonly cores: (SwimCore | null)[];
  readonly index = new MemberIndex();
  now = 0;
  private flights: Flight[] = [];
  private delay = { min: 5, max: 50 };
  private lossPct = 0;
  private dupPct = 0;
  /** Partition side per node (all 0: whole). */
  private side: number[];
  private readonly random: () => number;
  /** Per process generation: views of a crashed process are not compared with its successor's. */
  private readonly lastSeen: Map<string, [number, number]>[];
  readonly violations: string[] = [];
  readonly suspicions: string[] = [];
  private generation: number[];

  constructor(
    private readonly schedule: Schedule,
    private readonly make: CoreFactory,
  ) {
    this.names = Array.from({ length: schedule.nodes }, (_, i) => `n${i + 1}`);
    this.random = prng(schedule.seed);
    this.side = this.names.map(() => 0);
    this.generation = this.names.map(() => 0);
    this.lastSeen = this.names.map(() => new Map());
    this.cores = this.names.map((_, i) => this.start(i));
  }

  private start(i: number): SwimCore {
    const core = this.make({
      selfId: this.names[i] as string,
      index: this.index,
      random: prng(this.schedule.seed + 7919 * (i + 1) + 104_729 * (this.generation[i] as number)),
      params: PARAMS,
    });
    core.setMembers(this.names);
    this.lastSeen[i] = new Map();
    return core;
  }

  local(i: number): number {
    return this.now + (this.schedule.offsets[i] as number);
  }

  apply(step: Step): void {
    switch (step.k) {
      case 'run':
        this.run(step.ms);
        return;
      case 'delay':
        this.delay = { min: step.min, max: step.max };
        return;
      case 'loss':
        this.lossPct = step.pct;
        return;
      case 'dup':
        this.dupPct = step.pct;
        return;
      case 'crash':
        this.cores[step.node] = null;
        return;
      case 'restart':
        if (this.cores[step.node] === null) {
          this.generation[step.node] = (this.generation[step.node] as number) + 1;
          this.cores[step.node] = this.start(step.node);
        }
        return;
      case 'partition':
        this.side = this.names.map((_, i) => ((step.mask >> i) & 1 ? 1 : 0));
        return;
      case 'heal':
        this.side = this.names.map(() => 0);
        return;
    }
  }

  good(): void {
    this.apply({ k: 'heal' });
    this.delay = { min: 5, max: 50 };
    this.lossPct = 0;
    this.dupPct = 0;
  }

  /** Runs real time forward, ticking each process at its wake time and delivering what is due. */
  run(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      let next = end;
      for (const [i, core] of this.cores.entries())
        if (core) next = Math.min(next, core.nextWakeAt() - (this.schedule.offsets[i] as number));
      for (const f of this.flights) next = Math.min(next, f.at);
      this.now = Math.max(this.now, next);
      const due = this.flights.filter((f) => f.at <= this.now);
      this.flights = this.flights.filter((f) => f.at > this.now);
      for (const f of due) {
        const core = this.cores[f.to];
        // Crashed processes and the far side of a partition lose what reaches them.
        if (!core || this.side[f.from] !== this.side[f.to]) continue;
        core.receive(this.local(f.to), this.names[f.from] as string, f.message);
        this.drain(f.to);
      }
      for (const [i, core] of this.cores.entries()) {
        if (core && core.nextWakeAt() <= this.local(i)) {
          core.tick(this.local(i));
          this.drain(i);
        }
      }
      if (this.now >= end && due.length === 0) break;
    }
  }

  private drain(i: number): void {
    const core = this.cores[i] as SwimCore;
    const { send, events } = core.takeOutput();
    for (const event of events) {
      if (event.kind !== 'member') continue;
      const key = event.node;
      const was = this.lastSeen[i]?.get(key);
      const rank: [number, number] = [event.incarnation, ORDER[event.state]];
      if (was && !(rank[0] > was[0] || (rank[0] === was[0] && rank[1] > was[1])))
        this.violations.push(
          `M1: ${this.names[i]} went from ${key} (${was}) to (${rank}) at t=${this.now}: not upwards`,
        );
      this.lastSeen[i]?.set(key, rank);
      if (event.state === 'suspect')
        this.suspicions.push(`${this.names[i]} suspects ${key} at t=${this.now}`);
    }
    for (const out of send) {
      const to = this.index.find(out.to) as number;
      if (this.random() * 100 < this.lossPct) continue;
      const copies = this.random() * 100 < this.dupPct ? 2 : 1;
      for (let c = 0; c < copies; c++) {
        const delay = this.delay.min + Math.floor(this.random() * (this.delay.max - this.delay.min + 1));
        // Each copy is its own object: a receiver must not see another's mutation.
        this.flights.push({ at: this.now + delay, from: i, to, message: structuredClone(out.message) });
      }
    }
  }

  /** M2: every live process sees the others as they are. */
  convergenceProblems(): string[] {
    const problems: string[] = [];
    for (const [i, core] of this.cores.entries()) {
      if (!core) continue;
      for (const [j, other] of this.cores.entries()) {
        if (i === j) continue;
        const seen = core.stateOf(this.names[j] as string);
        if (other) {
          if (seen?.state !== 'alive' || seen.incarnation !== other.incarnation)
            problems.push(
              `${this.names[i]} sees ${this.names[j]} ${seen?.state}@${seen?.incarnation}, it is alive@${other.incarnation}`,
            );
        } else if (seen?.state !== 'dead') {
          problems.push(`${this.names[i]} sees crashed ${this.names[j]} ${seen?.state}@${seen?.incarnation}`);
        }
      }
    }
    return problems;
  }
}

/** Plays a schedule, then heals and settles; returns every violation found. */
function check(schedule: Schedule, make: CoreFactory): string[] {
  const world = new World(schedule, make);
  for (const step of schedule.steps) world.apply(step);
  world.good();
  world.run(SETTLE_MS);
  return [...world.violations, ...world.convergenceProblems().map((p) => `M2: ${p}`)];
}

function describeSchedule(s: Schedule): string {
  return `${s.nodes} nodes, seed ${s.seed}: ${s.steps.map((x) => JSON.stringify(x)).join(' ')}`;
}

describe('SWIM membership under arbitrary schedules', () => {
  test('M1 and M2 hold: views only move up, and converge once the network heals', () => {
    fc.assert(
      fc.property(scheduleArb, (schedule) => {
        const problems = check(schedule, correct);
        assert.deepEqual(problems, [], describeSchedule(schedule));
      }),
      { seed: SEED, numRuns: 150 },
    );
  });

  test('M3: in a good network (delays below the probe timeout, no loss) nobody is suspected', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 8 }),
        fc.nat(),
        fc.array(fc.integer({ min: 0, max: 1_000_000 }), { minLength: 8, maxLength: 8 }),
        fc.integer({ min: 0, max: 200 }),
        (nodes, seed, offsets, maxDelay) => {
          const world = new World({ nodes, seed, offsets, steps: [] }, correct);
          world.apply({ k: 'delay', min: 0, max: maxDelay });
          world.run(120_000);
          assert.deepEqual(world.suspicions, []);
          assert.deepEqual(world.violations, []);
          assert.deepEqual(world.convergenceProblems(), []);
        },
      ),
      { seed: SEED, numRuns: 60 },
    );
  });

  test('M4: a crash in a good network is declared dead by every live process within a pass and the longest suspicion', () => {
    fc.assert(
      fc.property(fc.integer({ min: 3, max: 8 }), fc.nat(), fc.nat(7), (nodes, seed, victimRaw) => {
        const victim = victimRaw % nodes;
        const world = new World({ nodes, seed, offsets: Array(8).fill(0), steps: [] }, correct);
        world.run(10_000);
        world.apply({ k: 'crash', node: victim });
        // Each live process probes the victim within two passes (2n periods) and holds the
        // suspicion at most suspicionMaxMult · suspicionMult periods (24 s here).
        world.run(2 * nodes * PARAMS.probeIntervalMs + 24_000 + 2 * PARAMS.probeIntervalMs);
        assert.deepEqual(world.convergenceProblems(), []);
      }),
      { seed: SEED, numRuns: 60 },
    );
  });

  /**
   * Lifeguard's point: independent suspicions cut the timeout from its
   * longest (24 s at n ≤ 10) towards its shortest (4 s). With 8 nodes the
   * victim is probed by someone about once a period, so three confirmations
   * come within seconds and the crash is known everywhere well before the
   * longest timeout alone would have run out.
   */
  const detection = (make: CoreFactory, seed: number, victimRaw: number): number => {
    const nodes = 8;
    const victim = victimRaw % nodes;
    const world = new World({ nodes, seed, offsets: Array(8).fill(0), steps: [] }, make);
    world.run(10_000);
    world.apply({ k: 'crash', node: victim });
    for (let elapsed = 0; elapsed <= 60_000; elapsed += 500) {
      if (world.convergenceProblems().length === 0) return elapsed;
      world.run(500);
    }
    return Number.POSITIVE_INFINITY;
  };
  const CONFIRMED_BOUND_MS = 20_000;

  test('M5: confirmations shorten detection: with 8 nodes a crash is dead everywhere within 20 s (the longest timeout is 24 s)', () => {
    fc.assert(
      fc.property(fc.nat(), fc.nat(7), (seed, victim) => {
        const ms = detection(correct, seed, victim);
        assert.ok(ms <= CONFIRMED_BOUND_MS, `${ms} ms`);
      }),
      { seed: SEED, numRuns: 40 },
    );
  });

  test('M5 catches a detector that counts no confirmations', () => {
    const outcome = fc.check(
      fc.property(
        fc.nat(),
        fc.nat(7),
        (seed, victim) => detection(noConfirm, seed, victim) <= CONFIRMED_BOUND_MS,
      ),
      { seed: SEED, numRuns: 40 },
    );
    assert.equal(outcome.failed, true, 'the broken variant met the bound');
  });

  test('a restarted process that lost its incarnation is seen alive again, above its obituary', () => {
    const world = new World({ nodes: 4, seed: 1, offsets: [0, 0, 0, 0], steps: [] }, correct);
    world.run(5_000);
    world.apply({ k: 'crash', node: 2 });
    world.run(60_000);
    for (const i of [0, 1, 3]) assert.equal(world.cores[i]?.stateOf('n3')?.state, 'dead');
    world.apply({ k: 'restart', node: 2 });
    world.run(30_000);
    assert.deepEqual(world.convergenceProblems(), []);
    assert.ok((world.cores[2]?.incarnation ?? 0) >= 1, 'the new process refuted its obituary');
  });
});

describe('the checker catches broken variants', () => {
  /** A 2|2 split long enough for both sides to declare the other dead, then the heal. */
  const split: Schedule = {
    nodes: 4,
    seed: 3,
    offsets: [0, 0, 0, 0],
    steps: [
      { k: 'run', ms: 5_000 },
      { k: 'partition', mask: 0b0011 },
      { k: 'run', ms: 60_000 },
      { k: 'heal' },
    ],
  };

  test('the correct protocol passes the split', () => {
    assert.deepEqual(check(split, correct), []);
  });

  test('without probing dead members, a split both sides declared dead never heals', () => {
    const problems = check(split, noReconnect);
    assert.ok(
      problems.some((p) => p.startsWith('M2:')),
      problems.join('\n'),
    );
  });

  test('without refutation, a falsely suspected process stays suspected', () => {
    const problems = check(split, noRefute);
    assert.ok(
      problems.some((p) => p.startsWith('M2:')),
      problems.join('\n'),
    );
  });

  test('arbitrary schedules find the broken variants too', () => {
    for (const make of [noRefute, noReconnect]) {
      const outcome = fc.check(
        fc.property(scheduleArb, (schedule) => check(schedule, make).length === 0),
        { seed: SEED, numRuns: 150 },
      );
      assert.equal(outcome.failed, true, 'a broken variant passed every schedule');
    }
  });
});

describe('SwimCore boundaries', () => {
  test('bad parameters are refused with the parameter named', () => {
    const index = new MemberIndex();
    const make = (params: Partial<SwimCoreOptions['params']>) => () =>
      new SwimCore({ selfId: 'a', index, random: Math.random, params });
    assert.throws(make({ probeIntervalMs: 0 }), SwimParamsError);
    assert.throws(make({ probeTimeoutMs: 2000 }), /probeTimeoutMs \(2000\) must be shorter/);
    assert.throws(make({ indirectChecks: 1.5 }), /indirectChecks must be a whole number/);
    assert.throws(make({ maxPiggyback: Number.NaN }), /maxPiggyback must be > 0/);
  });

  test('messages from non-members and malformed updates change nothing', () => {
    const index = new MemberIndex();
    const core = new SwimCore({ selfId: 'a', index, random: prng(1) });
    core.setMembers(['a', 'b']);
    const before = core.view();
    core.receive(0, 'stranger', {
      kind: 'ping',
      seq: 1,
      updates: [{ node: 'b', state: 'dead', incarnation: 9 }],
    });
    const bad = [
      { node: 'b', state: 'gone', incarnation: 1 },
      { node: 'b', state: 'dead', incarnation: -1 },
      { node: 'b', state: 'dead', incarnation: 1.5 },
      { node: 'stranger', state: 'dead', incarnation: 1 },
    ] as unknown as MemberUpdate[];
    core.receive(0, 'b', { kind: 'ack', seq: 99, updates: bad });
    assert.deepEqual(core.view(), before);
    assert.deepEqual(core.takeOutput().send, [], 'a stranger gets no answer');
  });

  test('a revoked member is forgotten at once and no longer probed', () => {
    const index = new MemberIndex();
    const core = new SwimCore({ selfId: 'a', index, random: prng(2) });
    core.setMembers(['a', 'b', 'c']);
    core.setMembers(['a', 'b']);
    assert.equal(core.stateOf('c'), null);
    for (let t = 0; t < 20_000; t += 100) core.tick(t);
    const targets = new Set(core.takeOutput().send.map((s) => s.to));
    assert.deepEqual([...targets], ['b']);
  });
});
