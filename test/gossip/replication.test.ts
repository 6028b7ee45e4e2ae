import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  digestsEqual,
  metricValue,
  readSpec,
  startCluster,
  startNode,
  stopAll,
  stopNode,
  type TestNode,
  waitFor,
  writeSpec,
} from './helpers.js';

describe('replication over real libp2p (loopback TCP)', () => {
  test('writes on each of five nodes converge on all five', async (t) => {
    const nodes = await startCluster(5);
    t.after(() => stopAll(nodes));
    await waitFor('a connected cluster', () => nodes.every((n) => n.gossip.peers().length >= 2));
    for (const [i, node] of nodes.entries()) {
      for (let k = 0; k < 20; k++) writeSpec(node, `n${i}-k${k}`, { i, k });
    }
    await waitFor('equal digests on all five nodes', () => digestsEqual(nodes));
    for (const node of nodes) {
      for (let i = 0; i < 5; i++) assert.deepEqual(readSpec(node, `n${i}-k19`), { i, k: 19 });
      assert.equal(node.state.doc('workloads').getMap('specs').size, 100);
    }
    // Gossip (not only sync) carried the writes.
    const received = await Promise.all(
      nodes.map((n) => metricValue(n, 'silo_gossip_updates_received_total')),
    );
    assert.ok(
      received.every((r) => r > 0),
      `every node received envelopes: ${received}`,
    );
  });

  test('a node started after 500 writes catches up via sync', async (t) => {
    const nodes: TestNode[] = await startCluster(2);
    t.after(() => stopAll(nodes));
    for (let k = 0; k < 500; k++) writeSpec(nodes[k % 2]!, `early-${k}`, k);
    await waitFor('the first two nodes agree', () => digestsEqual(nodes));
    const late = await startNode('late', { bootstrap: [nodes[0]!.gossip.multiaddrs()[0]!] });
    nodes.push(late);
    await waitFor('the late node catches up', () => digestsEqual(nodes));
    assert.equal(late.state.doc('workloads').getMap('specs').size, 500);
    // A session is counted when it ends, which can be just after its last slice made the digests equal.
    await waitFor(
      'a sync session that ended ok',
      async () => (await metricValue(late, 'silo_sync_sessions_total', { result: 'ok' })) >= 1,
    );
  });

  test('a partitioned node misses writes, then converges after heal with no new writes', async (t) => {
    const nodes = await startCluster(4);
    t.after(() => stopAll(nodes));
    await waitFor('a connected cluster', () => nodes.every((n) => n.gossip.peers().length >= 2));
    writeSpec(nodes[0]!, 'before', 1);
    await waitFor('convergence before the partition', () => digestsEqual(nodes));

    const [isolated, ...rest] = [nodes[3]!, nodes[0]!, nodes[1]!, nodes[2]!];
    // Both ways: the isolated node blocks everyone and everyone blocks it.
    for (const other of rest) {
      await isolated.gossip.block(other.gossip.peerId);
      await other.gossip.block(isolated.gossip.peerId);
    }
    await waitFor('the isolated node has no connections', () => isolated.gossip.peers().length === 0);
    for (let k = 0; k < 50; k++) writeSpec(rest[k % 3]!, `during-${k}`, k);
    writeSpec(isolated, 'isolated-write', true);
    await waitFor('the majority converges', () => digestsEqual(rest));
    // Held for a while: the isolated node must not get the writes somehow. No barrier can cross a
    // partition, so this waits: several redial and mesh-check intervals (FAST: 200 and 300 ms).
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(readSpec(isolated, 'during-0'), undefined);
    assert.equal(readSpec(rest[0]!, 'isolated-write'), undefined);
    assert.equal(isolated.gossip.peers().length, 0);

    for (const other of rest) {
      isolated.gossip.unblock(other.gossip.peerId);
      other.gossip.unblock(isolated.gossip.peerId);
    }
    await waitFor('convergence after heal', () => digestsEqual(nodes));
    assert.equal(readSpec(isolated, 'during-49'), 49);
    assert.equal(readSpec(rest[1]!, 'isolated-write'), true);
    assert.ok(isolated.gossip.peers().length > 0, 'redial reconnected the healed node');
  });

  test('a stopped node that is restarted replicates again', async (t) => {
    const nodes = await startCluster(3);
    t.after(() => stopAll(nodes));
    const victim = nodes[2]!;
    await stopNode(victim);
    writeSpec(nodes[0]!, 'while-down', 1);
    const back = await startNode(victim.nodeId, { bootstrap: [nodes[0]!.gossip.multiaddrs()[0]!] });
    nodes[2] = back;
    await waitFor('the restarted node converges', () => digestsEqual(nodes));
    writeSpec(back, 'after-restart', 2);
    await waitFor('its new write reaches the others', () => readSpec(nodes[0]!, 'after-restart') === 2);
  });
});
