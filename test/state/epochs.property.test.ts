import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  carryOver,
  type EpochInfo,
  GENESIS_EPOCH,
  judgeEpoch,
  startEpoch,
} from '../../src/state/epochs/epoch.js';
import { isTombstone, type LwwRecord, newerRecord, winners } from '../../src/state/epochs/records.js';
import { compareStamps, HybridClock, type Stamp } from '../../src/state/epochs/stamp.js';

/*
 * A deterministic model of epoch compaction (src/state/epochs, docs/epochs.md):
 * nodes write last-writer-wins records into their own slots, replicate them
 * by deltas and full-state syncs through an adversarial network (delay,
 * reordering, duplication, loss, partitions), crash (keeping what is durable:
 * the epoch and its slots; the clock restarts from what the slots hold), and
 * start epochs whenever the schedule says, concurrently or not, in a
 * partition or not. A node in an older epoch is answered with the newer
 * epoch's state and adopts it, carrying its own state over (`carryOver`).
 *
 * After the schedule the network heals and delivers everything, then the
 * nodes sync pairwise until nothing changes; the checker asserts:
 *   C1. every node is in the same epoch and holds the same winners;
 *   C2. for every key, the winner is the newest acknowledged write of it
 *       (a deletion: no value). The starter's view, the order in which
 *       nodes hear of competing epochs, and crashes change nothing.
 * Broken variants (a node that adopts without carrying its state over; a
 * starter that drops tombstones) are shown to fail it.
 */

const SEED = Number(process.env.EPOCHS_SEED ?? 20_261_205);
const KEYS = ['a', 'b', 'c'] as const;

type Variant = 'correct' | 'no-carry' | 'drop-tombstones';

type Message =
  | { kind: 'delta'; epoch: EpochInfo; key: string; owner: string; record: LwwRecord<number> }
  | { kind: 'full'; epoch: EpochInfo; slots: SlotMap }
  | { kind: 'pull' };

type SlotMap = Map<string, Map<string, LwwRecord<number>>>;

interface Envelope {
  from: number;
  to: number;
  message: Message;
}

type Step =
  | { k: 'write'; n: number; key: number; del: boolean }
  | { k: 'advance'; ms: number }
  | { k: 'deliver'; i: number }
  | { k: 'dup'; i: number }
  | { k: 'drop'; i: number }
  | { k: 'crash'; n: number }
  | { k: 'start'; n: number }
  | { k: 'sync'; from: number; to: number }
  | { k: 'cut'; mask: number }
  | { k: 'heal' };

interface Acked {
  key: string;
  stamp: Stamp;
  deleted: boolean;
  value: number;
}

function cloneSlots(slots: ReadonlyMap<string, ReadonlyMap<string, LwwRecord<number>>>): SlotMap {
  return new Map([...slots].map(([key, owners]) => [key, new Map(owners)]));
}

class ModelNode {
  epoch: EpochInfo = GENESIS_EPOCH;
  slots: SlotMap = new Map();
  clock: HybridClock;

  constructor(
    readonly id: string,
    private readonly world: World,
  ) {
    this.clock = new HybridClock(id);
  }

  /** Puts `record` into `owner`'s slot of `key` unless that slot holds a newer one. */
  put(key: string, owner: string, record: LwwRecord<number>): boolean {
    this.clock.observe(record.stamp);
    let owners = this.slots.get(key);
    if (owners === undefined) {
      owners = new Map();
      this.slots.set(key, owners);
    }
    const held = owners.get(owner);
    if (held !== undefined && compareStamps(held.stamp, record.stamp) >= 0) return false;
    owners.set(owner, record);
    return true;
  }

  write(key: string, deleted: boolean, value: number): Acked {
    const stamp = this.clock.next(this.world.nodeNow(this));
    const record: LwwRecord<number> = deleted ? { stamp, deleted: true } : { stamp, value };
    this.put(key, this.id, record);
    this.world.broadcast(this, { kind: 'delta', epoch: this.epoch, key, owner: this.id, record });
    return { key, stamp, deleted, value };
  }

  start(): void {
    const now = this.world.nodeNow(this);
    const started = startEpoch(this.epoch, this.slots, { starter: this.id, stamp: this.clock.next(now) });
    this.epoch = started.epoch;
    this.slots = cloneSlots(started.slots);
    if (this.world.variant === 'drop-tombstones') {
      for (const [key, owners] of this.slots)
        if ([...owners.values()].some(isTombstone)) this.slots.delete(key);
    }
    this.world.broadcast(this, { kind: 'full', epoch: this.epoch, slots: cloneSlots(this.slots) });
  }

