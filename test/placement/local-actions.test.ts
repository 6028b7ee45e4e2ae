import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  decideLocalActions,
  evaluateView,
  type LocalAction,
} from '../../src/reconciler/placement/local-actions.js';
import { takeoverExtraWaitMs } from '../../src/reconciler/placement/quorum.js';
import { rankNodes } from '../../src/reconciler/placement/rendezvous.js';
import type { Liveness } from '../../src/reconciler/placement/types.js';
import type { ObservedStatus, Phase } from '../../src/state/schemas.js';
import { makeNode, makeSpec, makeView, NOW, SNAPSHOT, status, type ViewOptions } from './fixtures.js';

type Observed = Record<string, Record<string, ObservedStatus>>;

const THREE = ['n-a', 'n-b', 'n-c'];
const FIVE = ['n-a', 'n-b', 'n-c', 'n-d', 'n-e'];

function alive(ids: string[], dead: string[] = []): Record<string, Liveness> {
  return Object.fromEntries(ids.map((id) => [id, dead.includes(id) ? 'dead' : 'alive']));
}

function actions(nodeId: string, options: ViewOptions): LocalAction[] {
  return decideLocalActions(nodeId, makeView(options));
}

/** The node rendezvous hashing picks for `workload` among `ids`. */
function topOf(workload: string, ids: string[]): string {
  return rankNodes(workload, ids)[0]!;
}

const db = makeSpec('db'); // persistent, on_partition = stop
const job = makeSpec('job', { scratchClass: 'volatile', onPartition: 'stop' });
const cache = makeSpec('cache', { scratchClass: 'volatile', onPartition: 'keep' });

describe('decideLocalActions: starting a new workload', () => {
  const base: ViewOptions = { specs: [db], nodes: THREE.map((id) => makeNode(id)), liveness: alive(THREE) };
  const target = topOf('db', THREE);
  const others = THREE.filter((id) => id !== target);

  test('the target claims, everyone else does nothing', () => {
    assert.deepEqual(actions(target, base), [
      { kind: 'claim', workload: 'db', revision: 1, restore: { from: 'local' }, takeoverFrom: null },
    ]);
    for (const id of others) assert.deepEqual(actions(id, base), []);
  });

  test('no claim without a quorum lease, nor while the liveness view warms up', () => {
    assert.deepEqual(actions(target, { ...base, lease: { held: false, heldSince: null } }), [
      { kind: 'wait', workload: 'db', reason: 'no quorum lease', retryAt: null },
    ]);
    assert.deepEqual(actions(target, { ...base, listeningSince: NOW - 1000 }), [
      { kind: 'wait', workload: 'db', reason: 'liveness view warming up', retryAt: NOW + 9000 },
    ]);
  });

  test('the claim settles before the process starts', () => {
    const claimed = (since: number): ViewOptions => ({
      ...base,
      observed: { [target]: { db: status('pulling', since) } },
    });
    assert.deepEqual(actions(target, claimed(NOW - 1000)), [
      { kind: 'wait', workload: 'db', reason: 'claim settling', retryAt: NOW + 2000 },
    ]);
    assert.deepEqual(actions(target, claimed(NOW - 3000)), [{ kind: 'start', workload: 'db', revision: 1 }]);
    for (const id of others) assert.deepEqual(actions(id, claimed(NOW - 3000)), []);
  });

  test('a claim made before the current lease began is dropped, not started', () => {
    const view: ViewOptions = {
      ...base,
      observed: { [target]: { db: status('pulling', NOW - 5000) } },
      lease: { held: true, heldSince: NOW - 1000 },
    };
    assert.deepEqual(actions(target, view), [
      {
        kind: 'yield',
        workload: 'db',
        winner: null,
        reason: 'quorum lease lapsed since this claim began: claim dropped',
      },
    ]);
  });

  test('two nodes with different views both claim: the newer claim wins, the other yields', () => {
    // `other` thought `target` was dead and claimed too, later.
    const other = others[0]!;
    const view: ViewOptions = {
      ...base,
      observed: {
        [target]: { db: status('pulling', NOW - 4000) },
        [other]: { db: status('pulling', NOW - 3500) },
      },
    };
    assert.deepEqual(actions(target, view), [
      { kind: 'yield', workload: 'db', winner: other, reason: `${other}'s claim wins (pulling)` },
    ]);
    assert.deepEqual(actions(other, view), [{ kind: 'start', workload: 'db', revision: 1 }]);
  });

  test('revision bump restarts in place; a removed spec stops; a leftover is forgotten', () => {
    const running = { [target]: { db: status('running', NOW - 60_000) } };
    assert.deepEqual(
      actions(target, { ...base, specs: [makeSpec('db', { revision: 2 })], observed: running }),
      [{ kind: 'restart', workload: 'db', fromRevision: 1, toRevision: 2 }],
    );
    assert.deepEqual(actions(target, { ...base, specs: [], observed: running }), [
      { kind: 'stop-and-forget', workload: 'db', reason: 'workload spec removed' },
    ]);
    assert.deepEqual(
      actions(target, { ...base, specs: [], observed: { [target]: { db: status('released', 1) } } }),
      [{ kind: 'forget', workload: 'db', reason: 'workload spec removed' }],
    );
  });

  test('a failed workload stays failed until its spec changes', () => {
    const failed = { [target]: { db: status('failed', NOW - 60_000) } };
    assert.deepEqual(actions(target, { ...base, observed: failed }), []);
    for (const id of others) assert.deepEqual(actions(id, { ...base, observed: failed }), []);
    assert.deepEqual(
      actions(target, { ...base, specs: [makeSpec('db', { revision: 2 })], observed: failed }),
      [{ kind: 'claim', workload: 'db', revision: 2, restore: { from: 'local' }, takeoverFrom: null }],
    );
  });
});

