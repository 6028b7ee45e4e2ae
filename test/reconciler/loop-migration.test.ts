import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { NodeAgent } from '../../src/agent/node-agent.js';
import type { EnrolledNode } from '../agent/enrolled-cluster.js';
import {
  entriesOf,
  LoopCluster,
  nameRankedFirst,
  nodesIn,
  readCount,
  waitFor,
  waitRunningOnOne,
} from './loop-cluster.js';

describe('reconcile loop: planned moves', { timeout: 180_000 }, () => {
  const cluster = new LoopCluster();
  const nodes = new Map<string, EnrolledNode>();
  let first: NodeAgent;
  const _agents = () => [...cluster.agents.values()];
  const ids = ['node-a', 'node-b', 'node-c'];

  before(async () => {
    first = await cluster.startMesh(ids, nodes);
  });
  after(() => cluster.close());

  test('draining the holder moves the counter with its state: it continues where it was', async () => {
    const name = nameRankedFirst('moving', ids, 'node-c', 'node-a');
    first.workloads.put(await cluster.counterSpec(name));
    assert.equal(await waitRunningOnOne(first, name), 'node-c');
    const oldDir = nodes.get('node-c')!.dataDir;
    await waitFor('the counter reaches 10 on node-c', async () => (await readCount(oldDir, name)) >= 10);
    const beforeDrain = await readCount(oldDir, name);

    first.enrollment.setDraining('node-c', { draining: true, at: Date.now(), by: 'test' });
    // node-c stops, snapshots and releases; node-a (next in rendezvous order) restores and starts.
    await waitFor('released by node-c with a snapshot', () => {
      const status = entriesOf(first, name).get('node-c');
      return status?.phase === 'released' && status.snapshot !== null;
    });
    const released = entriesOf(first, name).get('node-c')!;
    assert.match(released.reason ?? '', /moving to node-a: holder node-c is draining/);
    await waitFor('running on node-a', () => nodesIn(first, name, 'running').join() === 'node-a', 60_000);
    const newDir = nodes.get('node-a')!.dataDir;
    await waitFor(
      'node-a counts on from the value node-c had',
      async () => (await readCount(newDir, name)) > beforeDrain,
    );
    const status = entriesOf(first, name).get('node-a')!;
    assert.match(status.reason ?? '', /state restored from node-c's snapshot/);
    // The old holder forgets its entry once the new one runs, and runs nothing.
    await waitFor('node-c forgets its entry', () => !entriesOf(first, name).has('node-c'));
    assert.notEqual(cluster.agents.get('node-c')!.reconciler!.runner.status(name)?.phase, 'running');
    // Exactly one copy ran at any time: node-c released before node-a claimed.
    const restores = await first.registry.getSingleMetricAsString('silo_reconcile_restores_total');
    assert.match(restores, /source="snapshot"} 1/);
  });
});