  receive(from: number, message: Message): void {
    if (message.kind === 'pull') {
      this.world.send(this, from, this.full());
      return;
    }
    const verdict = judgeEpoch(this.epoch, message.epoch);
    if (verdict === 'answer') {
      this.world.send(this, from, this.full());
      return;
    }
    if (verdict === 'adopt') {
      if (message.kind === 'delta') this.world.send(this, from, { kind: 'pull' });
      else this.adopt(message.epoch, message.slots);
      return;
    }
    if (message.kind === 'delta') this.put(message.key, message.owner, message.record);
    else for (const [key, owners] of message.slots) for (const [o, r] of owners) this.put(key, o, r);
  }

  private adopt(epoch: EpochInfo, slots: SlotMap): void {
    const old = this.slots;
    this.epoch = epoch;
    this.slots = new Map();
    for (const [key, owners] of slots) for (const [o, r] of owners) this.put(key, o, r);
    if (this.world.variant === 'no-carry') return;
    for (const { key, record } of carryOver(old, this.slots)) {
      if (this.put(key, this.id, record)) {
        this.world.broadcast(this, { kind: 'delta', epoch, key, owner: this.id, record });
      }
    }
  }

  full(): Message {
    return { kind: 'full', epoch: this.epoch, slots: cloneSlots(this.slots) };
  }

  crash(): void {
    // Durable: the epoch and the slots. The clock restarts and reads the slots, as a load does.
    this.clock = new HybridClock(this.id);
    for (const owners of this.slots.values()) for (const r of owners.values()) this.clock.observe(r.stamp);
  }
}

class World {
  readonly nodes: ModelNode[];
  readonly inFlight: Envelope[] = [];
  readonly acked: Acked[] = [];
  time = 1000;
  mask = 0;
  private nextValue = 1;

  constructor(
    count: number,
    private readonly offsets: number[],
    readonly variant: Variant,
  ) {
    this.nodes = Array.from({ length: count }, (_, i) => new ModelNode(`n${i}`, this));
  }

  nodeNow(node: ModelNode): number {
    return this.time + (this.offsets[this.nodes.indexOf(node)] ?? 0);
  }

  send(from: ModelNode, to: number, message: Message): void {
    this.inFlight.push({ from: this.nodes.indexOf(from), to, message });
  }

  broadcast(from: ModelNode, message: Message): void {
    const i = this.nodes.indexOf(from);
    for (let j = 0; j < this.nodes.length; j++) if (j !== i) this.send(from, j, message);
  }

  private side(n: number): number {
    return (this.mask >> n) & 1;
  }

  deliver(index: number): void {
    const [envelope] = this.inFlight.splice(index, 1);
    if (envelope === undefined) return;
    // A message across the cut is lost, as a partition loses it.
    if (this.side(envelope.from) !== this.side(envelope.to)) return;
    (this.nodes[envelope.to] as ModelNode).receive(envelope.from, envelope.message);
  }

  run(step: Step): void {
    const pick = (i: number): number => i % Math.max(1, this.inFlight.length);
    switch (step.k) {
      case 'write': {
        const node = this.nodes[step.n % this.nodes.length] as ModelNode;
        this.acked.push(node.write(KEYS[step.key % KEYS.length] as string, step.del, this.nextValue++));
        return;
      }
      case 'advance':
        this.time += step.ms;
        return;
      case 'deliver':
        if (this.inFlight.length > 0) this.deliver(pick(step.i));
        return;
      case 'dup': {
        const envelope = this.inFlight[pick(step.i)];
        if (envelope !== undefined) this.inFlight.push(envelope);
        return;
      }
      case 'drop':
        if (this.inFlight.length > 0) this.inFlight.splice(pick(step.i), 1);
        return;
      case 'crash': {
        const n = step.n % this.nodes.length;
        // Messages on their way to a dead process die with it.
        for (let i = this.inFlight.length - 1; i >= 0; i--) {
          if (this.inFlight[i]?.to === n) this.inFlight.splice(i, 1);
        }
        (this.nodes[n] as ModelNode).crash();
        return;
      }
      case 'start':
        (this.nodes[step.n % this.nodes.length] as ModelNode).start();
        return;
      case 'sync': {
        const from = step.from % this.nodes.length;
        const to = step.to % this.nodes.length;
        if (from !== to) this.send(this.nodes[from] as ModelNode, to, (this.nodes[from] as ModelNode).full());
        return;
      }
      case 'cut':
        this.mask = step.mask;
        return;
      case 'heal':
        this.mask = 0;
        return;
    }
  }

