import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Libp2p, Message } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { SimNetwork } from '../../sim/net/sim-network.js';
import { type GossipServices, startGossipNode, stopAll, waitFor } from './sim-nodes.js';

const TOPIC = 'silo-test/sim';

test('gossipsub delivers messages between 3 nodes in a line over the sim transport', async (t) => {
  const net = new SimNetwork({ seed: 11, defaultLatencyMs: 10, defaultJitterMs: 5 });
  const nodes: Array<Libp2p<GossipServices>> = [];
  t.after(async () => {
    await stopAll(nodes);
    net.close();
  });
  for (const name of ['a', 'b', 'c']) nodes.push(await startGossipNode(net, name));
  const [a, b, c] = nodes as [Libp2p<GossipServices>, Libp2p<GossipServices>, Libp2p<GossipServices>];

  const received = new Map<string, string[]>([
    ['a', []],
    ['b', []],
    ['c', []],
  ]);
  for (const [name, node] of [
    ['a', a],
    ['b', b],
    ['c', c],
  ] as const) {
    node.services.pubsub.subscribe(TOPIC);
    node.services.pubsub.addEventListener('message', (event: CustomEvent<Message>) => {
      if (event.detail.topic === TOPIC) received.get(name)?.push(new TextDecoder().decode(event.detail.data));
    });
  }

  // a - b - c: a and c are not connected, so a's message reaches c only if b forwards it.
  await a.dial(multiaddr(`${net.address('b')}/p2p/${b.peerId}`));
  await c.dial(multiaddr(`${net.address('b')}/p2p/${b.peerId}`));
  await waitFor(() => b.services.pubsub.getMeshPeers(TOPIC).length === 2, "b's mesh to hold a and c");
  await waitFor(
    () =>
      a.services.pubsub.getMeshPeers(TOPIC).length === 1 &&
      c.services.pubsub.getMeshPeers(TOPIC).length === 1,
    'a and c to mesh with b',
  );
  assert.equal(a.getConnections(c.peerId).length, 0, 'a and c must not be directly connected');

  await a.services.pubsub.publish(TOPIC, new TextEncoder().encode('from-a'));
  await waitFor(() => received.get('c')?.includes('from-a') === true, 'c to receive a message via b');
  await c.services.pubsub.publish(TOPIC, new TextEncoder().encode('from-c'));
  await waitFor(() => received.get('a')?.includes('from-c') === true, 'a to receive a message via b');

  assert.deepEqual(received.get('b')?.sort(), ['from-a', 'from-c']);
  assert.deepEqual(received.get('a'), ['from-c']);
  assert.deepEqual(received.get('c'), ['from-a']);
  assert.equal(net.shortestPathLatencyMs('a').get('c'), 20);
});