describe('decideLocalActions: planned moves (drain)', () => {
  const specs = [makeSpec('w-1'), makeSpec('w-2')];
  const nodes = [makeNode('n-a', { draining: true }), makeNode('n-b'), makeNode('n-c')];
  const liveness = alive(THREE);
  const t1 = topOf('w-1', ['n-b', 'n-c']);
  const t2 = topOf('w-2', ['n-b', 'n-c']);
  const released = status('released', NOW - 2000, { snapshot: SNAPSHOT });
  const view = (observed: Record<string, Record<string, ObservedStatus>>, maxParallel = 1): ViewOptions => ({
    specs,
    nodes,
    liveness,
    observed,
    maxParallel,
  });

  test('one move at a time: the holder releases the first, the second waits its turn', () => {
    const running = {
      'n-a': { 'w-1': status('running', NOW - 60_000), 'w-2': status('running', NOW - 60_000) },
    };
    assert.deepEqual(actions('n-a', view(running)), [
      { kind: 'stop-and-release', workload: 'w-1', to: t1, snapshot: true, reason: 'holder n-a is draining' },
      { kind: 'wait', workload: 'w-2', reason: `move to ${t2} queued (0 in flight)`, retryAt: null },
    ]);
    // The targets must not start beside a live holder: they wait for its snapshot.
    assert.deepEqual(
      actions(t1, view(running)).find((a) => a.workload === 'w-1'),
      {
        kind: 'wait-for-snapshot',
        workload: 'w-1',
        from: 'n-a',
        reason: 'n-a is running; waiting for it to stop and release',
      },
    );
    const stopping = {
      'n-a': { 'w-1': status('stopping', NOW - 100), 'w-2': status('running', NOW - 60_000) },
    };
    assert.equal(actions(t1, view(stopping)).find((a) => a.workload === 'w-1')?.kind, 'wait-for-snapshot');
    assert.deepEqual(
      actions('n-a', view(stopping)).find((a) => a.workload === 'w-2'),
      { kind: 'wait', workload: 'w-2', reason: `move to ${t2} queued (1 in flight)`, retryAt: null },
    );
  });

  test('the target picks up the released snapshot; the next move begins once the first runs', () => {
    const afterRelease = { 'n-a': { 'w-1': released, 'w-2': status('running', NOW - 60_000) } };
    assert.deepEqual(
      actions(t1, view(afterRelease)).find((a) => a.workload === 'w-1'),
      {
        kind: 'claim',
        workload: 'w-1',
        revision: 1,
        restore: { from: 'snapshot', nodeId: 'n-a', snapshot: SNAPSHOT },
        takeoverFrom: null,
      },
    );
    const claimed: Observed = {
      'n-a': { 'w-1': released, 'w-2': status('running', NOW - 60_000) },
      [t1]: { 'w-1': status('pulling', NOW - 3000) },
    };
    assert.deepEqual(
      actions(t1, view(claimed)).find((a) => a.workload === 'w-1'),
      { kind: 'start', workload: 'w-1', revision: 1 },
    );
    // Still in flight: n-a keeps its snapshot and w-2 waits.
    assert.deepEqual(actions('n-a', view(claimed)), [
      { kind: 'wait', workload: 'w-2', reason: `move to ${t2} queued (1 in flight)`, retryAt: null },
    ]);
    const moved: Observed = {
      'n-a': { 'w-1': released, 'w-2': status('running', NOW - 60_000) },
      [t1]: { 'w-1': status('running', NOW - 10) },
    };
    assert.deepEqual(actions('n-a', view(moved)), [
      { kind: 'forget', workload: 'w-1', reason: `running on ${t1}` },
      { kind: 'stop-and-release', workload: 'w-2', to: t2, snapshot: true, reason: 'holder n-a is draining' },
    ]);
  });

  test('max_parallel = 2 moves both at once', () => {
    const running = {
      'n-a': { 'w-1': status('running', NOW - 60_000), 'w-2': status('running', NOW - 60_000) },
    };
    assert.deepEqual(
      actions('n-a', view(running, 2)).map((a) => a.kind),
      ['stop-and-release', 'stop-and-release'],
    );
  });

  test('a draining holder with nowhere to move keeps running', () => {
    const lonely = { specs: [db], nodes: [makeNode('n-a', { draining: true })], liveness: alive(['n-a']) };
    assert.deepEqual(
      actions('n-a', { ...lonely, observed: { 'n-a': { db: status('running', NOW - 60_000) } } }),
      [],
    );
  });

  test('with nowhere to go, a released workload is not restarted on its draining holder', () => {
    const lonely = { specs: [db], nodes: [makeNode('n-a', { draining: true })], liveness: alive(['n-a']) };
    const observed = { 'n-a': { db: status('released', NOW - 10, { snapshot: SNAPSHOT }) } };
    assert.deepEqual(actions('n-a', { ...lonely, observed }), [
      { kind: 'wait', workload: 'db', reason: 'no node can take it', retryAt: null },
    ]);
  });

  test('the newest release is restored, not a leftover of an older move', () => {
    const older = { ...SNAPSHOT, digest: `sha256:${'ee'.repeat(32)}` };
    const target = topOf('db', ['n-b', 'n-c']);
    const leftover = target === 'n-b' ? 'n-c' : 'n-b';
    const view: ViewOptions = {
      specs: [db],
      nodes: [makeNode('n-a', { draining: true }), makeNode('n-b'), makeNode('n-c')],
      liveness: alive(THREE),
      observed: {
        'n-a': { db: status('released', NOW - 100, { snapshot: SNAPSHOT }) },
        [leftover]: { db: status('released', NOW - 900_000, { snapshot: older }) },
      },
    };
    assert.deepEqual(actions(target, view), [
      {
        kind: 'claim',
        workload: 'db',
        revision: 1,
        restore: { from: 'snapshot', nodeId: 'n-a', snapshot: SNAPSHOT },
        takeoverFrom: null,
      },
    ]);
  });

  test('a persistent workload released without a snapshot is not started empty', () => {
    const target = topOf('db', THREE);
    const other = THREE.find((id) => id !== target)!;
    const view2: ViewOptions = {
      specs: [db],
      nodes: THREE.map((id) => makeNode(id)),
      liveness: alive(THREE),
      observed: { [other]: { db: status('released', NOW - 100) } },
    };
    assert.deepEqual(actions(target, view2), [
      {
        kind: 'wait',
        workload: 'db',
        reason: `${other} released it without a snapshot; refusing to start with empty state`,
        retryAt: null,
      },
    ]);
  });
});

