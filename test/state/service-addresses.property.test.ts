import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { formatIpv4, parseIpv4 } from '../../src/identity/ipv4-cidr.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { Origin } from '../../src/state/names.js';
import {
  type AddressClaim,
  claimKey,
  defaultServiceRange,
  planAddressRepair,
  proposeAddress,
  resolveServiceAddresses,
  type ServiceRange,
} from '../../src/state/service-addresses.js';
import { WorkloadsView } from '../../src/state/workloads-view.js';
import { workloadSpec } from '../fixtures/state-records.js';
import { quietLogger } from '../fixtures/state-store.js';

/*
 * Service address allocation (src/state/service-addresses.ts): the pure
 * resolution, and whole WorkloadsView replicas that apply and delete
 * workloads concurrently, exchange updates in any order, then converge.
 */

const SEED = Number(process.env.SERVICE_ADDRESS_SEED ?? 20_261_204);
/** A small range so that collisions and exhaustion actually happen. */
const SMALL: ServiceRange = { first: parseIpv4('10.0.0.200'), last: parseIpv4('10.0.0.207') };
const NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'web', 'db'] as const;

const claimArb = fc.record({
  address: fc.integer({ min: SMALL.first - 2, max: SMALL.last + 2 }).map(formatIpv4),
  workload: fc.constantFrom<string>(...NAMES),
  at: fc.integer({ min: 0, max: 20 }),
});

function isOneToOne(assigned: Map<string, string>): boolean {
  return new Set(assigned.values()).size === assigned.size;
}