  /** Heals, delivers everything, then syncs every pair until the nodes agree (or gives up). */
  settle(): void {
    this.mask = 0;
    for (let round = 0; round < 20; round++) {
      let budget = 100_000;
      while (this.inFlight.length > 0 && budget-- > 0) this.deliver(0);
      if (this.agreed()) return;
      for (const a of this.nodes)
        for (let b = 0; b < this.nodes.length; b++) {
          if (this.nodes[b] !== a) this.send(a, b, a.full());
        }
    }
  }

  private agreed(): boolean {
    const [first, ...rest] = this.nodes.map((node) => describeNode(node));
    return rest.every((d) => d === first);
  }
}

function describeNode(node: ModelNode): string {
  const entries = [...winners(node.slots)]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([key, r]) => `${key}=${JSON.stringify(r)}`);
  return `${node.epoch.number}/${node.epoch.id} ${entries.join(' ')}`;
}

/** C1 and C2; returns the first violation, or null. */
function check(world: World): string | null {
  const descriptions = world.nodes.map((node) => describeNode(node));
  if (descriptions.some((d) => d !== descriptions[0])) {
    return `C1: nodes disagree after settling:\n${descriptions.join('\n')}`;
  }
  const node = world.nodes[0] as ModelNode;
  const view = winners(node.slots);
  for (const key of KEYS) {
    const writes = world.acked.filter((w) => w.key === key);
    if (writes.length === 0) {
      if (view.has(key)) return `C2: ${key} holds a record nobody wrote`;
      continue;
    }
    const newest = writes.reduce((a, b) => (compareStamps(b.stamp, a.stamp) > 0 ? b : a));
    const held = view.get(key);
    if (held === undefined || compareStamps(held.stamp, newest.stamp) !== 0) {
      return `C2: ${key}: newest acknowledged write ${JSON.stringify(newest)} lost; holds ${JSON.stringify(held)}`;
    }
  }
  return null;
}

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant('write' as const),
      n: fc.nat(7),
      key: fc.nat(2),
      del: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ k: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 60 }) }),
  },
  { weight: 8, arbitrary: fc.record({ k: fc.constant('deliver' as const), i: fc.nat(50) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('dup' as const), i: fc.nat(50) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('drop' as const), i: fc.nat(50) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('crash' as const), n: fc.nat(7) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('start' as const), n: fc.nat(7) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('sync' as const), from: fc.nat(7), to: fc.nat(7) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('cut' as const), mask: fc.nat(15) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('heal' as const) }) },
);

/** Fewer nodes and keys make the rarer interleavings likelier (the broken-variant searches use them). */
const scenarioArb = (maxCount: number) =>
  fc.record({
    count: fc.integer({ min: 2, max: maxCount }),
    offsets: fc.array(fc.integer({ min: -40, max: 40 }), { minLength: 4, maxLength: 4 }),
    steps: fc.array(stepArb, { maxLength: 80, size: 'max' }),
  });

function runScenario(
  scenario: { count: number; offsets: number[]; steps: Step[] },
  variant: Variant,
): string | null {
  const world = new World(scenario.count, scenario.offsets, variant);
  for (const step of scenario.steps) world.run(step);
  world.settle();
  return check(world);
}

function property(variant: Variant, maxCount = 4) {
  return fc.property(scenarioArb(maxCount), (scenario) => {
    const violation = runScenario(scenario, variant);
    assert.equal(violation, null, violation ?? '');
  });
}

describe('epoch compaction under arbitrary schedules (src/state/epochs)', () => {
  test('every newest acknowledged write survives every epoch switch', () => {
    fc.assert(property('correct'), { seed: SEED, numRuns: 5000 });
  });

  test('the checker fails a node that adopts an epoch without carrying its state over', () => {
    const result = fc.check(property('no-carry'), { seed: SEED, numRuns: 3000 });
    assert.equal(result.failed, true, 'the broken variant passed: the checker cannot see lost writes');
    assert.match(String(result.errorInstance), /C2: .* lost/);
  });

  test('the checker fails a starter that drops tombstones (a deleted key comes back)', () => {
    const result = fc.check(property('drop-tombstones', 2), { seed: SEED + 1, numRuns: 3000 });
    assert.equal(result.failed, true, 'the broken variant passed: the checker cannot see resurrections');
    assert.match(String(result.errorInstance), /"deleted":true/);
  });
});

