import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { docTopic } from '../../src/gossip/index.js';
import { metricValue, ORG, startCluster, stopAll, waitFor } from './helpers.js';

describe('mesh repair', () => {
  test('an empty mesh with subscribed peers connected is counted and answered with a sync', async (t) => {
    // Gossipsub grafts at its heartbeat; with a 60 s heartbeat the mesh of
    // a freshly connected node stays empty: a meshless node on demand.
    const nodes = await startCluster(3, {
      gossipHeartbeatMs: 60_000,
      meshGraceMs: 300,
      meshCheckIntervalMs: 100,
      syncIntervalMs: 0,
      syncGraceMs: 60_000,
    });
    t.after(() => stopAll(nodes));
    const topic = docTopic(ORG, 'workloads');
    await waitFor('subscribed peers connected', () =>
      nodes.every((n) => n.gossip.node.services.pubsub.getSubscribers(topic).length >= 1),
    );
    for (const node of nodes) {
      await waitFor('a meshless event', async () => {
        return (await metricValue(node, 'silo_gossip_meshless_events_total', { kind: 'empty' })) >= 1;
      });
      assert.ok(node.gossip.thinTopics().includes('workloads'));
      assert.equal(node.gossip.meshPeers(topic).length, 0);
    }
    // The repair syncs: more outbound sessions than the one per dialed connection.
    await waitFor('repair syncs', async () => {
      let total = 0;
      for (const node of nodes) {
        total += await metricValue(node, 'silo_sync_sessions_total', { direction: 'outbound', result: 'ok' });
      }
      return total > nodes.length;
    });
    // One event per episode, not one per check. Barrier: a later repair sync of the same episode
    // (the checker resyncs a still-empty mesh every 5 s), counted by the checker itself.
    const events = await metricValue(nodes[0]!, 'silo_gossip_meshless_events_total', { topic: 'workloads' });
    const repairs = () => metricValue(nodes[0]!, 'silo_gossip_mesh_repair_syncs_total');
    const repairsBefore = await repairs();
    assert.ok(repairsBefore >= 1, 'the first repair sync is counted');
    await waitFor(
      'a later repair sync of the same episode',
      async () => (await repairs()) > repairsBefore,
      30_000,
    );
    assert.equal(
      await metricValue(nodes[0]!, 'silo_gossip_meshless_events_total', { topic: 'workloads' }),
      events,
    );
  });

  test('a healthy mesh is not counted', async (t) => {
    const nodes = await startCluster(3, { gossipHeartbeatMs: 200, meshCheckIntervalMs: 100 });
    t.after(() => stopAll(nodes));
    const topic = docTopic(ORG, 'workloads');
    await waitFor('a full mesh', () => nodes.every((n) => n.gossip.meshPeers(topic).length === 2));
    // Barrier: a thin topic counts once it outlasts the grace (1.5 gossip heartbeats, 300 ms),
    // checked every 100 ms, so eight more checks on every node would have counted one.
    const checks = (node: (typeof nodes)[number]) => metricValue(node, 'silo_gossip_mesh_checks_total');
    const before = await Promise.all(nodes.map(checks));
    await waitFor('eight more mesh checks on every node', async () =>
      (await Promise.all(nodes.map(checks))).every((n, i) => n >= before[i]! + 8),
    );
    for (const node of nodes) assert.deepEqual(node.gossip.thinTopics(), []);
    for (const node of nodes)
      assert.equal(
        await metricValue(node, 'silo_gossip_meshless_events_total'),
        0,
        'no meshless event counted',
      );
    for (const node of nodes) assert.equal(await metricValue(node, 'silo_gossip_mesh_repair_syncs_total'), 0);
  });
});
