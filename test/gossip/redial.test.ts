import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { digestsEqual, metricValue, readSpec, startCluster, stopAll, waitFor, writeSpec } from './helpers.js';

describe('redial', () => {
  test('the halves of a healed partition reconnect even when every node has its target of connections', async (t) => {
    // A target of one connection: after the partition each half re-fills its
    // connections from its own side, so only the probe of unheard peers can
    // bring a connection back across the old boundary.
    const nodes = await startCluster(4, { targetConnections: 1 });
    t.after(() => stopAll(nodes));
    await waitFor('every node hears every other', () =>
      nodes.every((n) => n.gossip.detector.view().filter((m) => m.state === 'alive').length === 3),
    );
    const left = nodes.slice(0, 2);
    const right = nodes.slice(2);
    for (const a of left) {
      for (const b of right) {
        await a.gossip.block(b.gossip.peerId);
        await b.gossip.block(a.gossip.peerId);
      }
    }
    await waitFor(
      'each side considers the other dead',
      () =>
        left.every((a) => right.every((b) => a.gossip.detector.state(b.nodeId) === 'dead')) &&
        right.every((b) => left.every((a) => b.gossip.detector.state(a.nodeId) === 'dead')),
    );
    await waitFor('each node connected within its half', () =>
      nodes.every((n) => n.gossip.peers().length >= 1),
    );
    for (let k = 0; k < 20; k++) {
      writeSpec(left[0]!, `left-${k}`, k);
      writeSpec(right[0]!, `right-${k}`, k);
    }
    await waitFor('each half converged on its own writes', () => digestsEqual(left) && digestsEqual(right));
    assert.equal(readSpec(left[1]!, 'right-0'), undefined, 'the partition held');

    for (const a of left) {
      for (const b of right) {
        a.gossip.unblock(b.gossip.peerId);
        b.gossip.unblock(a.gossip.peerId);
      }
    }
    await waitFor('all four nodes hold all writes', () => digestsEqual(nodes));
    for (const node of nodes) {
      assert.equal(readSpec(node, 'left-19'), 19);
      assert.equal(readSpec(node, 'right-19'), 19);
    }
    const rightIds = new Set(right.map((n) => n.gossip.peerId));
    const leftIds = new Set(left.map((n) => n.gossip.peerId));
    await waitFor(
      'a connection crosses the old boundary',
      () =>
        left.some((n) => n.gossip.peers().some((p) => rightIds.has(p))) ||
        right.some((n) => n.gossip.peers().some((p) => leftIds.has(p))),
    );
    let probes = 0;
    for (const node of nodes)
      probes += await metricValue(node, 'silo_gossip_redials_total', { reason: 'probe', result: 'ok' });
    assert.ok(probes >= 1, `a probe of an unheard peer reconnected the halves (probes ok: ${probes})`);
  });

  test('no probes are made while every peer is heard', async (t) => {
    const nodes = await startCluster(3, { targetConnections: 1 });
    t.after(() => stopAll(nodes));
    await waitFor('every node hears every other', () =>
      nodes.every((n) => n.gossip.detector.view().filter((m) => m.state === 'alive').length === 2),
    );
    const before = await Promise.all(
      nodes.map((n) => metricValue(n, 'silo_gossip_redials_total', { reason: 'probe' })),
    );
    await new Promise((r) => setTimeout(r, 1500));
    const after = await Promise.all(
      nodes.map((n) => metricValue(n, 'silo_gossip_redials_total', { reason: 'probe' })),
    );
    assert.deepEqual(after, before);
  });
});
