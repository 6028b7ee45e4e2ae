import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { deriveHolders } from '../../src/reconciler/placement/holders.js';
import { matchesConstraints, place } from '../../src/reconciler/placement/placement.js';
import { rankNodes } from '../../src/reconciler/placement/rendezvous.js';
import type {
  HolderRef,
  Liveness,
  PlacementInput,
  PlacementNode,
  PlacementResult,
} from '../../src/reconciler/placement/types.js';
import type { Phase, WorkloadSpec } from '../../src/state/schemas.js';
import { makeNode, makeSpec, observedDoc, SNAPSHOT, status } from './fixtures.js';

const NODE_IDS = ['n-a', 'n-b', 'n-c', 'n-d', 'n-e', 'n-f', 'n-g', 'n-h'];
const WORKLOADS = Array.from({ length: 16 }, (_, i) => `w-${i.toString().padStart(2, '0')}`);
const RUNS = { numRuns: 300 };

const labelsArb = fc.record(
  { zone: fc.constantFrom('a', 'b', 'c'), disk: fc.constantFrom('ssd', 'hdd') },
  { requiredKeys: [] },
);

const fullLabelsArb = fc.record({
  zone: fc.constantFrom('a', 'b', 'c'),
  disk: fc.constantFrom('ssd', 'hdd'),
});

const nodeArb = (nodeId: string): fc.Arbitrary<PlacementNode> =>
  fc.record({
    nodeId: fc.constant(nodeId),
    capacity: fc.record({
      cpus: fc.constantFrom(0.5, 1, 2, 4, 8),
      memoryMb: fc.integer({ min: 256, max: 8192 }),
      scratchMb: fc.integer({ min: 0, max: 8000 }),
    }),
    labels: fc.oneof({ weight: 3, arbitrary: fullLabelsArb }, { weight: 1, arbitrary: labelsArb }),
    draining: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
  });

const specArb = (name: string): fc.Arbitrary<WorkloadSpec> =>
  fc
    .record({
      cpus: fc.constantFrom(0.1, 0.2, 0.25, 0.5, 1, 2),
      memoryMb: fc.integer({ min: 32, max: 1024 }),
      scratchMb: fc.integer({ min: 1, max: 1500 }),
      constraints: fc.oneof({ weight: 3, arbitrary: fc.constant({}) }, { weight: 2, arbitrary: labelsArb }),
    })
    .map((fields) => makeSpec(name, fields));

const HOLDING: Phase[] = ['running', 'starting', 'stopping', 'pulling', 'released', 'failed'];

/** A random view: enrolled nodes, liveness, specs, and holders (some on unknown or ineligible nodes). */
const inputArb: fc.Arbitrary<PlacementInput> = fc
  .record({
    nodeIds: fc.subarray(NODE_IDS, { minLength: 1 }),
    names: fc.subarray(WORKLOADS, { minLength: 0 }),
  })
  .chain(({ nodeIds, names }) =>
    fc.record({
      nodes: fc.tuple(...nodeIds.map(nodeArb)),
      specs: fc.tuple(...names.map(specArb)),
      liveness: fc.tuple(
        ...nodeIds.map(() => fc.constantFrom<Liveness>('alive', 'alive', 'alive', 'suspect', 'dead')),
      ),
      holders: fc.tuple(
        ...names.map(() =>
          fc.option(
            fc
              .record({
                // Mostly enrolled nodes, sometimes one that is not (revoked, never enrolled).
                nodeId: fc.constantFrom(...nodeIds, ...nodeIds, 'n-gone'),
                phase: fc.constantFrom(...HOLDING),
                since: fc.nat(1000),
                fenced: fc.boolean(),
              })
              // Only a holder that released it can have fenced (evaluateView sets the flag).
              .map(
                ({ fenced, ...holder }): HolderRef =>
                  fenced && holder.phase === 'released' ? { ...holder, fenced: true } : holder,
              ),
            { nil: undefined },
          ),
        ),
      ),
    }),
  )
  .map(({ nodes, specs, liveness, holders }) => {
    const livenessMap = new Map<string, Liveness>(nodes.map((node, i) => [node.nodeId, liveness[i]!]));
    const holderMap = new Map<string, HolderRef>();
    specs.forEach((spec, i) => {
      const holder = holders[i];
      if (holder) holderMap.set(spec.name, holder);
    });
    return { nodes, specs, liveness: livenessMap, holders: holderMap };
  });

