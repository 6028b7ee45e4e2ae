/**
 * How many real libp2p + gossipsub nodes the sim transport sustains in one
 * process, and what each costs. Not a benchmark of silo: plain gossipsub
 * (StrictSign, flood publish), each node dialing `degree` random others;
 * waits for every node to have a mesh peer, then publishes from random nodes
 * and reports delivery time to all nodes beside the lower bound (shortest
 * path latency), memory per node, CPU and event-loop delay.
 *
 *   node --expose-gc --import tsx sim/net/scale-probe.ts [nodes=50] [latencyMs=20] [degree=5] [messages=20]
 *
 * PROBE_TRANSPORT=memory runs the same load on @libp2p/memory (no latency)
 * as a baseline. Results depend heavily on how busy the machine is: one
 * process's event loop carries every node (docs/sim.md).
 */
import '../../src/util/polyfill.js';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { type GossipSub, gossipsub } from '@chainsafe/libp2p-gossipsub';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type Identify, identify } from '@libp2p/identify';
import type { Message } from '@libp2p/interface';
import { memory } from '@libp2p/memory';
import { type Ping, ping } from '@libp2p/ping';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import { SimNetwork } from './sim-network.js';

const [nodeCount = 50, latencyMs = 20, degree = 5, messages = 20] = process.argv.slice(2).map(Number);
const useMemory = process.env.PROBE_TRANSPORT === 'memory';
const dialConcurrency = Number(process.env.PROBE_DIAL_CONCURRENCY ?? 10);
const TOPIC = 'probe';
const MESH_TIMEOUT_MS = 60_000;
const IDLE_MS = 10_000;
const PUBLISH_GAP_MS = 200;
const DELIVERY_TIMEOUT_MS = 10_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const mib = (bytes: number) => Number((bytes / 1024 / 1024).toFixed(2));
const collect = () => (globalThis as { gc?: () => void }).gc?.();
const cpuMs = () => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
};

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

