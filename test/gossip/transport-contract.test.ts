import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import type { Libp2p } from '@libp2p/interface';
import { memory } from '@libp2p/memory';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2pOptions } from 'libp2p';
import { SimNetwork } from '../../sim/net/sim-network.js';
import { freeLoopbackPorts } from '../../src/cli/demo/free-port.js';
import { checkStreamEcho, type TransportWorld, transportContract } from './transport-contract.js';

type TransportFactory = NonNullable<Libp2pOptions['transports']>[number];

/** Nodes built as src/gossip/node.ts builds an agent's (noise, yamux), on `transport`, listening on `listen`. */
function world(
  make: (name: string) => { transport: TransportFactory; listen: string },
  deadAddress: () => Promise<string>,
  onClose: () => void = () => undefined,
): TransportWorld {
  const nodes: Libp2p[] = [];
  return {
    async node(name) {
      const { transport, listen } = make(name);
      const node = await createLibp2p({
        addresses: { listen: [listen] },
        transports: [transport],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
      });
      nodes.push(node);
      return node;
    },
    deadAddress: async () => multiaddr(await deadAddress()),
    async close() {
      await Promise.allSettled(nodes.map((node) => node.stop()));
      onClose();
    },
  };
}

/** The agents' transport: TCP on loopback. */
transportContract('TCP (@libp2p/tcp)', () =>
  world(
    () => ({ transport: tcp(), listen: '/ip4/127.0.0.1/tcp/0' }),
    async () => `/ip4/127.0.0.1/tcp/${(await freeLoopbackPorts(1))[0]}`,
  ),
);

/** The replication tests' transport. */
transportContract('memory (@libp2p/memory)', () => {
  const run = randomUUID().slice(0, 8);
  return world(
    (name) => ({ transport: memory(), listen: `/memory/${run}-${name}` }),
    async () => `/memory/${run}-nobody`,
  );
});

/** The simulator's transport, with a latency so that the handshake and every chunk take time. */
transportContract('SimTransport (sim/net)', () => {
  const net = new SimNetwork({ seed: 1, defaultLatencyMs: 5, defaultJitterMs: 2 });
  net.addNode('nobody');
  return world(
    (name) => {
      net.addNode(name);
      return { transport: net.transport(name) as TransportFactory, listen: net.address(name).toString() };
    },
    async () => net.address('nobody').toString(),
    () => net.close(),
  );
});

/** A transport that flips one bit of what it sends on outbound connections, once the handshake is done. */
test('the contract fails a transport that corrupts a byte', async () => {
  const net = new SimNetwork({ seed: 2 });
  const broken = (name: string): TransportFactory => {
    net.addNode(name);
    const make = net.transport(name);
    return (components) => {
      const inner = make(components);
      const dial: typeof inner.dial = (address, options) =>
        inner.dial(address, {
          ...options,
          upgrader: new Proxy(options.upgrader, {
            get(target, property, receiver) {
              if (property !== 'upgradeOutbound') return Reflect.get(target, property, receiver);
              return (...[maConn, opts]: Parameters<typeof target.upgradeOutbound>) => {
                const sink = maConn.sink;
                maConn.sink = (source) =>
                  sink(
                    (async function* () {
                      let chunks = 0;
                      for await (const chunk of source) {
                        if (++chunks !== 40) {
                          yield chunk;
                          continue;
                        }
                        const flipped = Uint8Array.from(chunk.subarray());
                        flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
                        yield flipped;
                      }
                    })(),
                  );
                return target.upgradeOutbound(maConn, opts);
              };
            },
          }),
        });
      return Object.assign(Object.create(Object.getPrototypeOf(inner)), inner, { dial });
    };
  };
  const factory = () =>
    world(
      (name) => ({ transport: broken(name), listen: net.address(name).toString() }),
      async () => '/memory/nobody',
      () => net.close(),
    );
  await assert.rejects(() => checkStreamEcho(factory));
});