function normalise(result: PlacementResult): unknown {
  return { assignments: [...result.assignments], used: [...result.used] };
}

function milli(cpus: number): number {
  return Math.round(cpus * 1000);
}

/** Holders as they would be once every placed workload runs where placement put it. */
function holdersFrom(result: PlacementResult): Map<string, HolderRef> {
  const holders = new Map<string, HolderRef>();
  for (const [workload, assignment] of result.assignments) {
    if ('node' in assignment) holders.set(workload, { nodeId: assignment.node, phase: 'running', since: 1 });
  }
  return holders;
}

describe('place: properties', () => {
  test('same inputs give the same output whatever the order of arrays and maps', () => {
    fc.assert(
      fc.property(inputArb, fc.integer(), (input, seed) => {
        const shuffle = <T>(items: readonly T[], salt: number): T[] => {
          // Deterministic Fisher-Yates driven by the seed (fast-check shrinks the seed).
          const out = [...items];
          let state = (seed ^ salt) >>> 0;
          for (let i = out.length - 1; i > 0; i--) {
            state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
            const j = state % (i + 1);
            [out[i], out[j]] = [out[j]!, out[i]!];
          }
          return out;
        };
        const shuffled: PlacementInput = {
          nodes: shuffle(input.nodes, 1),
          specs: shuffle(input.specs, 2),
          // Records instead of Maps, with keys in shuffled insertion order.
          liveness: Object.fromEntries(shuffle([...(input.liveness as Map<string, Liveness>)], 3)),
          holders: Object.fromEntries(shuffle([...(input.holders as Map<string, HolderRef>)], 4)),
        };
        assert.deepEqual(normalise(place(shuffled)), normalise(place(input)));
      }),
      RUNS,
    );
  });

  test('capacity is never exceeded and `used` adds up', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const result = place(input);
        const specs = new Map(input.specs.map((spec) => [spec.name, spec]));
        for (const node of input.nodes) {
          let cpus = 0;
          let memoryMb = 0;
          let scratchMb = 0;
          for (const [workload, assignment] of result.assignments) {
            if (!('node' in assignment) || assignment.node !== node.nodeId) continue;
            const spec = specs.get(workload)!;
            cpus += milli(spec.cpus);
            memoryMb += spec.memoryMb;
            scratchMb += spec.scratchMb;
          }
          assert.ok(cpus <= milli(node.capacity.cpus), `cpus on ${node.nodeId}`);
          assert.ok(memoryMb <= node.capacity.memoryMb, `memory on ${node.nodeId}`);
          assert.ok(scratchMb <= node.capacity.scratchMb, `scratch on ${node.nodeId}`);
          const used = result.used.get(node.nodeId)!;
          assert.deepEqual([milli(used.cpus), used.memoryMb, used.scratchMb], [cpus, memoryMb, scratchMb]);
        }
        assert.equal(result.used.size, input.nodes.length);
        assert.equal(result.assignments.size, input.specs.length);
      }),
      RUNS,
    );
  });

  test('constraints are always met, and only live, non-draining nodes get workloads', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const result = place(input);
        const nodes = new Map(input.nodes.map((node) => [node.nodeId, node]));
        const liveness = input.liveness as Map<string, Liveness>;
        for (const spec of input.specs) {
          const assignment = result.assignments.get(spec.name)!;
          if (!('node' in assignment)) continue;
          const node = nodes.get(assignment.node);
          assert.ok(node, 'assigned to an enrolled node');
          assert.ok(matchesConstraints(node, spec.constraints), `${spec.name} constraints on ${node.nodeId}`);
          assert.equal(node.draining, false);
          const state = liveness.get(node.nodeId);
          // Sticky holders may be suspect; new placements go to alive nodes only.
          if (assignment.sticky) {
            assert.notEqual(state, 'dead');
            assert.equal(assignment.node, (input.holders as Map<string, HolderRef>).get(spec.name)?.nodeId);
          } else assert.equal(state, 'alive');
        }
      }),
      RUNS,
    );
  });

  test('a live, eligible holder keeps its workload unless the stickies before it filled its node', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const result = place(input);
        const nodes = new Map(input.nodes.map((node) => [node.nodeId, node]));
        const liveness = input.liveness as Map<string, Liveness>;
        for (const spec of input.specs) {
          const holder = (input.holders as Map<string, HolderRef>).get(spec.name);
          if (!holder) continue;
          const node = nodes.get(holder.nodeId);
          const live = node !== undefined && liveness.get(holder.nodeId) !== 'dead' && !node.draining;
          const eligible = live && holder.fenced !== true && matchesConstraints(node, spec.constraints);
          const assignment = result.assignments.get(spec.name)!;
          const kept = 'node' in assignment && assignment.node === holder.nodeId && assignment.sticky;
          if (eligible && !kept) {
            assert.match(assignment.movedBecause ?? '', /has no room/, `${spec.name} moved without cause`);
          }
          if (!eligible) assert.ok(!kept, `${spec.name} stuck to an ineligible holder`);
          if (live && holder.fenced === true) {
            assert.equal(assignment.movedBecause, `holder ${holder.nodeId} lost its lease and stopped it`);
          }
        }
      }),
      RUNS,
    );
  });

  test('a fenced holder gets its workload back only when no other eligible node has room for it', () => {
    let back = 0;
    let elsewhere = 0;
    fc.assert(
      fc.property(inputArb, fc.nat(), (input, pick) => {
        fc.pre(input.specs.length > 0);
        const spec = input.specs[0]!;
        const fencedId = input.nodes[pick % input.nodes.length]!.nodeId;
        const holder: HolderRef = { nodeId: fencedId, phase: 'released', since: 1, fenced: true };
        const result = place({ ...input, specs: [spec], holders: new Map([[spec.name, holder]]) });
        const liveness = input.liveness as Map<string, Liveness>;
        const roomy = (node: PlacementNode) =>
          milli(spec.cpus) <= milli(node.capacity.cpus) &&
          spec.memoryMb <= node.capacity.memoryMb &&
          spec.scratchMb <= node.capacity.scratchMb;
        const candidates = input.nodes.filter(
          (node) =>
            !node.draining &&
            liveness.get(node.nodeId) === 'alive' &&
            matchesConstraints(node, spec.constraints) &&
            roomy(node),
        );
        const others = candidates.filter((node) => node.nodeId !== fencedId).map((node) => node.nodeId);
        const expected =
          rankNodes(spec.name, others)[0] ??
          (candidates.some((node) => node.nodeId === fencedId) ? fencedId : undefined);
        const assignment = result.assignments.get(spec.name)!;
        assert.equal('node' in assignment ? assignment.node : undefined, expected);
        if ('node' in assignment) assert.equal(assignment.sticky, false);
        if (expected === fencedId) back++;
        else if (expected !== undefined) elsewhere++;
      }),
      RUNS,
    );
    assert.ok(back > 5 && elsewhere > 50, `back ${back}, elsewhere ${elsewhere}`);
  });

  test('placing again with the result as holders changes nothing (stable), also when nodes turn suspect', () => {
    fc.assert(
      fc.property(inputArb, fc.subarray(NODE_IDS), (input, suspects) => {
        const first = place(input);
        const liveness = new Map(input.liveness as Map<string, Liveness>);
        for (const nodeId of suspects) if (liveness.get(nodeId) === 'alive') liveness.set(nodeId, 'suspect');
        const again = place({ ...input, liveness, holders: holdersFrom(first) });
        for (const [workload, assignment] of first.assignments) {
          if ('node' in assignment) {
            assert.deepEqual(again.assignments.get(workload), { node: assignment.node, sticky: true });
          }
        }
      }),
      RUNS,
    );
  });

  test("removing a node moves only that node's workloads", () => {
    fc.assert(
      fc.property(inputArb, fc.nat(), (input, pick) => {
        fc.pre(input.nodes.length > 0);
        const first = place(input);
        const gone = input.nodes[pick % input.nodes.length]!.nodeId;
        const after = place({
          ...input,
          nodes: input.nodes.filter((node) => node.nodeId !== gone),
          holders: holdersFrom(first),
        });
        for (const [workload, assignment] of first.assignments) {
          if ('node' in assignment && assignment.node !== gone) {
            const now = after.assignments.get(workload)!;
            assert.ok(
              'node' in now && now.node === assignment.node,
              `${workload} moved off ${assignment.node}`,
            );
          }
        }
      }),
      RUNS,
    );
  });

  test('adding a node moves nothing that is sticky', () => {
    fc.assert(
      fc.property(
        inputArb,
        fc.constantFrom('n-new', 'n-zz', 'a-first'),
        labelsArb,
        (input, nodeId, labels) => {
          const first = place(input);
          const liveness = new Map(input.liveness as Map<string, Liveness>).set(nodeId, 'alive');
          const bigger = [...input.nodes, makeNode(nodeId, { labels })];
          const after = place({ ...input, nodes: bigger, liveness, holders: holdersFrom(first) });
          for (const [workload, assignment] of first.assignments) {
            if ('node' in assignment)
              assert.deepEqual(after.assignments.get(workload), { node: assignment.node, sticky: true });
          }
        },
      ),
      RUNS,
    );
  });

  test('without holders or capacity limits, removing a node moves only the workloads it had (rendezvous)', () => {
    fc.assert(
      fc.property(
        fc.subarray(NODE_IDS, { minLength: 2 }),
        fc.subarray(WORKLOADS, { minLength: 1 }),
        fc.nat(),
        (ids, names, pick) => {
          const nodes = ids.map((id) =>
            makeNode(id, { capacity: { cpus: 1000, memoryMb: 1_000_000, scratchMb: 1_000_000 } }),
          );
          const liveness = Object.fromEntries(ids.map((id) => [id, 'alive' as Liveness]));
          const specs = names.map((name) => makeSpec(name));
          const first = place({ specs, nodes, liveness, holders: {} });
          const gone = ids[pick % ids.length]!;
          const after = place({
            specs,
            nodes: nodes.filter((n) => n.nodeId !== gone),
            liveness,
            holders: {},
          });
          for (const [workload, assignment] of first.assignments) {
            assert.ok('node' in assignment);
            assert.equal(assignment.node, rankNodes(workload, ids)[0]);
            if (assignment.node !== gone) assert.deepEqual(after.assignments.get(workload), assignment);
          }
        },
      ),
      RUNS,
    );
  });
});