async function main(): Promise<void> {
  const net = new SimNetwork({
    seed: 'scale-probe',
    defaultLatencyMs: latencyMs,
    defaultJitterMs: latencyMs / 4,
  });
  const prng = net.prng.fork('probe');
  collect();
  const before = process.memoryUsage();
  const names = Array.from({ length: nodeCount }, (_, i) => `n${i}`);
  /** message id -> node name -> arrival time */
  const arrivals = new Map<string, Map<string, number>>();
  const startedAt = performance.now();
  const cpuAtStart = cpuMs();

  const nodes: Array<Libp2p<{ identify: Identify; ping: Ping; pubsub: GossipSub }>> = [];
  for (const name of names) {
    net.addNode(name);
    const node = await createLibp2p({
      addresses: { listen: [useMemory ? `/memory/${name}` : net.address(name)] },
      transports: [useMemory ? memory() : net.transport(name)],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: {
        identify: identify(),
        ping: ping(),
        pubsub: gossipsub({
          globalSignaturePolicy: 'StrictSign',
          emitSelf: false,
          allowPublishToZeroTopicPeers: true,
          floodPublish: true,
          // Every node shares one "IP" here; colocation scoring would push peers out of meshes.
          scoreParams: { IPColocationFactorWeight: 0 },
        }) as (components: unknown) => GossipSub,
      },
    });
    node.services.pubsub.subscribe(TOPIC);
    node.services.pubsub.addEventListener('message', (event: CustomEvent<Message>) => {
      const id = new TextDecoder().decode(event.detail.data);
      arrivals.get(id)?.set(name, performance.now());
    });
    nodes.push(node);
  }
  // Ramp up: a bounded pool of dials in flight. Starting every handshake at once saturates the one event
  // loop, every hop then waits seconds, and libp2p's own timeouts abort the connections (docs/sim.md).
  const pairs: Array<[number, string]> = [];
  for (let i = 0; i < nodeCount; i++) {
    const others = names.filter((_, j) => j !== i);
    for (const target of prng.sample(others, Math.min(degree, others.length))) pairs.push([i, target]);
  }
  let nextPair = 0;
  const dialWorker = async (): Promise<void> => {
    while (nextPair < pairs.length) {
      const [i, target] = pairs[nextPair++] as [number, string];
      const peer = nodes[names.indexOf(target)];
      if (peer === undefined) continue;
      const address = useMemory ? `/memory/${target}` : net.address(target);
      await nodes[i]?.dial(multiaddr(`${address}/p2p/${peer.peerId}`)).catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: dialConcurrency }, dialWorker));
  const setupMs = performance.now() - startedAt;

  const meshless = () => nodes.filter((node) => node.services.pubsub.getMeshPeers(TOPIC).length === 0).length;
  const meshWaitStart = performance.now();
  while (meshless() > 0 && performance.now() - meshWaitStart < MESH_TIMEOUT_MS) await sleep(100);
  const meshMs = performance.now() - meshWaitStart;
  const meshlessAtStart = meshless();
  const setupCpuMs = cpuMs() - cpuAtStart;
  const setupWallMs = performance.now() - startedAt;
  // Background cost with nothing published: heartbeats, connection-monitor pings, identify.
  const cpuBeforeIdle = cpuMs();
  await sleep(IDLE_MS);
  const idleCpuMs = cpuMs() - cpuBeforeIdle;

  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const cpuBeforePublish = cpuMs();
  const publishStart = performance.now();
  const publishes: Array<{ id: string; publisher: string; at: number; lowerBoundMs: number }> = [];
  for (let m = 0; m < messages; m++) {
    const publisher = names[prng.int(nodeCount)] as string;
    const id = `msg-${m}`;
    const paths = net.shortestPathLatencyMs(publisher);
    const lowerBoundMs = Math.max(...names.map((n) => paths.get(n) ?? Number.POSITIVE_INFINITY));
    const at = performance.now();
    arrivals.set(id, new Map([[publisher, at]]));
    publishes.push({ id, publisher, at, lowerBoundMs });
    await nodes[names.indexOf(publisher)]?.services.pubsub.publish(TOPIC, new TextEncoder().encode(id));
    await sleep(PUBLISH_GAP_MS);
  }
  const deliveryDeadline = performance.now() + DELIVERY_TIMEOUT_MS;
  while (
    publishes.some((p) => (arrivals.get(p.id)?.size ?? 0) < nodeCount) &&
    performance.now() < deliveryDeadline
  ) {
    await sleep(100);
  }
  const publishWallMs = performance.now() - publishStart;
  const publishCpuMs = cpuMs() - cpuBeforePublish;
  loop.disable();

  const toAll: number[] = [];
  const bounds: number[] = [];
  for (const p of publishes) {
    const got = arrivals.get(p.id);
    if (got === undefined || got.size < nodeCount) continue;
    toAll.push(Math.max(...got.values()) - p.at);
    bounds.push(p.lowerBoundMs);
  }
  toAll.sort((a, b) => a - b);
  bounds.sort((a, b) => a - b);
  collect();
  const after = process.memoryUsage();
  const stats = net.stats();
  const report = {
    transport: useMemory ? '@libp2p/memory' : 'sim',
    nodes: nodeCount,
    latencyMs: useMemory ? 0 : latencyMs,
    degree,
    dialConcurrency,
    setupMs: Math.round(setupMs),
    meshFormedMs: Math.round(meshMs),
    meshlessAfterWait: meshlessAtStart,
    setupCpuPct: Math.round((setupCpuMs / setupWallMs) * 100),
    idleCpuPct: Math.round((idleCpuMs / IDLE_MS) * 100),
    connectionsOpen: nodes.reduce((n, node) => n + node.getConnections().length, 0) / 2,
    publishes: messages,
    reachedEveryNode: toAll.length,
    writeToAllMs: {
      p50: Math.round(percentile(toAll, 50)),
      p99: Math.round(percentile(toAll, 99)),
      max: Math.round(toAll.at(-1) ?? Number.NaN),
    },
    lowerBoundMedianMs: useMemory ? 0 : Math.round(percentile(bounds, 50)),
    publishPhaseCpuPct: Math.round((publishCpuMs / publishWallMs) * 100),
    eventLoopDelayMs: {
      p50: Number((loop.percentile(50) / 1e6).toFixed(1)),
      p99: Number((loop.percentile(99) / 1e6).toFixed(1)),
      max: Number((loop.max / 1e6).toFixed(1)),
    },
    heapPerNodeMiB: mib((after.heapUsed - before.heapUsed) / nodeCount),
    rssPerNodeMiB: mib((after.rss - before.rss) / nodeCount),
    rssTotalMiB: mib(after.rss),
    wireMiB: useMemory ? undefined : mib(stats.totalBytes),
  };
  console.log(JSON.stringify(report));
  await Promise.allSettled(nodes.map((node) => node.stop()));
  net.close();
}

await main();
