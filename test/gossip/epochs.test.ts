import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import * as Y from 'yjs';
import { ClusterState } from '../../src/state/cluster-state.js';
import { compareEpochs, GENESIS_EPOCH } from '../../src/state/epochs/epoch.js';
import { slottedValues, writeSlotted } from '../fixtures/slotted-writes.js';
import {
  createNode,
  digestsEqual,
  metricValue,
  silentLogger,
  startCluster,
  startNode,
  stopAll,
  type TestNode,
  waitFor,
} from './helpers.js';

/*
 * Epoch switches over real libp2p (docs/epochs.md): a node starts an epoch,
 * the others adopt it by sync, and writes made in the old epoch meanwhile are
 * carried over by whoever holds them.
 */

describe('epochs over gossip and sync', () => {
  const nodes: TestNode[] = [];
  after(() => stopAll(nodes));

  test('a later epoch spreads by sync; a node away during the switch carries its writes over', async () => {
    nodes.push(...(await startCluster(2)));
    const [a, b] = nodes as [TestNode, TestNode];
    for (let i = 0; i < 20; i++) for (let r = 0; r < 5; r++) writeSlotted(a.state, `k${i}`, { i, r });
    await waitFor('a and b converge', () => digestsEqual([a, b]), 10_000);

    // c has the old epoch's state and a write nobody else saw, made while it was away.
    const cState = new ClusterState({ logger: silentLogger, nodeId: 'node-c' });
    cState.applyRemote('workloads', a.state.encodeDiff('workloads'));
    writeSlotted(cState, 'from-c', 'written-away');
    writeSlotted(cState, 'k3', 'c-rewrote-k3');

    const before = Y.encodeStateAsUpdate(a.state.doc('workloads')).byteLength;
    const epoch = a.state.startEpoch('workloads');
    assert.equal(epoch.number, 1);
    assert.ok(Y.encodeStateAsUpdate(a.state.doc('workloads')).byteLength < before, 'the history is gone');
    // A write into the new epoch right away: gossip carries it with the epoch; b fetches the epoch.
    writeSlotted(a.state, 'after-start', 1);
    await waitFor('b adopts the epoch', () => compareEpochs(b.state.epoch('workloads'), epoch) === 0, 15_000);

    const c = await startNode('node-c', { state: cState, bootstrap: [a.gossip.multiaddrs()[0]!] });
    nodes.push(c);
    await waitFor('all three converge in the new epoch', () => digestsEqual([a, b, c]), 20_000);
    for (const node of [a, b, c]) {
      assert.deepEqual(node.state.epoch('workloads'), epoch);
      const seen = slottedValues(node.state);
      assert.equal(seen.get('from-c'), 'written-away', `${node.nodeId} has c's write from the old epoch`);
      assert.equal(seen.get('k3'), 'c-rewrote-k3', `${node.nodeId} has c's newer k3`);
      assert.deepEqual(seen.get('k4'), { i: 4, r: 4 });
      assert.equal(seen.get('after-start'), 1);
      assert.equal(seen.size, 22);
    }
    // c met the later epoch in a sync: its peer sent it the whole document, which it adopted.
    assert.ok(
      (await metricValue(c, 'silo_sync_other_epoch_total', { doc: 'workloads', epoch: 'later' })) >= 1,
    );
    const answered = await Promise.all(
      [a, b].map((n) =>
        metricValue(n, 'silo_sync_other_epoch_total', { doc: 'workloads', epoch: 'earlier' }),
      ),
    );
    assert.ok((answered[0] ?? 0) + (answered[1] ?? 0) >= 1, 'a or b answered a step 1 of the earlier epoch');
  });

  test('two epochs started at once: every node ends in the same one, with every write', async () => {
    const pair = await startCluster(2);
    nodes.push(...pair);
    const [a, b] = pair as [TestNode, TestNode];
    writeSlotted(a.state, 'x', 1);
    await waitFor('converged', () => digestsEqual([a, b]), 10_000);
    const ea = a.state.startEpoch('workloads');
    writeSlotted(a.state, 'only-a', 1);
    const eb = b.state.startEpoch('workloads');
    writeSlotted(b.state, 'only-b', 2);
    const winner = compareEpochs(ea, eb) > 0 ? ea : eb;
    await waitFor(
      'both in the winning epoch',
      () => digestsEqual([a, b]) && compareEpochs(a.state.epoch('workloads'), winner) === 0,
      20_000,
    );
    for (const node of [a, b]) {
      const seen = slottedValues(node.state);
      assert.equal(seen.get('only-a'), 1);
      assert.equal(seen.get('only-b'), 2);
      assert.equal(seen.get('x'), 1);
    }
  });

  test('an update or sync frame naming an epoch of the observed document is refused', async () => {
    const lone = await createNode('node-z');
    assert.throws(
      () => lone.state.adoptEpoch('observed', { number: 1, id: 'ab' }, Y.encodeStateAsUpdate(new Y.Doc())),
      /has no epochs/,
    );
    assert.throws(
      () => lone.state.adoptEpoch('workloads', GENESIS_EPOCH, Y.encodeStateAsUpdate(new Y.Doc())),
      /not after the current one/,
    );
    await lone.state.close();
  });
});
