/**
 * Real libp2p nodes on a SimNetwork, for the sim tests: noise, yamux,
 * identify, ping, and optionally gossipsub, over the sim transport.
 */
import { type GossipSub, gossipsub } from '@chainsafe/libp2p-gossipsub';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type Identify, identify } from '@libp2p/identify';
import { type Ping, ping } from '@libp2p/ping';
import { createLibp2p, type Libp2p } from 'libp2p';
import type { SimNetwork } from '../../sim/net/sim-network.js';
import { waitFor as sharedWaitFor } from '../helpers/wait.js';

export type PingServices = { identify: Identify; ping: Ping };
export type GossipServices = PingServices & { pubsub: GossipSub };

function baseOptions(net: SimNetwork, name: string) {
  return {
    addresses: { listen: [net.address(name)] },
    transports: [net.transport(name)],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
  };
}

/** Registers `name` on the network (if new) and starts a libp2p node listening there. */
export async function startPingNode(net: SimNetwork, name: string): Promise<Libp2p<PingServices>> {
  if (!net.hasNode(name)) net.addNode(name);
  return createLibp2p({ ...baseOptions(net, name), services: { identify: identify(), ping: ping() } });
}

export async function startGossipNode(net: SimNetwork, name: string): Promise<Libp2p<GossipServices>> {
  if (!net.hasNode(name)) net.addNode(name);
  return createLibp2p({
    ...baseOptions(net, name),
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        emitSelf: false,
        allowPublishToZeroTopicPeers: true,
        floodPublish: true,
        heartbeatInterval: 200,
        // All sim nodes share one "IP"; colocation scoring would push them out of each other's meshes.
        scoreParams: { IPColocationFactorWeight: 0 },
      }) as (components: unknown) => GossipSub,
    },
  });
}

/** Stops every node, ignoring errors, so cleanup always runs to the end. */
export async function stopAll(nodes: Iterable<Libp2p>): Promise<void> {
  await Promise.allSettled([...nodes].map((node) => node.stop()));
}

/** The shared waitFor with the condition first, as the transport tests read best. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  await sharedWaitFor(what, condition, timeoutMs, 20);
}
