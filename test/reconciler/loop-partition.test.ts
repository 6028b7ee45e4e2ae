import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { NodeAgent } from '../../src/agent/node-agent.js';
import { replicaNodes } from '../../src/reconciler/checkpoints.js';
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

describe('reconcile loop: a partitioned holder', { timeout: 180_000 }, () => {
  const cluster = new LoopCluster();
  const nodes = new Map<string, EnrolledNode>();
  let first: NodeAgent;
  const ids = ['node-a', 'node-b', 'node-c'];
  const agent = (id: string) => cluster.agents.get(id)!;

  before(async () => {
    first = await cluster.startMesh(ids, nodes);
  });
  after(() => cluster.close());

  test('cut off, the holder fences itself before the majority takes over; after the heal one copy remains', async () => {
    const name = nameRankedFirst('fenced', ids, 'node-b');
    first.workloads.put(await cluster.counterSpec(name));
    assert.equal(await waitRunningOnOne(first, name), 'node-b');
    const bDir = nodes.get('node-b')!.dataDir;
    await waitFor('node-b counts to 5', async () => (await readCount(bDir, name)) >= 5);
    // The replica (the next node in the workload's rendezvous order) keeps node-b's checkpoint.
    const [replica] = replicaNodes(name, 'node-b', ['node-a', 'node-c'], 1);
    await waitFor(`${replica} keeps node-b's checkpoint`, async () => {
      const ref = entriesOf(first, name).get('node-b')?.snapshot;
      return ref != null && (await agent(replica!).reconciler!.snapshotStore.has(ref.digest));
    });

    // Watch the real processes: never two running copies.
    let overlap = false;
    const watch = setInterval(() => {
      const running = ids.filter((id) => agent(id).reconciler!.runner.status(name)?.phase === 'running');
      if (running.length > 1) overlap = true;
    }, 20);
    try {
      const b = agent('node-b');
      for (const id of ['node-a', 'node-c']) {
        await b.gossip.block(agent(id).gossip.peerId);
        await agent(id).gossip.block(b.gossip.peerId);
      }
      await waitFor('node-b fences: released, reason "fenced"', () => {
        const own = b.observed.get('node-b', name);
        return (
          own?.phase === 'released' && /^fenced: lease lost/.test(own.reason ?? '') && own.snapshot !== null
        );
      });
      assert.notEqual(b.reconciler!.runner.status(name)?.phase, 'running');
      let taker = '';
      await waitFor(
        'the majority takes it over',
        () => {
          taker = ['node-a', 'node-c'].find((id) => first.observed.get(id, name)?.phase === 'running') ?? '';
          return taker !== '';
        },
        60_000,
      ).catch((err: Error) => {
        const status = ['node-a', 'node-c'].map((id) => ({
          id,
          loop: agent(id)
            .reconciler!.loop?.status()
            .workloads.find((w) => w.name === name),
          entries: Object.fromEntries(entriesOf(agent(id), name)),
        }));
        throw new Error(`${err.message}: ${JSON.stringify(status, null, 1)}`);
      });
      assert.match(first.observed.get(taker, name)?.reason ?? '', /took over from node-b/);

      for (const id of ['node-a', 'node-c']) {
        b.gossip.unblock(agent(id).gossip.peerId);
        agent(id).gossip.unblock(b.gossip.peerId);
      }
      await waitFor('node-b forgets its fenced entry', () => !entriesOf(first, name).has('node-b'), 60_000);
      assert.deepEqual(nodesIn(first, name, 'running'), [taker]);
      assert.deepEqual(nodesIn(b, name, 'running'), [taker]);
    } finally {
      clearInterval(watch);
    }
    assert.equal(overlap, false, 'two copies ran at once');
  });
});