describe('place: client-role nodes (docs/protocol.md, "Enrollment roles")', () => {
  test('a client is never chosen: placing with clients equals placing without them', () => {
    fc.assert(
      fc.property(
        inputArb.chain((input) =>
          fc.record({
            input: fc.constant(input),
            clients: fc.subarray(input.nodes.map((node) => node.nodeId)),
          }),
        ),
        ({ input, clients }) => {
          const marked = input.nodes.map((node) =>
            clients.includes(node.nodeId) ? { ...node, role: 'client' as const } : node,
          );
          const result = place({ ...input, nodes: marked });
          for (const assignment of result.assignments.values()) {
            if ('node' in assignment) assert.ok(!clients.includes(assignment.node), assignment.node);
          }
          for (const client of clients) assert.equal(result.used.has(client), false);
          const without = place({ ...input, nodes: input.nodes.filter((n) => !clients.includes(n.nodeId)) });
          assert.deepEqual(normalise(result), normalise(without));
        },
      ),
      RUNS,
    );
  });

  test('a client holding a workload keeps nothing; the only alive node being a client leaves it pending', () => {
    const spec = makeSpec('w-1');
    const nodes = [makeNode('n-a', { role: 'client' }), makeNode('n-b', { role: 'node' })];
    const liveness = new Map<string, Liveness>([
      ['n-a', 'alive'],
      ['n-b', 'alive'],
    ]);
    const holders = new Map<string, HolderRef>([['w-1', { nodeId: 'n-a', phase: 'running', since: 1 }]]);
    const moved = place({ specs: [spec], nodes, liveness, holders }).assignments.get('w-1');
    assert.deepEqual(moved, {
      node: 'n-b',
      sticky: false,
      movedBecause: 'holder n-a is not an active enrolled node',
    });
    const onlyClient = place({
      specs: [spec],
      nodes: [makeNode('n-a', { role: 'client' })],
      liveness,
      holders: new Map(),
    }).assignments.get('w-1');
    assert.deepEqual(onlyClient, { pending: 'no active enrolled nodes' });
  });

  test('an unknown role is a clear error', () => {
    const nodes = [{ ...makeNode('n-a'), role: 'admin' }] as unknown as PlacementNode[];
    assert.throws(
      () => place({ specs: [], nodes, liveness: new Map(), holders: new Map() }),
      /role must be "node" or "client"/,
    );
  });
});

