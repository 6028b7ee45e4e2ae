import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { docTopic } from '../../src/gossip/topics.js';
import {
  createNode,
  metricValue,
  type NodeOverrides,
  ORG,
  readSpec,
  startCluster,
  stopAll,
  stopNode,
  waitFor,
  writeSpec,
} from './helpers.js';

// Only connection sessions: no periodic sync and a digest grace far beyond the test, so a node
// that never syncs with the writer can learn its write by gossip only.
const NO_BACKGROUND_SYNC: NodeOverrides = { syncIntervalMs: 0, syncGraceMs: 600_000 };

describe('updates nobody heard', () => {
  test('a write made before the gossip layer started is published to the first subscriber and travels on by gossip', async (t) => {
    const [a, b] = await startCluster(2, NO_BACKGROUND_SYNC);
    t.after(() => stopAll([a!, b!]));
    // A forwards only to its mesh: B must be in it before C's message arrives.
    const topic = docTopic(ORG, 'workloads');
    await waitFor('A and B in each other’s mesh', () => a!.gossip.meshPeers(topic).length === 1);
    const c = await createNode('node-c', { ...NO_BACKGROUND_SYNC, bootstrap: [a!.gossip.multiaddrs()[0]!] });
    t.after(() => stopNode(c));
    // As an agent writes its own enrollment record before its first connection.
    writeSpec(c, 'written-before-start', 42);
    // B and C never talk directly: B can only hear of C's write through A's gossip.
    await b!.gossip.block(c.gossip.peerId);
    await c.gossip.block(b!.gossip.peerId);
    const bSessionsBefore = await metricValue(b!, 'silo_sync_sessions_total');
    await c.gossip.start();

    await waitFor('B received C’s early write', () => readSpec(b!, 'written-before-start') === 42);
    assert.ok((await metricValue(c, 'silo_gossip_unheard_updates_total', { result: 'republished' })) >= 1);
    assert.equal(await metricValue(b!, 'silo_sync_sessions_total'), bSessionsBefore, 'B ran no sync session');
  });

  test('held updates above half the size limit are dropped, and sync still delivers them', async (t) => {
    const overrides: NodeOverrides = { ...NO_BACKGROUND_SYNC, maxUpdateBytes: 64 * 1024 };
    const [a] = await startCluster(1, overrides);
    t.after(() => stopAll([a!]));
    const c = await createNode('node-c', { ...overrides, bootstrap: [a!.gossip.multiaddrs()[0]!] });
    t.after(() => stopNode(c));
    const big = 'x'.repeat(40 * 1024);
    writeSpec(c, 'big', big);
    assert.equal(await metricValue(c, 'silo_gossip_unheard_updates_total', { result: 'too-large' }), 1);
    await c.gossip.start();
    await waitFor('A synced C’s big write on connect', () => readSpec(a!, 'big') === big);
    assert.equal(await metricValue(c, 'silo_gossip_unheard_updates_total', { result: 'republished' }), 0);
  });
});
