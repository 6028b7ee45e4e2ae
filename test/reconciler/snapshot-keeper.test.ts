import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Counter, Registry } from 'prom-client';
import { replicaNodes } from '../../src/reconciler/checkpoints.js';
import type { LocalView, ViewEvaluation } from '../../src/reconciler/placement/index.js';
import { SnapshotKeeper } from '../../src/reconciler/snapshot-keeper.js';
import type { ObservedStatus, SnapshotRef, WorkloadSpec } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';

/**
 * SnapshotKeeper on its own, with an in-memory snapshot store and a hand-made
 * clock: what garbage collection keeps, which node pulls which checkpoint
 * replica, and when a failed pull is tried again. Views are built with only
 * the fields the keeper reads.
 */

const ref = (n: number, at = n): SnapshotRef => ({
  digest: `sha256:${String(n).padStart(64, '0')}`,
  size: 1,
  at,
});

class MemorySnapshots {
  readonly stored = new Set<string>();
  readonly fetches: { digest: string; from: readonly string[] }[] = [];
  failFetch = false;
  release: (() => void) | null = null;

  async has(digest: string): Promise<boolean> {
    return this.stored.has(digest);
  }

  async fetch(digest: string, from: readonly string[]): Promise<string | null> {
    this.fetches.push({ digest, from });
    if (this.release === null) await Promise.resolve();
    else await new Promise<void>((resolve) => (this.release = resolve));
    if (this.failFetch) throw new Error('no peer has it');
    this.stored.add(digest);
    return from[0] ?? null;
  }

  async gc(keep: ReadonlySet<string>): Promise<number> {
    let removed = 0;
    for (const digest of [...this.stored]) {
      if (keep.has(digest)) continue;
      this.stored.delete(digest);
      removed++;
    }
    return removed;
  }
}

function keeperWith(options: { nodeId?: string; observed?: Map<string, Map<string, ObservedStatus>> } = {}) {
  const snapshots = new MemorySnapshots();
  let now = 1000;
  const held = new Set<string>();
  const registry = new Registry();
  const replicaPulls = new Counter({
    name: 'pulls',
    help: 'x',
    labelNames: ['result'],
    registers: [registry],
  });
  const keeper = new SnapshotKeeper({
    nodeId: options.nodeId ?? 'n2',
    snapshots,
    observed: { listAll: () => options.observed ?? new Map() },
    replicas: 1,
    gcIntervalMs: 60_000,
    now: () => now,
    logger: silentLogger(),
    replicaPulls,
    heldDigests: () => held,
  });
  return { keeper, snapshots, held, advance: (ms: number) => (now += ms), now: () => now };
}

const persistent = { scratchClass: 'persistent' } as WorkloadSpec;

/** A view of nodes n1..n3 all alive, and an evaluation where n1 holds `workload` with checkpoint `snapshot`. */
function heldBy(holder: string, workload: string, snapshot: SnapshotRef | null, now: number) {
  const nodes = ['n1', 'n2', 'n3'];
  // Only the fields SnapshotKeeper reads.
  const view = {
    now,
    nodes: nodes.map((nodeId) => ({ nodeId })),
    liveness: new Map(nodes.map((id) => [id, 'alive'])),
  } as unknown as LocalView;
  const evaluation = {
    holders: new Map([[workload, { nodeId: holder, stale: false, snapshot }]]),
    claims: new Map([[workload, snapshot ? [{ snapshot }] : []]]),
  } as unknown as ViewEvaluation;
  return { view, evaluation };
}

describe('SnapshotKeeper', () => {
  test('garbage collection keeps pinned, recent, announced and held snapshots, nothing else', async () => {
    const observed = new Map([['n1', new Map([['db', { snapshot: ref(3) } as ObservedStatus]])]]);
    const { keeper, snapshots, held } = keeperWith({ observed });
    for (const n of [1, 2, 3, 4, 5]) snapshots.stored.add(ref(n).digest);
    keeper.record(heldBy('n1', 'web', ref(2), 0).evaluation, new Set(['web']));
    held.add(ref(4).digest);
    let removed = -1;
    await keeper.withPin(ref(1).digest, async () => {
      removed = await keeper.collect();
    });
    assert.equal(removed, 1);
    assert.deepEqual(
      [...snapshots.stored].sort(),
      [ref(1), ref(2), ref(3), ref(4)].map((r) => r.digest).sort(),
    );
    // The pin ended and the workload was deleted: both go at the next collection.
    keeper.record({ claims: new Map() } as unknown as ViewEvaluation, new Set());
    held.clear();
    await keeper.collect();
    assert.deepEqual([...snapshots.stored], [ref(3).digest]);
  });

  test('only the replica nodes pull a checkpoint, from the holder first, once at a time', async () => {
    const replica = replicaNodes('db', 'n1', ['n1', 'n2', 'n3'], 1)[0]!;
    const other = ['n2', 'n3'].find((id) => id !== replica)!;
    for (const nodeId of [replica, other]) {
      const { keeper, snapshots, now } = keeperWith({ nodeId });
      snapshots.release = () => undefined;
      const { view, evaluation } = heldBy('n1', 'db', ref(7), now());
      keeper.pullReplicas(view, evaluation, new Map([['db', persistent]]));
      keeper.pullReplicas(view, evaluation, new Map([['db', persistent]]));
      await new Promise((resolve) => setImmediate(resolve));
      if (nodeId === replica) {
        assert.equal(snapshots.fetches.length, 1, 'one pull while one is under way');
        assert.equal(snapshots.fetches[0]?.from[0], 'n1');
      } else {
        assert.equal(snapshots.fetches.length, 0, `${nodeId} is not a replica of db`);
      }
      snapshots.release?.();
      await keeper.settle();
    }
  });

  test('a failed pull is tried again only after its retry delay; relaxed or holderless workloads are never pulled', async () => {
    const replica = replicaNodes('db', 'n1', ['n1', 'n2', 'n3'], 1)[0]!;
    const { keeper, snapshots, advance, now } = keeperWith({ nodeId: replica });
    snapshots.failFetch = true;
    const pull = () => {
      const { view, evaluation } = heldBy('n1', 'db', ref(8), now());
      keeper.pullReplicas(view, evaluation, new Map([['db', persistent]]));
    };
    pull();
    await keeper.settle();
    assert.equal(snapshots.fetches.length, 1);
    advance(500);
    pull();
    await keeper.settle();
    assert.equal(snapshots.fetches.length, 1, 'not again within the retry delay');
    advance(2000);
    snapshots.failFetch = false;
    pull();
    await keeper.settle();
    assert.equal(snapshots.fetches.length, 2);
    assert.ok(snapshots.stored.has(ref(8).digest));
    const volatile = { scratchClass: 'volatile' } as WorkloadSpec;
    const { view, evaluation } = heldBy('n1', 'cache', ref(9), now());
    keeper.pullReplicas(view, evaluation, new Map([['cache', volatile]]));
    const none = heldBy('n1', 'db', null, now());
    keeper.pullReplicas(none.view, none.evaluation, new Map([['db', persistent]]));
    await keeper.settle();
    assert.equal(snapshots.fetches.length, 2);
  });
});
