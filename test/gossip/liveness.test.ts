import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LivenessEvent } from '../../src/gossip/index.js';
import {
  FAST,
  metricValue,
  startCluster,
  startNode,
  stopAll,
  stopNode,
  type TestNode,
  waitFor,
  writeSpec,
} from './helpers.js';

describe('liveness', () => {
  test('a stopped node is marked dead by the others; restarted, it is alive again with a new incarnation', async (t) => {
    const nodes = await startCluster(3);
    t.after(() => stopAll(nodes));
    const [a, b, victim] = nodes as [TestNode, TestNode, TestNode];
    await waitFor('everyone alive everywhere', () =>
      nodes.every((n) => n.gossip.detector.nodesIn('alive').length === 2),
    );
    assert.equal(
      a.gossip.peerIdOfNode(victim.nodeId),
      victim.gossip.peerId,
      'nodeId → peerId from the signed sender',
    );
    const firstIncarnation = a.gossip.detector.view().find((m) => m.nodeId === victim.nodeId)!.incarnation;
    assert.equal(firstIncarnation, victim.gossip.incarnation);

    const seen: Record<string, { event: string; at: number; e: LivenessEvent }[]> = { a: [], b: [] };
    for (const [name, node] of [
      ['a', a],
      ['b', b],
    ] as const) {
      for (const state of ['alive', 'suspect', 'dead'] as const) {
        node.gossip.detector.on(state, (e) => {
          if (e.nodeId === victim.nodeId) seen[name]!.push({ event: state, at: Date.now(), e });
        });
      }
    }

    const stoppedAt = Date.now();
    await stopNode(victim);
    const bound = FAST.deadAfterMs! + FAST.heartbeatMs!;
    await waitFor('the victim to be dead on a and b', () =>
      [a, b].every((n) => n.gossip.detector.state(victim.nodeId) === 'dead'),
    );
    for (const name of ['a', 'b']) {
      const events = seen[name]!.map((s) => s.event);
      assert.deepEqual(events, ['suspect', 'dead'], `${name} saw suspect then dead`);
      const deadAfter = seen[name]![1]!.at - stoppedAt;
      // The deadline is deadAfter + one heartbeat; the slack covers a busy
      // event loop (all nodes share one process on a shared machine).
      assert.ok(
        deadAfter <= bound + 1500,
        `${name} declared dead ${deadAfter} ms after stop (bound ${bound} ms)`,
      );
      t.diagnostic(
        `${name}: dead ${deadAfter} ms after stop (deadAfter ${FAST.deadAfterMs} + heartbeat ${FAST.heartbeatMs})`,
      );
    }

    // Incarnations are start timestamps: make sure the restart gets a later one.
    await new Promise((r) => setTimeout(r, 5));
    const back = await startNode(victim.nodeId, { bootstrap: [a.gossip.multiaddrs()[0]!] });
    nodes[2] = back;
    await waitFor('the restarted node alive on a and b', () =>
      [a, b].every((n) => n.gossip.detector.state(victim.nodeId) === 'alive'),
    );
    for (const name of ['a', 'b']) {
      const last = seen[name]!.at(-1)!;
      assert.equal(last.event, 'alive');
      assert.equal(last.e.previous, 'dead');
      assert.equal(last.e.rejoined, true);
      assert.ok(last.e.incarnation > firstIncarnation, 'a new, higher incarnation');
    }
  });

  test('a digest difference beyond the grace triggers a sync', async (t) => {
    // Anti-entropy interval off, so only the heartbeat digests can trigger the session.
    const nodes = await startCluster(2, { syncIntervalMs: 0 });
    t.after(() => stopAll(nodes));
    const [a, b] = nodes as [TestNode, TestNode];
    await waitFor('a and b see each other', () =>
      nodes.every((n) => n.gossip.detector.nodesIn('alive').length === 1),
    );
    // A change the replicator does not publish (its origin is not local):
    // only anti-entropy can carry it to b.
    a.state.doc('workloads').transact(() => {
      a.state.doc('workloads').getMap('specs').set('hidden', 1);
    }, 'test:not-published');
    await waitFor(
      'b to get the unpublished change via a heartbeat-triggered sync',
      () => b.state.doc('workloads').getMap('specs').get('hidden') === 1,
    );
    const triggered =
      (await metricValue(a, 'silo_liveness_digest_syncs_total')) +
      (await metricValue(b, 'silo_liveness_digest_syncs_total'));
    assert.ok(triggered >= 1, 'the digest comparison requested the sync');
    // And the replicator still works afterwards.
    writeSpec(b, 'normal', 2);
    await waitFor('normal replication', () => a.state.doc('workloads').getMap('specs').get('normal') === 2);
  });

  test('spread heartbeats: the interval grows with the members known, so what each node receives does not', async (t) => {
    // At most 2 heartbeats per 300 ms reach a node: with 4 members, each sends every 600 ms.
    const nodes = await startCluster(4, { heartbeatMs: 300, heartbeatsPerInterval: 2 });
    t.after(() => stopAll(nodes));
    const [a] = nodes as [TestNode];
    await waitFor('everyone heard everyone', () => nodes.every((n) => n.gossip.detector.view().length === 3));
    for (const node of nodes) assert.equal(node.gossip.heartbeatIntervalMs(), 600);
    const before = await metricValue(a, 'silo_liveness_heartbeats_sent_total');
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const sent = (await metricValue(a, 'silo_liveness_heartbeats_sent_total')) - before;
    // 3 s / 600 ms = 5 (10 at the unspread 300 ms); a late timer on a loaded machine only lowers it.
    assert.ok(sent >= 3 && sent <= 6, `${sent} heartbeats in 3 s`);
    // Unspread, the same cluster keeps the base interval.
    const plain = await startNode('plain', { heartbeatMs: 300 });
    t.after(() => stopNode(plain));
    assert.equal(plain.gossip.heartbeatIntervalMs(), 300);
  });
});