describe('place: examples', () => {
  const alive = (...ids: string[]): Record<string, Liveness> =>
    Object.fromEntries(ids.map((id) => [id, 'alive']));

  test('pending reasons say what is missing', () => {
    const nodes = [
      makeNode('n-a', { labels: { zone: 'a' }, capacity: { cpus: 1, memoryMb: 1024, scratchMb: 1000 } }),
    ];
    const result = place({
      specs: [
        makeSpec('w-zone', { constraints: { zone: 'b' } }),
        makeSpec('w-big', { cpus: 2 }),
        makeSpec('w-ok', { cpus: 1 }),
        makeSpec('w-ok2', { cpus: 1 }),
      ],
      nodes,
      liveness: alive('n-a'),
      holders: {},
    });
    // It would fit an empty node, but w-ok took the room: "no capacity" (it may fit later).
    assert.match(
      (result.assignments.get('w-ok2') as { pending: string }).pending,
      /^no capacity: needs 1 cpus/,
    );
    assert.deepEqual(result.assignments.get('w-zone'), { pending: 'no node matches constraints {zone=b}' });
    // Larger than any matching node, even an empty one: "fits no node", not "no capacity".
    assert.deepEqual(result.assignments.get('w-big'), {
      pending:
        'fits no node: needs 2 cpus, 256 MB memory, 100 MB scratch; none of the 1 matching nodes is that large',
    });
    assert.deepEqual(result.assignments.get('w-ok'), { node: 'n-a', sticky: false });
    const none = place({ specs: [makeSpec('w')], nodes: [], liveness: {}, holders: {} });
    assert.deepEqual(none.assignments.get('w'), { pending: 'no active enrolled nodes' });
    const dead = place({ specs: [makeSpec('w')], nodes, liveness: { 'n-a': 'dead' }, holders: {} });
    assert.match((dead.assignments.get('w') as { pending: string }).pending, /no alive, non-draining node/);
  });

  test('fractional cpus add up exactly', () => {
    const result = place({
      specs: [makeSpec('w-1', { cpus: 0.1 }), makeSpec('w-2', { cpus: 0.2 })],
      nodes: [makeNode('n-a', { capacity: { cpus: 0.3, memoryMb: 1024, scratchMb: 1000 } })],
      liveness: alive('n-a'),
      holders: {},
    });
    assert.ok('node' in result.assignments.get('w-2')!);
    assert.equal(result.used.get('n-a')!.cpus, 0.3);
  });

  test('a draining or dead holder loses its workload, with the reason', () => {
    const nodes = [makeNode('n-a', { draining: true }), makeNode('n-b'), makeNode('n-c')];
    const result = place({
      specs: [makeSpec('w-1'), makeSpec('w-2')],
      nodes,
      liveness: { 'n-a': 'alive', 'n-b': 'dead', 'n-c': 'alive' },
      holders: {
        'w-1': { nodeId: 'n-a', phase: 'running', since: 1 },
        'w-2': { nodeId: 'n-b', phase: 'running', since: 1 },
      },
    });
    assert.deepEqual(result.assignments.get('w-1'), {
      node: 'n-c',
      sticky: false,
      movedBecause: 'holder n-a is draining',
    });
    assert.deepEqual(result.assignments.get('w-2'), {
      node: 'n-c',
      sticky: false,
      movedBecause: 'holder n-b is dead',
    });
  });

  test('a fenced holder is not sticky and goes last; it is still chosen when it is the only eligible node', () => {
    const ids = ['n-a', 'n-b', 'n-c'];
    // The node rendezvous hashing would pick anyway, so that only the fence can move it.
    const [favourite, next] = rankNodes('w', ids) as [string, string];
    const base = { specs: [makeSpec('w')], nodes: ids.map((id) => makeNode(id)), liveness: alive(...ids) };
    const fenced: HolderRef = { nodeId: favourite, phase: 'released', since: 1, fenced: true };
    const lost = `holder ${favourite} lost its lease and stopped it`;
    assert.deepEqual(
      place({ ...base, holders: { w: { ...fenced, fenced: false } } }).assignments.get('w'),
      { node: favourite, sticky: true },
      'a release that is not a fence stays with its holder',
    );
    assert.deepEqual(place({ ...base, holders: { w: fenced } }).assignments.get('w'), {
      node: next,
      sticky: false,
      movedBecause: lost,
    });
    // The others cannot take it (draining, dead, suspect, wrong labels, no room): the fenced holder can.
    const othersAre = (overrides: Partial<PlacementNode>) =>
      ids.map((id) => makeNode(id, id === favourite ? {} : overrides));
    const onlyHolder: Array<Partial<PlacementInput>> = [
      { nodes: othersAre({ draining: true }) },
      { liveness: { ...alive(...ids), [next]: 'dead', [rankNodes('w', ids)[2]!]: 'dead' } },
      { liveness: Object.fromEntries(ids.map((id) => [id, id === favourite ? 'alive' : 'suspect'])) },
      {
        nodes: ids.map((id) => makeNode(id, { labels: id === favourite ? { zone: 'a' } : { zone: 'b' } })),
        specs: [makeSpec('w', { constraints: { zone: 'a' } })],
      },
      { nodes: othersAre({ capacity: { cpus: 0.5, memoryMb: 16_384, scratchMb: 100_000 } }) },
    ];
    for (const variant of onlyHolder) {
      const input = { ...base, ...variant, holders: { w: fenced } };
      assert.deepEqual(
        place(input).assignments.get('w'),
        { node: favourite, sticky: false, movedBecause: lost },
        JSON.stringify(variant),
      );
      // Whatever the order of the nodes and whether maps or records are given.
      for (const nodes of [[...input.nodes].reverse(), [input.nodes[1]!, input.nodes[2]!, input.nodes[0]!]]) {
        const liveness = new Map(Object.entries(input.liveness as Record<string, Liveness>));
        const holders = new Map<string, HolderRef>([['w', fenced]]);
        assert.deepEqual(normalise(place({ ...input, nodes, liveness, holders })), normalise(place(input)));
      }
    }
    // No room on the fenced holder either: pending, still saying why it moved.
    const full = place({
      ...base,
      nodes: ids.map((id) => makeNode(id, { capacity: { cpus: 0.5, memoryMb: 16_384, scratchMb: 100_000 } })),
      holders: { w: fenced },
    });
    assert.deepEqual(full.assignments.get('w'), {
      pending:
        'fits no node: needs 1 cpus, 256 MB memory, 100 MB scratch; none of the 3 matching nodes is that large',
      movedBecause: lost,
    });
    // Going last is about this workload only: another workload may still be placed on that node.
    const two = place({ ...base, specs: [makeSpec('w'), makeSpec('v')], holders: { w: fenced } });
    assert.deepEqual(two.assignments.get('v'), { node: rankNodes('v', ids)[0]!, sticky: false });
  });

  test('bad input gets a clear error', () => {
    const base = { specs: [makeSpec('w')], nodes: [makeNode('n-a')], liveness: alive('n-a'), holders: {} };
    assert.throws(
      () => place({ ...base, nodes: [makeNode('n-a'), makeNode('n-a')] }),
      /node n-a is listed twice/,
    );
    assert.throws(
      () => place({ ...base, specs: [makeSpec('w'), makeSpec('w')] }),
      /workload w is listed twice/,
    );
    assert.throws(
      () => place({ ...base, specs: [makeSpec('w', { cpus: Number.NaN })] }),
      /cpus must be a finite number/,
    );
    assert.throws(
      () =>
        place({ ...base, nodes: [makeNode('n-a', { capacity: { cpus: -1, memoryMb: 1, scratchMb: 1 } })] }),
      /capacity.cpus/,
    );
    assert.throws(() => place({ ...base, nodes: null as never }), /nodes must be an array/);
  });

  test('a node id like "constructor" is not confused with Object.prototype', () => {
    const result = place({
      specs: [makeSpec('w')],
      nodes: [makeNode('n-a')],
      liveness: { 'n-a': 'alive' },
      holders: {},
    });
    const proto = place({
      specs: [makeSpec('constructor')],
      nodes: [makeNode('constructor')],
      liveness: {},
      holders: {},
    });
    assert.ok('node' in result.assignments.get('w')!);
    assert.ok('pending' in proto.assignments.get('constructor')!);
  });
});

