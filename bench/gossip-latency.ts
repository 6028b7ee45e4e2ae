import '../src/util/polyfill.js';
import os from 'node:os';
import { monitorEventLoopDelay, PerformanceObserver, performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { heartbeatSchedule } from '../src/agent/heartbeat-schedule.js';
import { docTopic, GossipLayer } from '../src/gossip/index.js';
import { ClusterState } from '../src/state/cluster-state.js';

/**
 * Write-to-all latency of the gossip layer: N real agents' gossip layers
 * (libp2p over loopback TCP, StrictSign, one process), sequential writes on
 * round-robin nodes, each timed from the local transaction until every
 * other node has applied it. Also reports envelope bytes per write and
 * node start-up time. Prints JSON.
 *
 *   npx tsx bench/gossip-latency.ts [--nodes 5] [--writes 200] [--warmup-ms 3000] [--batch-ms 5] [--swim]
 *
 * `--swim`: heartbeats as under `services.lease = "swim"` (no acks, every
 * 10 s spread by the cluster's size; src/agent/heartbeat-schedule.ts). The
 * SWIM probes themselves are not run here (they are not the gossip layer's).
 */

const ORG = 'bench';
const LOOP_RESOLUTION_MS = 10;
const logger = pino({ level: 'silent' });

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, i)]!;
}

const round = (x: number) => Math.round(x * 100) / 100;

interface BenchNode {
  state: ClusterState;
  registry: Registry;
  gossip: GossipLayer;
}

async function metric(registry: Registry, name: string): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  return (await m.get()).values.reduce((sum, v) => sum + v.value, 0);
}

