/**
 * How many real libp2p + gossipsub nodes the sim transport sustains in one
 * process, and what each costs. Not a benchmark of silo: plain gossipsub,
 * each node dialing `degree` random others, then `messages` publishes from
 * random nodes; reports memory per node, event-loop delay, meshless nodes
 * and how many publishes reached every node.
 *
 *   node --expose-gc --import tsx sim/net/scale-probe.ts [nodes=50] [latencyMs=20] [degree=5] [messages=20]
 */
import '../../src/util/polyfill.js';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { type GossipSub, gossipsub } from '@chainsafe/libp2p-gossipsub';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import type { Message } from '@libp2p/interface';
import { memory } from '@libp2p/memory';
import { ping } from '@libp2p/ping';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { SimNetwork } from './sim-network.js';

const [nodeCount = 50, latencyMs = 20, degree = 5, messages = 20] = process.argv.slice(2).map(Number);
const TOPIC = 'probe';
const WARM_UP_MS = 5_000;
const DELIVERY_WAIT_MS = 5_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
const collect = () => (globalThis as { gc?: () => void }).gc?.();

async function main(): Promise<void> {
  if (process.env.PROBE_KEEPER) setInterval(() => {}, 5);
  const net = new SimNetwork({ seed: 'scale-probe', defaultLatencyMs: latencyMs, defaultJitterMs: latencyMs / 4 });
  const prng = net.prng.fork('probe');
  collect();
  const before = process.memoryUsage();
  const names = Array.from({ length: nodeCount }, (_, i) => `n${i}`);
  const received = new Map<string, Set<string>>();
  const started = performance.now();
  const nodes = [];
  for (const name of names) {
    net.addNode(name);
    const node = await createLibp2p({
      addresses: { listen: [net.address(name)] },
      // PROBE_TRANSPORT=memory runs the same load on @libp2p/memory (no latency) as a baseline.
      transports: [process.env.PROBE_TRANSPORT === 'memory' ? memory() : net.transport(name)],
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
          scoreParams: { IPColocationFactorWeight: 0 },
        }) as (components: unknown) => GossipSub,
      },
    });
    node.services.pubsub.subscribe(TOPIC);
    node.services.pubsub.addEventListener('message', (event: CustomEvent<Message>) => {
      const id = new TextDecoder().decode(event.detail.data);
      let got = received.get(id);
      if (got === undefined) {
        got = new Set();
        received.set(id, got);
      }
      got.add(name);
    });
    nodes.push(node);
  }
  const dials = [];
  for (let i = 0; i < nodeCount; i++) {
    const others = names.filter((_, j) => j !== i);
    for (const target of prng.sample(others, Math.min(degree, others.length))) {
      const peer = nodes[names.indexOf(target)];
      if (peer === undefined) continue;
      const address = process.env.PROBE_TRANSPORT === 'memory' ? `/memory/${target}` : net.address(target);
      dials.push(nodes[i]?.dial(multiaddr(`${address}/p2p/${peer.peerId}`)).catch(() => undefined));
    }
  }
  await Promise.all(dials);
  const setupMs = performance.now() - started;
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const cpuBeforeWarmUp = process.cpuUsage();
  const stopProf = process.env.PROBE_PROFILE ? await (await import('./_prof.js')).startProfile() : undefined;
  if (process.env.PROBE_TRACE) {
    const { createRequire } = await import('node:module');
    const req = createRequire(import.meta.url);
    const tb = req('internal/test/binding').internalBinding('timers');
    for (let i = 0; i < 15; i++) {
      await sleep(1000);
      console.log('immediateInfo', [...tb.immediateInfo], process.getActiveResourcesInfo().filter((r) => r === 'Immediate').length);
      const subs = nodes.reduce((n, node) => n + node.services.pubsub.getSubscribers(TOPIC).length, 0);
      const peers = nodes.reduce((n, node) => n + node.services.pubsub.getPeers().length, 0);
      const ml = nodes.filter((node) => node.services.pubsub.getMeshPeers(TOPIC).length === 0).length;
      console.log(`t=${i + 1}s peers ${peers} subs ${subs} meshless ${ml} ran ${(globalThis as any).__ran} ${JSON.stringify((globalThis as any).__hist)}`);
    }
  }
  await sleep(WARM_UP_MS);
  await stopProf?.();
  const warmUpCpu = process.cpuUsage(cpuBeforeWarmUp);
  if (process.env.PROBE_DEBUG) {
    // biome-ignore lint/suspicious/noExplicitAny: debug
    const live = (net as any).live as Set<any>;
    let stuck = 0, pend = 0, inb = 0;
    for (const pair of live) {
      for (const ch of [pair.forward, pair.backward]) { if (ch.pending > 0 && Math.random() < 0.1) { const h = ch.handle; console.log('IMM', h.constructor.name, h._destroyed, typeof h._onImmediate, h._idleNext === null, h._idlePrev === null, h.hasRef(), performance.now() - ch.armedAt); } if (false) console.log(ch.from, ch.to, ch.pending, ch.queue[ch.head].at - performance.now(), ch.held, ch.closed, ch.queue[ch.head].item.kind, performance.now() - ch.dbg.armedAt, ch.dbg.wait, performance.now() - ch.firedAt); pend += ch.pending; if (ch.pending > 0 && ch.cancelTimer === undefined) stuck++; }
      inb += pair.dialerEnd.inbound.pending + pair.listenerEnd.inbound.pending;
    }
    const res = process.getActiveResourcesInfo(); const c: Record<string, number> = {}; for (const r of res) c[r] = (c[r] ?? 0) + 1; console.log(c, process.listenerCount('uncaughtException'), process.listenerCount('unhandledRejection'));
    const ran = await Promise.race([new Promise((r) => setImmediate(() => r('immediate ran'))), sleep(1000).then(() => 'immediate did NOT run in 1s')]);
    console.log(ran, (globalThis as any).__sched, (globalThis as any).__ran);
    console.log('live', live.size, 'pending', pend, 'stuck', stuck, 'inbound buffered', inb);
    for (const node of nodes.slice(0, 5)) {
      const ps = node.services.pubsub;
      console.log(node.getConnections().length, ps.getPeers().length, ps.getSubscribers(TOPIC).length, ps.getMeshPeers(TOPIC).length);
    }
  }
  const meshless = nodes.filter((node) => node.services.pubsub.getMeshPeers(TOPIC).length === 0).length;

  const publishedAt = new Map<string, number>();
  for (let m = 0; m < messages; m++) {
    const publisher = prng.int(nodeCount);
    const id = `msg-${m}`;
    publishedAt.set(id, performance.now());
    received.set(id, new Set([names[publisher] as string]));
    await nodes[publisher]?.services.pubsub.publish(TOPIC, new TextEncoder().encode(id));
    await sleep(100);
  }
  await sleep(DELIVERY_WAIT_MS);
  loop.disable();
  const reachedAll = [...publishedAt.keys()].filter((id) => received.get(id)?.size === nodeCount).length;
  collect();
  const after = process.memoryUsage();
  const stats = net.stats();
  const report = {
    nodes: nodeCount,
    latencyMs,
    degree,
    setupMs: Math.round(setupMs),
    connectionsOpen: stats.connections.open,
    meshlessAfterWarmUp: meshless,
    publishes: messages,
    reachedEveryNode: reachedAll,
    heapPerNodeMiB: mib((after.heapUsed - before.heapUsed) / nodeCount),
    rssPerNodeMiB: mib((after.rss - before.rss) / nodeCount),
    heapTotalMiB: mib(after.heapUsed),
    rssTotalMiB: mib(after.rss),
    eventLoopDelayP50Ms: (loop.percentile(50) / 1e6).toFixed(1),
    eventLoopDelayP99Ms: (loop.percentile(99) / 1e6).toFixed(1),
    eventLoopDelayMaxMs: (loop.max / 1e6).toFixed(1),
    warmUpCpuPct: (((warmUpCpu.user + warmUpCpu.system) / 1e3 / WARM_UP_MS) * 100).toFixed(0),
    cpuSeconds: ((process.cpuUsage().user + process.cpuUsage().system) / 1e6).toFixed(1),
    wireMiB: mib(stats.totalBytes),
  };
  console.log(JSON.stringify(report, null, 2));
  await Promise.allSettled(nodes.map((node) => node.stop()));
  net.close();
}

await main();
