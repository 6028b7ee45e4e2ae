import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import { generateNodeKey } from '../../src/gossip/keys.js';
import { createGossipNode } from '../../src/gossip/node.js';
import { FAST, readSpec, startNode, stopAll, waitFor, writeSpec } from './helpers.js';

/**
 * Outside testing: an extra libp2p connection to n1 made with n2's own key,
 * sending nothing and closed after a few seconds, stopped n1 hearing n2's
 * heartbeats for good (gossipsub lost its streams with the duplicate) while
 * sync still matched. Real networks make duplicate connections (simultaneous
 * dials, NAT rebinding, a restart while the old connection lingers): any
 * number of them, opened and closed in any order, must never stop delivery.
 * Real libp2p over loopback TCP.
 */
test('extra connections with a member key, opened and closed, never stop delivery', {
  timeout: 120_000,
}, async (t) => {
  const bKey = await generateNodeKey();
  const a = await startNode('node-a');
  const b = await startNode('node-b', { privateKey: bKey, bootstrap: [a.gossip.multiaddrs()[0]!] });
  t.after(() => stopAll([a, b]));
  await waitFor('a and b hear each other', () =>
    [a, b].every((n) => n.gossip.detector.nodesIn('alive').length === 1),
  );

  for (const holdMs of [0, 300, 1500, 300]) {
    // A second libp2p node with b's key: what a NAT rebinding or a lingering
    // connection of a restarted b looks like to a.
    const intruder = await createGossipNode({
      transport: 'tcp',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      privateKey: bKey,
    });
    try {
      await intruder.dial(multiaddr(a.gossip.multiaddrs()[0]!));
      await new Promise((resolve) => setTimeout(resolve, holdMs));
    } finally {
      await intruder.stop();
    }
    // After the duplicate is gone, b's writes and heartbeats reach a again,
    // and keep reaching it for longer than dead_after.
    const key = `after-${holdMs}`;
    writeSpec(b, key, { v: holdMs });
    await waitFor(
      `a receives b's write after a ${holdMs} ms duplicate`,
      () => readSpec(a, key) !== undefined,
      10_000,
    );
    // The lost streams are found and the connection renewed within a few
    // check intervals (a blip of about a second); from then on delivery holds.
    // A wait for the repair to settle, not an absence proof (the loop below watches liveness).
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await waitFor(`a and b hear each other again after a ${holdMs} ms duplicate`, () =>
      [a, b].every((n) => n.gossip.detector.nodesIn('alive').length === 1),
    );
    const until = Date.now() + 2 * FAST.deadAfterMs!;
    while (Date.now() < until) {
      assert.equal(
        a.gossip.detector.state('node-b'),
        'alive',
        `b stays alive on a after a ${holdMs} ms duplicate`,
      );
      assert.equal(
        b.gossip.detector.state('node-a'),
        'alive',
        `a stays alive on b after a ${holdMs} ms duplicate`,
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
});
