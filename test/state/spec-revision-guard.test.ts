import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { ClusterState } from '../../src/state/cluster-state.js';
import { Origin } from '../../src/state/names.js';
import { SpecRevisionGuard } from '../../src/state/spec-revision-guard.js';
import { WorkloadsView } from '../../src/state/workloads-view.js';
import { workloadSpec } from '../fixtures/state-records.js';
import { quietLogger } from '../fixtures/state-store.js';

interface Replica {
  state: ClusterState;
  workloads: WorkloadsView;
  guard: SpecRevisionGuard;
}

let replicas = 0;

function replica(guarded = true): Replica {
  // Each replica its own node: its own slots (docs/epochs.md).
  const state = new ClusterState({ logger: quietLogger, nodeId: `node-${++replicas}` });
  const workloads = new WorkloadsView({ state, logger: quietLogger, registry: new Registry() });
  const guard = new SpecRevisionGuard({ state, workloads, logger: quietLogger });
  if (guarded) guard.start();
  return { state, workloads, guard };
}

/** Both ways, as a sync session would (each side gets what it lacks), then the guards' follow-ups. */
async function exchange(a: Replica, b: Replica): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const toB = a.state.encodeDiff('workloads', b.state.encodeStateVector('workloads'));
    const toA = b.state.encodeDiff('workloads', a.state.encodeStateVector('workloads'));
    b.state.applyRemote('workloads', toB, Origin.sync);
    a.state.applyRemote('workloads', toA, Origin.sync);
    // The guards lift in a microtask after the transaction.
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('spec revision guard', () => {
  test('concurrent puts of one workload end above both revisions on every replica, with the kept content', async () => {
    const a = replica();
    const b = replica();
    a.workloads.put(workloadSpec('web', { args: ['v1'] }));
    await exchange(a, b);
    // Both apply revision 2 concurrently, with different content.
    const fromA = a.workloads.put(workloadSpec('web', { args: ['from-a'] }));
    const fromB = b.workloads.put(workloadSpec('web', { args: ['from-b'] }));
    assert.equal(fromA.revision, 2);
    assert.equal(fromB.revision, 2);
    await exchange(a, b);

    const onA = a.workloads.get('web');
    const onB = b.workloads.get('web');
    assert.deepEqual(onA, onB, 'replicas agree');
    assert.ok(
      onA !== undefined && onA.revision > 2,
      `revision rose above both writers' (got ${onA?.revision})`,
    );
    assert.ok(['from-a', 'from-b'].includes(onA.args[0] ?? ''), 'one of the two contents was kept');
    // A holder that started either content at revision 2 now sees a higher revision: it restarts.
    a.guard.stop();
    b.guard.stop();
  });

  test('a kept spec with a lower revision than the one it replaced is lifted above it', async () => {
    // Of two concurrent values the newer stamp is kept; B writes after A's three puts, usually
    // in a later millisecond (then B's lower revision wins), else by node id.
    let keptLower = 0;
    for (let pair = 0; pair < 20; pair++) {
      const a = replica();
      const b = replica();
      a.workloads.put(workloadSpec('db'));
      await exchange(a, b);
      // A races ahead to revision 4 while B writes revision 2.
      for (const arg of ['a2', 'a3', 'a4']) a.workloads.put(workloadSpec('db', { args: [arg] }));
      b.workloads.put(workloadSpec('db', { args: ['b2'] }));
      await exchange(a, b);
      const kept = a.workloads.get('db');
      assert.deepEqual(kept, b.workloads.get('db'));
      if (kept?.args[0] === 'b2') keptLower++;
      // Either A's revision 4 survived, or whatever was kept now stands above it.
      assert.ok(kept !== undefined && (kept.revision > 4 || kept.args[0] === 'a4'), JSON.stringify(kept));
      a.guard.stop();
      b.guard.stop();
    }
    assert.ok(keptLower > 0, 'some pair kept the lower revision (the case under test)');
  });

  test('without the guard the replicas agree on a revision one of the writers ran other content under', async () => {
    // The failure the guard exists for: this is what a holder would be left running.
    const a = replica(false);
    const b = replica(false);
    a.workloads.put(workloadSpec('web', { args: ['v1'] }));
    await exchange(a, b);
    a.workloads.put(workloadSpec('web', { args: ['from-a'] }));
    b.workloads.put(workloadSpec('web', { args: ['from-b'] }));
    await exchange(a, b);
    assert.equal(a.workloads.get('web')?.revision, 2);
  });

  test('a single writer never triggers it', async () => {
    const a = replica();
    const b = replica();
    for (let revision = 1; revision <= 5; revision++) {
      a.workloads.put(workloadSpec('api', { args: [`r${revision}`] }));
      await exchange(a, b);
    }
    assert.equal(b.workloads.get('api')?.revision, 5);
    assert.equal(a.workloads.get('api')?.revision, 5);
    a.guard.stop();
    b.guard.stop();
  });
});