async function main(): Promise<void> {
  const n = arg('nodes', 5);
  const writes = arg('writes', 200);
  const warmupMs = arg('warmup-ms', 3000);
  const batchMs = arg('batch-ms', 5);
  const liveness = process.argv.includes('--swim') ? 'swim' : 'acked-heartbeats';
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });

  const nodes: BenchNode[] = [];
  const startupMs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const state = new ClusterState({ logger });
    const registry = new Registry();
    // Up to three random earlier nodes: everyone bootstrapping from node 0
    // would queue all handshakes on one node (one shared event loop here).
    const bootstrap = [...nodes]
      .sort(() => Math.random() - 0.5)
      .slice(0, 3)
      .map((x) => x.gossip.multiaddrs()[0]!);
    const gossip = await GossipLayer.create({
      org: ORG,
      nodeId: `n${i}`,
      state,
      logger,
      registry,
      bootstrap,
      batchMs,
      ...heartbeatSchedule(liveness, { heartbeatMs: 1000 }),
      // Every node dials from 127.0.0.1; libp2p's default allows 5 inbound attempts per second per host.
      connectionLimits: { inboundPerHostPerSecond: 1000 },
    });
    await gossip.start();
    startupMs.push(performance.now() - t0);
    nodes.push({ state, registry, gossip });
  }
  const firstPeerStart = performance.now();
  await waitUntil(() => nodes.every((x) => x.gossip.peers().length >= Math.min(n - 1, 1)), 60_000);
  const firstConnectMs = performance.now() - firstPeerStart;
  await new Promise((r) => setTimeout(r, warmupMs));

  const topic = docTopic(ORG, 'workloads');
  const meshSizes = nodes.map((x) => x.gossip.meshPeers(topic).length);
  const connections = nodes.map((x) => x.gossip.peers().length);

  // arrivals[key] = number of other nodes that have applied the write.
  const pending = new Map<string, { remaining: number; done: () => void }>();
  for (const node of nodes) {
    node.state
      .doc('workloads')
      .getMap('specs')
      .observe((event) => {
        if (event.transaction.local) return;
        for (const key of event.keysChanged) {
          const entry = pending.get(key);
          if (entry && --entry.remaining === 0) entry.done();
        }
      });
  }

  const bytesBefore = await Promise.all(
    nodes.map((x) => metric(x.registry, 'silo_gossip_published_bytes_total')),
  );
  const envelopesBefore = await Promise.all(
    nodes.map((x) => metric(x.registry, 'silo_gossip_updates_published_total')),
  );
  const syncBefore = await sumMetric(nodes, 'silo_sync_sessions_total');
  const gcPauses: number[] = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcPauses.push(entry.duration);
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  loop.enable();
  const latencies: number[] = [];
  let timeouts = 0;
  const payload = { image: 'registry/app', digest: `sha256:${'ab'.repeat(32)}`, cpus: 1, memoryMb: 256 };
  for (let i = 0; i < writes; i++) {
    const key = `w${i}`;
    const writer = nodes[i % n]!;
    const arrived = new Promise<void>((resolve) => pending.set(key, { remaining: n - 1, done: resolve }));
    const t0 = performance.now();
    writer.state.transactLocal('workloads', (doc) => doc.getMap('specs').set(key, { ...payload, i }));
    let timeout: NodeJS.Timeout | undefined;
    const timer = new Promise<'timeout'>((r) => {
      timeout = setTimeout(() => r('timeout'), 10_000);
    });
    if ((await Promise.race([arrived, timer])) === 'timeout') timeouts++;
    else latencies.push(performance.now() - t0);
    clearTimeout(timeout);
    pending.delete(key);
    await new Promise((r) => setTimeout(r, 5));
  }
  loop.disable();
  gcObserver.disconnect();
  const syncSessions = (await sumMetric(nodes, 'silo_sync_sessions_total')) - syncBefore;
  const bytesAfter = await Promise.all(
    nodes.map((x) => metric(x.registry, 'silo_gossip_published_bytes_total')),
  );
  const envelopesAfter = await Promise.all(
    nodes.map((x) => metric(x.registry, 'silo_gossip_updates_published_total')),
  );
  const bytes = bytesAfter.reduce((s, b, i) => s + b - bytesBefore[i]!, 0);
  const envelopes = envelopesAfter.reduce((s, e, i) => s + e - envelopesBefore[i]!, 0);
  const meshless = await Promise.all(
    nodes.map((x) => metric(x.registry, 'silo_gossip_meshless_events_total')),
  );

  const stopT0 = performance.now();
  await Promise.all(nodes.map((x) => x.gossip.stop()));
  const stopMs = performance.now() - stopT0;

  latencies.sort((a, b) => a - b);
  const startSorted = [...startupMs].sort((a, b) => a - b);
  const result = {
    bench: 'gossip-latency',
    transport: 'tcp loopback, one process',
    nodes: n,
    writes,
    batchMs,
    liveness,
    cpus: os.cpus().length,
    loadavg1m: round(os.loadavg()[0]!),
    writeToAllMs: {
      p50: round(percentile(latencies, 50)),
      p90: round(percentile(latencies, 90)),
      p99: round(percentile(latencies, 99)),
      max: round(latencies.at(-1) ?? Number.NaN),
      min: round(latencies[0] ?? Number.NaN),
      timeouts,
    },
    envelopeBytesPerWrite: round(bytes / Math.max(1, envelopes)),
    envelopesPerWrite: round(envelopes / writes),
    nodeStartupMs: {
      p50: round(percentile(startSorted, 50)),
      max: round(startSorted.at(-1)!),
      all: startupMs.map(round),
    },
    firstConnectionMs: round(firstConnectMs),
    stopAllMs: round(stopMs),
    meshPeersAfterWarmup: meshSizes,
    connectionsAfterWarmup: connections,
    meshlessEvents: meshless.reduce((a, b) => a + b, 0),
    syncSessionsDuringWrites: syncSessions,
    gcDuringWrites: {
      pauses: gcPauses.length,
      totalMs: round(gcPauses.reduce((a, b) => a + b, 0)),
      maxMs: round(Math.max(0, ...gcPauses)),
    },
    // The histogram includes its 10 ms sampling interval; reported as the delay beyond it.
    eventLoopDelayMs: {
      p50: round(loop.percentile(50) / 1e6 - LOOP_RESOLUTION_MS),
      p99: round(loop.percentile(99) / 1e6 - LOOP_RESOLUTION_MS),
    },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

async function sumMetric(nodes: BenchNode[], name: string): Promise<number> {
  const values = await Promise.all(nodes.map((x) => metric(x.registry, name)));
  return values.reduce((a, b) => a + b, 0);
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!condition()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