describe('resolveServiceAddresses (pure)', () => {
  test('one-to-one, only valid claims, independent of claim order', () => {
    fc.assert(
      fc.property(
        fc.array(claimArb, { maxLength: 30 }),
        fc.subarray<string>([...NAMES]),
        fc.integer(),
        (claims, workloads, salt) => {
          const set = new Set(workloads);
          const assigned = resolveServiceAddresses(claims, set, SMALL);
          assert.ok(isOneToOne(assigned));
          for (const [workload, address] of assigned) {
            assert.ok(set.has(workload));
            const n = parseIpv4(address);
            assert.ok(n >= SMALL.first && n <= SMALL.last);
            assert.ok(claims.some((c) => c.workload === workload && c.address === address));
          }
          const shuffled = [...claims].sort((x, y) => (hash(x, salt) - hash(y, salt)) | 0 || 0);
          assert.deepEqual([...resolveServiceAddresses(shuffled, set, SMALL)].sort(), [...assigned].sort());
        },
      ),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('the oldest claim keeps a contested address', () => {
    const claims: AddressClaim[] = [
      { address: '10.0.0.201', workload: 'web', at: 5 },
      { address: '10.0.0.201', workload: 'db', at: 3 },
    ];
    assert.deepEqual(
      resolveServiceAddresses(claims, new Set(['web', 'db']), SMALL),
      new Map([['db', '10.0.0.201']]),
    );
  });

  test('proposeAddress: free, in range, null only when the range is full', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...NAMES),
        fc.subarray([...Array(8).keys()].map((i) => formatIpv4(SMALL.first + i))),
        (name, taken) => {
          const address = proposeAddress(name, new Set(taken), SMALL);
          if (taken.length === 8) assert.equal(address, null);
          else {
            assert.ok(address !== null && !taken.includes(address));
            const n = parseIpv4(address);
            assert.ok(n >= SMALL.first && n <= SMALL.last);
          }
        },
      ),
      { seed: SEED, numRuns: 200 },
    );
  });

  test('a repaired claim set resolves every workload, and a second repair has nothing to do', () => {
    fc.assert(
      fc.property(
        fc.array(claimArb, { maxLength: 30 }),
        fc.subarray<string>([...NAMES]),
        (raw, workloads) => {
          const set = new Set(workloads);
          const claims = new Map(raw.map((c) => [claimKey(c.address, c.workload), c]));
          const withKeys = () => [...claims].map(([key, c]) => ({ key, ...c }));
          const plan = planAddressRepair(withKeys(), set, SMALL, 100);
          for (const key of plan.remove) claims.delete(key);
          for (const c of plan.claim) claims.set(claimKey(c.address, c.workload), c);
          const assigned = resolveServiceAddresses(claims.values(), set, SMALL);
          assert.equal(assigned.size, set.size, 'the range holds 8 addresses, enough for every name');
          assert.equal(claims.size, set.size, 'only winning claims remain');
          const again = planAddressRepair(withKeys(), set, SMALL, 200);
          assert.deepEqual(again, { claim: [], remove: [], exhausted: [] });
        },
      ),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('a full range is reported, not overfilled', () => {
    const nine = new Set([...NAMES, 'extra']);
    const plan = planAddressRepair([], nine, SMALL, 1);
    assert.equal(plan.claim.length, 8);
    assert.equal(plan.exhausted.length, 1);
  });

  test('defaultServiceRange is the upper half of the org CIDR', () => {
    const range = defaultServiceRange('10.88.0.0/16');
    assert.equal(formatIpv4(range.first), '10.88.128.0');
    assert.equal(formatIpv4(range.last), '10.88.255.254');
  });
});

function hash(claim: AddressClaim, salt: number): number {
  let h = salt;
  for (const ch of `${claim.address}/${claim.workload}/${claim.at}`)
    h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  return h;
}

// ---------------------------------------------------------------------------
// Replicas

interface Replica {
  state: ClusterState;
  view: WorkloadsView;
}

function replicas(count: number, clock: { now: number }): Replica[] {
  return Array.from({ length: count }, () => {
    const state = new ClusterState({ logger: quietLogger });
    const view = new WorkloadsView({
      state,
      logger: quietLogger,
      registry: new Registry(),
      serviceRange: SMALL,
      now: () => clock.now,
    });
    return { state, view };
  });
}

function send(from: Replica, to: Replica): void {
  const diff = from.state.encodeDiff('workloads', to.state.encodeStateVector('workloads'));
  to.state.applyRemote('workloads', diff, Origin.remote);
}

function converge(nodes: Replica[]): void {
  for (const a of nodes) for (const b of nodes) if (a !== b) send(a, b);
}

type Op =
  | { k: 'apply'; node: number; name: string; network: 'overlay' | 'host' }
  | { k: 'delete'; node: number; name: string }
  | { k: 'send'; from: number; to: number }
  | { k: 'repair'; node: number };

const opArb = (nodes: number): fc.Arbitrary<Op> =>
  fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        k: fc.constant('apply' as const),
        node: fc.nat(nodes - 1),
        name: fc.constantFrom(...NAMES.slice(0, 6)),
        network: fc.constantFrom('overlay' as const, 'overlay' as const, 'host' as const),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        k: fc.constant('delete' as const),
        node: fc.nat(nodes - 1),
        name: fc.constantFrom(...NAMES),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        k: fc.constant('send' as const),
        from: fc.nat(nodes - 1),
        to: fc.nat(nodes - 1),
      }),
    },
    { weight: 2, arbitrary: fc.record({ k: fc.constant('repair' as const), node: fc.nat(nodes - 1) }) },
  );

function run(nodes: Replica[], ops: Op[], clock: { now: number }): void {
  for (const op of ops) {
    clock.now += 1;
    if (op.k === 'apply') nodes[op.node]!.view.put(workloadSpec(op.name, { network: op.network }));
    else if (op.k === 'delete') nodes[op.node]!.view.delete(op.name);
    else if (op.k === 'repair') nodes[op.node]!.view.repairAddresses();
    else if (op.from !== op.to) send(nodes[op.from]!, nodes[op.to]!);
  }
}

/** Every node repairs and everything is exchanged, until no repair writes anything. */
function settle(nodes: Replica[], clock: { now: number }): number {
  for (let round = 1; round <= 5; round++) {
    converge(nodes);
    clock.now += 1;
    const wrote = nodes
      .map((n) => n.view.repairAddresses())
      .some((p) => p.claim.length + p.remove.length > 0);
    converge(nodes);
    if (!wrote) return round;
  }
  assert.fail('repairs did not settle within 5 rounds');
}