describe('decideLocalActions: partitions and takeover', () => {
  const nodes5 = FIVE.map((id) => makeNode(id));
  const held = status('running', NOW - 600_000, { snapshot: SNAPSHOT });

  test('a holder that lost its quorum lease fences its exclusive workloads, and keeps relaxed ones', () => {
    const base: ViewOptions = {
      specs: [db, job, cache],
      nodes: nodes5,
      liveness: alive(FIVE, ['n-c', 'n-d', 'n-e']),
      observed: { 'n-a': { db: held, job: status('running', 1), cache: status('running', 1) } },
      lease: { held: false, heldSince: null },
    };
    assert.deepEqual(actions('n-a', base), [
      { kind: 'fence-stop', workload: 'db', snapshot: true, reason: 'no quorum lease' },
      { kind: 'fence-stop', workload: 'job', snapshot: false, reason: 'no quorum lease' },
    ]);
    // A lapse noticed together with re-acquisition (a stall) still fences.
    assert.deepEqual(actions('n-a', { ...base, lease: { held: true, heldSince: NOW - 100 } })[0], {
      kind: 'fence-stop',
      workload: 'db',
      snapshot: true,
      reason: 'quorum lease lapsed since this claim began',
    });
  });

  test('the majority takes over only after dead_after, attested by a quorum, with a lease, after the extra wait', () => {
    const majority = ['n-b', 'n-c', 'n-d', 'n-e'];
    const target = topOf('db', majority);
    const base: ViewOptions = {
      specs: [db],
      nodes: nodes5,
      liveness: alive(FIVE, ['n-a']),
      observed: { 'n-a': { db: held } },
      lastHeard: { 'n-a': NOW - 12_000 },
    };
    const extra = takeoverExtraWaitMs(makeView(base).timing, db.stopTimeoutMs);
    const settle = makeView(base).timing.claimSettleMs;
    assert.ok(extra > settle + 1000, 'the default timings leave a wait to overlap');
    // The claim may come claim_settle before the extra wait ends: it runs nothing, and the start waits out the settle.
    const claimWait = extra - settle;
    assert.deepEqual(actions(target, base), [
      {
        kind: 'wait',
        workload: 'db',
        reason: 'takeover from n-a: holder not (yet) attested dead by a quorum',
        retryAt: null,
      },
    ]);
    assert.deepEqual(actions(target, { ...base, attestedDeadSince: { 'n-a': NOW - 1000 } }), [
      {
        kind: 'wait',
        workload: 'db',
        reason: `takeover from n-a: waiting ${claimWait - 1000} ms more for the old holder's stop to complete (less claim_settle)`,
        retryAt: NOW - 1000 + claimWait,
      },
    ]);
    const ready: ViewOptions = { ...base, attestedDeadSince: { 'n-a': NOW - claimWait } };
    assert.deepEqual(actions(target, ready), [
      {
        kind: 'claim',
        workload: 'db',
        revision: 1,
        restore: { from: 'checkpoint', nodeId: 'n-a', snapshot: SNAPSHOT },
        takeoverFrom: 'n-a',
      },
    ]);
    assert.deepEqual(actions(target, { ...ready, lease: { held: false, heldSince: null } }), [
      {
        kind: 'wait',
        workload: 'db',
        reason: 'takeover from n-a: no quorum lease on this node',
        retryAt: null,
      },
    ]);
    assert.deepEqual(actions(target, { ...ready, observed: { 'n-a': { db: status('running', 1) } } })[0], {
      kind: 'claim',
      workload: 'db',
      revision: 1,
      restore: { from: 'empty', lostStateOf: 'n-a' },
      takeoverFrom: 'n-a',
    });
    // A dead holder that had crash-looped it: its state is on its disk too, and lost.
    assert.deepEqual(actions(target, { ...ready, observed: { 'n-a': { db: status('failed', 1) } } })[0], {
      kind: 'claim',
      workload: 'db',
      revision: 1,
      restore: { from: 'empty', lostStateOf: 'n-a' },
      takeoverFrom: 'n-a',
    });
    for (const id of majority.filter((id) => id !== target)) assert.deepEqual(actions(id, ready), []);
    // The claim settles and starts from the same checkpoint; the dead holder's record does not block it.
    // Claimed as soon as allowed, it starts exactly when the whole extra wait has passed, never before (T2).
    const claimedAt = NOW - settle;
    const claimed: ViewOptions = {
      ...ready,
      attestedDeadSince: { 'n-a': claimedAt - claimWait },
      observed: { 'n-a': { db: held }, [target]: { db: status('pulling', claimedAt) } },
    };
    assert.deepEqual(actions(target, claimed), [{ kind: 'start', workload: 'db', revision: 1 }]);
    assert.equal(NOW, claimedAt - claimWait + extra, 'the start is at attestation + extra');
    const settling: ViewOptions = {
      ...claimed,
      observed: { 'n-a': { db: held }, [target]: { db: status('pulling', claimedAt + 1) } },
    };
    assert.deepEqual(actions(target, settling), [
      { kind: 'wait', workload: 'db', reason: 'claim settling', retryAt: NOW + 1 },
    ]);
  });

  test('asymmetric partition: the holder still has an acknowledged quorum, so it is not attested dead and keeps running', () => {
    // n-b cannot hear n-a, but n-c, n-d hear it and acknowledge it.
    const takerView: ViewOptions = {
      specs: [db],
      nodes: nodes5,
      liveness: alive(FIVE, ['n-a']),
      observed: { 'n-a': { db: held } },
      lastHeard: { 'n-a': NOW - 60_000 },
    };
    const taker = topOf('db', ['n-b', 'n-c', 'n-d', 'n-e']);
    assert.equal(actions(taker, takerView)[0]?.kind, 'wait');
    assert.deepEqual(actions('n-a', { ...takerView, liveness: alive(FIVE, ['n-b']) }), []);
  });

  test('an even 2|2 split: nobody has a quorum, persistent workloads stop and nobody starts them', () => {
    const four = ['n-a', 'n-b', 'n-c', 'n-d'];
    const nodes4 = four.map((id) => makeNode(id));
    const observed = { 'n-a': { db: held } };
    const noLease = { held: false, heldSince: null };
    const sideA: ViewOptions = {
      specs: [db],
      nodes: nodes4,
      liveness: alive(four, ['n-c', 'n-d']),
      observed,
      lease: noLease,
    };
    const sideB: ViewOptions = {
      specs: [db],
      nodes: nodes4,
      liveness: alive(four, ['n-a', 'n-b']),
      observed,
      lease: noLease,
      lastHeard: { 'n-a': NOW - 60_000, 'n-b': NOW - 60_000 },
      // Two reporters of four are no quorum: the liveness layer reports no attestation.
    };
    assert.deepEqual(actions('n-a', sideA), [
      { kind: 'fence-stop', workload: 'db', snapshot: true, reason: 'no quorum lease' },
    ]);
    assert.deepEqual(actions('n-b', sideA), []);
    for (const id of ['n-c', 'n-d']) {
      for (const action of actions(id, sideB)) {
        assert.equal(action.kind, 'wait', `${id} must not act: ${JSON.stringify(action)}`);
      }
    }
  });

  test('volatile on_partition = "keep" runs on both sides, and the duplicate stops after the heal', () => {
    const minority = ['n-a', 'n-b'];
    const majority = ['n-c', 'n-d', 'n-e'];
    const running = { 'n-a': { cache: status('running', NOW - 600_000) } };
    const minorityView: ViewOptions = {
      specs: [cache],
      nodes: nodes5,
      liveness: alive(FIVE, majority),
      observed: running,
      lease: { held: false, heldSince: null },
    };
    assert.deepEqual(actions('n-a', minorityView), [], 'the minority holder keeps it');
    const target = topOf('cache', majority);
    const majorityView: ViewOptions = {
      specs: [cache],
      nodes: nodes5,
      liveness: alive(FIVE, minority),
      observed: running,
      lastHeard: { 'n-a': NOW - 10_000 },
      // Even without a quorum lease or attestation (e.g. a 2|2 split).
      lease: { held: false, heldSince: null },
    };
    assert.deepEqual(actions(target, majorityView), [
      { kind: 'claim', workload: 'cache', revision: 1, restore: { from: 'none' }, takeoverFrom: 'n-a' },
    ]);
    assert.equal(actions(target, { ...majorityView, lastHeard: { 'n-a': NOW - 9000 } })[0]?.kind, 'wait');
    // Healed: both run it; the older one yields, the newer keeps it.
    const healed: ViewOptions = {
      specs: [cache],
      nodes: nodes5,
      liveness: alive(FIVE),
      observed: {
        'n-a': { cache: status('running', NOW - 600_000) },
        [target]: { cache: status('running', NOW - 5000) },
      },
    };
    assert.deepEqual(actions('n-a', healed), [
      {
        kind: 'yield',
        workload: 'cache',
        winner: target,
        reason: `duplicate: also running on ${target} (partition healed)`,
      },
    ]);
    assert.deepEqual(actions(target, healed), []);
  });

  test('after a heal: the fenced holder forgets if someone took over, and restarts from its own state if not', () => {
    const fenced = status('released', NOW - 500_000, {
      snapshot: SNAPSHOT,
      reason: 'fenced: no quorum lease',
    });
    const base: ViewOptions = {
      specs: [db],
      nodes: nodes5,
      liveness: alive(FIVE),
      observed: { 'n-a': { db: fenced } },
    };
    assert.deepEqual(actions('n-a', base), [
      { kind: 'claim', workload: 'db', revision: 1, restore: { from: 'local' }, takeoverFrom: null },
    ]);
    for (const id of FIVE.slice(1)) assert.deepEqual(actions(id, base), [], `${id} must leave it to n-a`);
    const takenOver = {
      ...base,
      observed: { 'n-a': { db: fenced }, 'n-d': { db: status('running', NOW - 400_000) } },
    };
    assert.deepEqual(actions('n-a', takenOver), [
      { kind: 'forget', workload: 'db', reason: 'running on n-d' },
    ]);
    assert.deepEqual(actions('n-d', takenOver), []);
  });

  test('a holder that released before it died is picked up without takeover rules', () => {
    const target = topOf('db', ['n-b', 'n-c', 'n-d', 'n-e']);
    const view: ViewOptions = {
      specs: [db],
      nodes: nodes5,
      liveness: alive(FIVE, ['n-a']),
      observed: { 'n-a': { db: status('released', NOW - 100, { snapshot: SNAPSHOT }) } },
      lastHeard: { 'n-a': NOW - 1000 },
    };
    assert.deepEqual(actions(target, view), [
      {
        kind: 'claim',
        workload: 'db',
        revision: 1,
        restore: { from: 'snapshot', nodeId: 'n-a', snapshot: SNAPSHOT },
        takeoverFrom: null,
      },
    ]);
  });
});