describe('deriveHolders', () => {
  test('running beats a claim, a claim beats a released snapshot, newer beats older, live beats dead', () => {
    const observed = observedDoc({
      'n-a': {
        w: status('released', 100, { snapshot: SNAPSHOT }),
        v: status('running', 100),
        u: status('running', 500),
      },
      'n-b': { w: status('pulling', 200), v: status('running', 300), u: status('pulling', 900) },
      'n-c': { w: status('pending', 900), x: status('released', 50) },
    });
    const holders = deriveHolders(observed);
    assert.equal(holders.get('w')?.nodeId, 'n-b');
    assert.deepEqual(
      holders.get('w')?.claims.map((c) => c.nodeId),
      ['n-b', 'n-a', 'n-c'],
    );
    assert.equal(holders.get('v')?.nodeId, 'n-b', 'equal rank: newer since wins');
    assert.equal(holders.get('u')?.nodeId, 'n-a', 'running beats a newer claim');
    assert.equal(holders.has('x'), false, 'released without snapshot holds nothing');
    const withDead = deriveHolders(observed, { liveness: { 'n-a': 'dead', 'n-b': 'alive', 'n-c': 'alive' } });
    assert.equal(withDead.get('u')?.nodeId, 'n-b', "a dead node's record loses to a live claim");
    assert.equal(withDead.get('u')?.stale, false);
    const onlyDead = deriveHolders(observedDoc({ 'n-a': { w: status('running', 1) } }), { liveness: {} });
    assert.equal(onlyDead.get('w')?.stale, true);
    const self = deriveHolders(observedDoc({ 'n-a': { w: status('running', 1) } }), {
      liveness: {},
      selfId: 'n-a',
    });
    assert.equal(self.get('w')?.stale, false, 'a node is never stale in its own view');
  });

  test('the result does not depend on the order of the document', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            nodeId: fc.constantFrom(...NODE_IDS),
            workload: fc.constantFrom('w-1', 'w-2', 'w-3'),
            phase: fc.constantFrom<Phase>(
              'pending',
              'pulling',
              'starting',
              'running',
              'stopping',
              'released',
              'failed',
            ),
            since: fc.nat(5),
            snap: fc.boolean(),
          }),
        ),
        (entries) => {
          const build = (list: typeof entries) => {
            const doc: Record<string, Record<string, ReturnType<typeof status>>> = {};
            for (const e of list) {
              doc[e.nodeId] ??= {};
              doc[e.nodeId]![e.workload] = status(e.phase, e.since, { snapshot: e.snap ? SNAPSHOT : null });
            }
            return observedDoc(doc);
          };
          const forward = deriveHolders(build(entries));
          // Same final entries, inserted in reverse node order.
          const doc = build(entries);
          const reversed = new Map([...doc].reverse().map(([k, v]) => [k, new Map([...v].reverse())]));
          assert.deepEqual([...deriveHolders(reversed)], [...forward]);
        },
      ),
      RUNS,
    );
  });
});