describe('WorkloadsView replicas (concurrent applies, any delivery order)', () => {
  test('converged replicas agree on a one-to-one assignment that covers every overlay workload', () => {
    fc.assert(
      fc.property(fc.array(opArb(3), { maxLength: 40 }), (ops) => {
        const clock = { now: 1000 };
        const nodes = replicas(3, clock);
        run(nodes, ops, clock);
        settle(nodes, clock);
        const first = nodes[0]!.view.serviceAddresses();
        for (const node of nodes)
          assert.deepEqual([...node.view.serviceAddresses()].sort(), [...first].sort());
        assert.ok(isOneToOne(first));
        const overlay = nodes[0]!.view.list().filter((s) => s.network === 'overlay');
        assert.deepEqual([...first.keys()].sort(), overlay.map((s) => s.name).sort());
      }),
      { seed: SEED, numRuns: 200 },
    );
  });

  test('two concurrent applies that pick the same address: the older claim keeps it, the other is re-allocated', () => {
    const clock = { now: 1000 };
    const [x, y] = replicas(2, clock) as [Replica, Replica];
    for (const name of ['a', 'b', 'c', 'd', 'e', 'f']) x.view.put(workloadSpec(name));
    converge([x, y]);
    // Two names whose proposals collide given what both replicas know.
    const taken = new Set(x.view.serviceAddresses().values());
    const byProposal = new Map<string, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; pair === undefined && i < 100; i++) {
      const name = `w${i}`;
      const address = proposeAddress(name, taken, SMALL) ?? '';
      const other = byProposal.get(address);
      if (other !== undefined) pair = [other, name];
      byProposal.set(address, name);
    }
    assert.ok(pair, 'two colliding names exist among 100 in a range of 2 free addresses');
    const [older, newer] = pair;
    clock.now = 2001;
    y.view.put(workloadSpec(newer));
    clock.now = 2000;
    x.view.put(workloadSpec(older));
    const contested = x.view.serviceAddresses().get(older);
    assert.equal(y.view.serviceAddresses().get(newer), contested, 'both replicas picked the same address');
    converge([x, y]);
    for (const node of [x, y]) {
      assert.equal(node.view.serviceAddresses().get(older), contested, 'the older claim keeps the address');
      assert.equal(node.view.serviceAddresses().get(newer), undefined, 'the loser has none until repaired');
    }
    settle([x, y], clock);
    for (const node of [x, y]) {
      const settled = node.view.serviceAddresses();
      assert.equal(settled.get(older), contested);
      assert.ok(settled.get(newer) !== undefined && settled.get(newer) !== contested);
    }
  });

  test('an address once settled never moves while other workloads come and go', () => {
    fc.assert(
      fc.property(
        fc.array(opArb(3), { maxLength: 25 }),
        fc.array(opArb(3), { maxLength: 25 }),
        (early, late) => {
          const clock = { now: 1000 };
          const nodes = replicas(3, clock);
          run(nodes, early, clock);
          settle(nodes, clock);
          const settled = nodes[0]!.view.serviceAddresses();
          // Later ops touch only other workloads (any name not yet assigned).
          const others = late.filter((op) => op.k === 'send' || op.k === 'repair' || !settled.has(op.name));
          run(nodes, others, clock);
          settle(nodes, clock);
          for (const node of nodes) {
            const now = node.view.serviceAddresses();
            for (const [workload, address] of settled) assert.equal(now.get(workload), address, workload);
          }
        },
      ),
      { seed: SEED, numRuns: 200 },
    );
  });

  test('delete releases the address in the same write', () => {
    const clock = { now: 1 };
    const [x] = replicas(1, clock) as [Replica];
    x.view.put(workloadSpec('web'));
    const address = x.view.serviceAddresses().get('web');
    assert.ok(address);
    x.view.delete('web');
    assert.equal(x.view.serviceAddresses().size, 0);
    // What stays in the document is this node's deletion record of the claim (docs/epochs.md).
    const slots = [...x.state.doc('workloads').getMap('addresses').values()] as { d?: true }[];
    assert.ok(slots.length > 0 && slots.every((slot) => slot.d === true), 'only deletion records remain');
  });

  test('a full range refuses the apply with a clear error and writes nothing', () => {
    const clock = { now: 1 };
    const [x] = replicas(1, clock) as [Replica];
    for (const name of NAMES) x.view.put(workloadSpec(name));
    assert.throws(
      () => x.view.put(workloadSpec('extra')),
      /no free service address for "extra": all 8 addresses/,
    );
    assert.equal(x.view.get('extra'), undefined);
    // host-network workloads need no address
    x.view.put(workloadSpec('extra', { network: 'host' }));
  });
});