describe('epoch core', () => {
  test('a clock never goes back and outranks what it observed', () => {
    const clock = new HybridClock('n1');
    const a = clock.next(100);
    const b = clock.next(90);
    assert.ok(compareStamps(b, a) > 0, 'a wall clock step back still gives a later stamp');
    clock.observe({ at: 500, seq: 3, writer: 'n2' });
    const c = clock.next(200);
    assert.ok(compareStamps(c, { at: 500, seq: 3, writer: 'n2' }) > 0);
  });

  test('stamps order by time, then sequence, then writer', () => {
    assert.ok(compareStamps({ at: 1, seq: 9, writer: 'z' }, { at: 2, seq: 0, writer: 'a' }) < 0);
    assert.ok(compareStamps({ at: 2, seq: 1, writer: 'a' }, { at: 2, seq: 0, writer: 'z' }) > 0);
    assert.ok(compareStamps({ at: 2, seq: 0, writer: 'b' }, { at: 2, seq: 0, writer: 'a' }) > 0);
    const r1: LwwRecord<number> = { stamp: { at: 1, seq: 0, writer: 'a' }, value: 1 };
    const r2: LwwRecord<number> = { stamp: { at: 1, seq: 0, writer: 'b' }, deleted: true };
    assert.equal(newerRecord(r1, r2), r2);
    assert.equal(newerRecord(r2, r1), r2);
  });

  test('an epoch start keeps each key once, tombstones included, in the starter slot', () => {
    const slots = new Map<string, ReadonlyMap<string, LwwRecord<number>>>([
      ['live', new Map([['n1', { stamp: { at: 10, seq: 0, writer: 'n1' }, value: 1 }]])],
      [
        'deleted',
        new Map<string, LwwRecord<number>>([
          ['n1', { stamp: { at: 20, seq: 0, writer: 'n1' }, value: 2 }],
          ['n2', { stamp: { at: 30, seq: 0, writer: 'n2' }, deleted: true }],
        ]),
      ],
    ]);
    const started = startEpoch(GENESIS_EPOCH, slots, {
      starter: 'n3',
      stamp: { at: 100, seq: 0, writer: 'n3' },
    });
    assert.equal(started.epoch.number, 1);
    assert.deepEqual(
      [...started.slots].map(([key, owners]) => [key, [...owners.keys()], owners.get('n3')?.stamp.at]),
      [
        ['live', ['n3'], 10],
        ['deleted', ['n3'], 30],
      ],
    );
    const again = startEpoch(GENESIS_EPOCH, slots, {
      starter: 'n1',
      stamp: { at: 100, seq: 0, writer: 'n1' },
    });
    assert.notEqual(again.epoch.id, started.epoch.id, 'two starters of one number get two ids');
  });

  test('carry-over writes what the epoch lacks or holds older, nothing else', () => {
    const rec = (at: number, value?: number): LwwRecord<number> =>
      value === undefined
        ? { stamp: { at, seq: 0, writer: 'w' }, deleted: true }
        : { stamp: { at, seq: 0, writer: 'w' }, value };
    const old = new Map([
      ['newer', new Map([['me', rec(70, 1)]])],
      ['older', new Map([['me', rec(60, 1)]])],
      ['same', new Map([['me', rec(65, 2)]])],
      ['absent', new Map([['me', rec(40, 1)]])],
      ['absent-delete', new Map([['me', rec(40)]])],
    ]);
    const adopted = new Map([
      ['newer', new Map([['s', rec(65, 2)]])],
      ['older', new Map([['s', rec(65, 2)]])],
      ['same', new Map([['s', rec(65, 2)]])],
    ]);
    assert.deepEqual(
      carryOver(old, adopted).map((c) => c.key),
      ['newer', 'absent', 'absent-delete'],
    );
    const epoch: EpochInfo = { number: 2, id: 'x' };
    assert.equal(judgeEpoch(epoch, { ...epoch }), 'merge');
    assert.equal(judgeEpoch(epoch, { ...epoch, number: 3 }), 'adopt');
    assert.equal(judgeEpoch(epoch, { ...epoch, id: 'a' }), 'answer');
    assert.equal(judgeEpoch(epoch, { ...epoch, id: 'y' }), 'adopt');
  });
});