describe('decideLocalActions: properties over shared views', () => {
  const PHASES: Phase[] = ['pending', 'pulling', 'starting', 'running', 'stopping', 'released', 'failed'];
  const WORKLOADS = ['db', 'job', 'cache', 'w-3'];
  const specFor = (name: string) =>
    name === 'job'
      ? job
      : name === 'cache'
        ? cache
        : makeSpec(name, { constraints: name === 'w-3' ? { zone: 'a' } : {} });

  const viewArb = fc.record({
    liveness: fc.tuple(...FIVE.map(() => fc.constantFrom<Liveness>('alive', 'alive', 'suspect', 'dead'))),
    draining: fc.tuple(...FIVE.map(() => fc.boolean())),
    zoneA: fc.subarray(FIVE),
    specs: fc.subarray(WORKLOADS),
    entries: fc.array(
      fc.record({
        nodeId: fc.constantFrom(...FIVE),
        workload: fc.constantFrom(...WORKLOADS),
        phase: fc.constantFrom(...PHASES),
        age: fc.integer({ min: 0, max: 20_000 }),
        snapshot: fc.boolean(),
      }),
      { maxLength: 12 },
    ),
    lease: fc.boolean(),
    attested: fc.subarray(FIVE),
  });

  function build(
    sample: fc.Arbitrary<unknown> extends never ? never : ReturnType<typeof viewArb.generate>['value'],
  ) {
    const observed: Record<string, Record<string, ObservedStatus>> = {};
    for (const e of sample.entries) {
      observed[e.nodeId] ??= {};
      observed[e.nodeId]![e.workload] = status(e.phase, NOW - e.age, {
        snapshot: e.snapshot ? SNAPSHOT : null,
      });
    }
    return (self: string): ViewOptions => ({
      specs: sample.specs.map(specFor),
      nodes: FIVE.map((id, i) =>
        makeNode(id, {
          draining: sample.draining[i]!,
          labels: sample.zoneA.includes(id) ? { zone: 'a' } : {},
        }),
      ),
      // Each node sees itself alive; otherwise they share the view.
      liveness: { ...Object.fromEntries(FIVE.map((id, i) => [id, sample.liveness[i]!])), [self]: 'alive' },
      observed,
      lease: sample.lease ? { held: true, heldSince: NOW - 3_600_000 } : { held: false, heldSince: null },
      attestedDeadSince: Object.fromEntries(sample.attested.map((id) => [id, NOW - 60_000])),
      lastHeard: Object.fromEntries(FIVE.map((id) => [id, NOW - 60_000])),
    });
  }

  test('with one shared view, at most one node claims or starts a workload, never beside a live running copy', () => {
    const counts = new Map<string, number>();
    fc.assert(
      fc.property(viewArb, (sample) => {
        const viewFor = build(sample);
        // Only nodes that are alive in the shared view act on it.
        const actors = FIVE.filter((_, i) => sample.liveness[i] === 'alive');
        const acting = new Map<string, string[]>();
        for (const id of actors) {
          for (const action of decideLocalActions(id, makeView(viewFor(id)))) {
            if (action.kind !== 'claim' && action.kind !== 'start') continue;
            acting.set(action.workload, [...(acting.get(action.workload) ?? []), id]);
            const observed = viewFor(id).observed ?? {};
            const live = Object.entries(observed).filter(
              ([nodeId, statuses]) =>
                nodeId !== id &&
                sample.liveness[FIVE.indexOf(nodeId)] !== 'dead' &&
                ['running', 'starting', 'stopping'].includes(statuses[action.workload]?.phase ?? ''),
            );
            const beside = live.map(([nodeId]) => nodeId);
            assert.deepEqual(beside, [], `${id} ${action.kind}s ${action.workload} beside a live copy`);
            counts.set(action.kind, (counts.get(action.kind) ?? 0) + 1);
          }
        }
        for (const [workload, ids] of acting)
          assert.equal(ids.length, 1, `${workload} claimed/started by ${ids}`);
      }),
      { numRuns: 2000 },
    );
    // The property must have had something to check. Starts are rare in random views: 500 runs gave 1-17 and
    // failed this check in CI; 2000 runs give 34-53 (ten runs), so a floor of 5 holds with a wide margin.
    assert.ok(
      (counts.get('claim') ?? 0) > 200 && (counts.get('start') ?? 0) > 5,
      JSON.stringify([...counts]),
    );
  });

  test('decisions do not depend on the order of specs and nodes', () => {
    fc.assert(
      fc.property(viewArb, fc.constantFrom(...FIVE), (sample, self) => {
        const options = build(sample)(self);
        const forward = decideLocalActions(self, makeView(options));
        const reversed = decideLocalActions(
          self,
          makeView({ ...options, specs: [...options.specs].reverse(), nodes: [...options.nodes].reverse() }),
        );
        assert.deepEqual(reversed, forward);
      }),
      { numRuns: 300 },
    );
  });
});

describe('decideLocalActions: bad input', () => {
  const base: ViewOptions = { specs: [db], nodes: THREE.map((id) => makeNode(id)), liveness: alive(THREE) };
  test('a clear error for views that cannot be right', () => {
    assert.throws(
      () => actions('n-a', { ...base, liveness: alive(THREE, ['n-a']) }),
      /must list this node \(n-a\) as alive/,
    );
    assert.throws(() => actions('n-a', { ...base, listeningSince: NOW + 1 }), /listeningSince is after/);
    assert.throws(
      () => actions('n-a', { ...base, lease: { held: true, heldSince: null } }),
      /heldSince <= now/,
    );
    assert.throws(() => actions('', base), /nodeId must be a non-empty string/);
    assert.throws(() => decideLocalActions('n-a', { ...makeView(base), maxParallel: 0 }), /maxParallel/);
  });

  test('evaluateView exposes the placement and move plan it decided from', () => {
    const evaluation = evaluateView('n-a', makeView(base));
    assert.ok(evaluation.placement.assignments.has('db'));
    assert.equal(evaluation.moves.inFlight, 0);
  });
});
