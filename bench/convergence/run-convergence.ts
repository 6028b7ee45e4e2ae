/**
 * `bench convergence`: per cluster size N, silo beside a floodsub baseline
 * and a push-pull-only baseline, all on the simulated network with the
 * same link latency and the same connection graph, plus the lower bound
 * (shortest path in that graph × link latency). See docs/benchmarks.md.
 */
import os from 'node:os';
import { pino } from 'pino';
import { LoadMonitor, type LoadSample } from '../../sim/harness/load-monitor.js';
import { SimCluster, type SimMembership, type SimTiming } from '../../sim/harness/sim-cluster.js';
import { Prng } from '../../sim/net/prng.js';
import { SimNetwork } from '../../sim/net/sim-network.js';
import type { MeshDegree } from '../../src/gossip/index.js';
import { heapAfterGc } from '../lib/heap.js';
import { sleep, waitUntil } from '../lib/stats.js';
import {
  type HealResult,
  measureHeal,
  measureSustained,
  measureWrites,
  type SustainedResult,
  type WriteLatency,
} from './measure.js';
import {
  connectionGraph,
  FloodsubSystem,
  PushPullSystem,
  type ReplicaSystem,
  SiloSystem,
} from './systems.js';

export interface ConvergenceOptions {
  nodes: number[];
  latencyMs: number;
  jitterMs: number;
  writes: number;
  /** Gap between writes in the latency measurement, ms. */
  gapMs: number;
  partitionWrites: number;
  pushPullIntervalMs: number;
  sustainRates: number[];
  sustainSeconds: number;
  seed: number;
  baselines: boolean;
  /** Pause for meshes and subscriptions to form before measuring, ms (default 3000). */
  settleMs?: number;
  /** Window for the background-traffic measurement, ms (default 2000). */
  idleMs?: number;
  timing?: Partial<SimTiming>;
  /** silo's agents: gossipsub mesh degree (default the agent's) and SWIM liveness (default acked heartbeats). */
  mesh?: Partial<MeshDegree>;
  floodPublish?: boolean;
  membership?: SimMembership;
  log: (line: string) => void;
}

export interface SystemRun {
  system: 'silo' | 'floodsub' | 'push-pull';
  writes: WriteLatency;
  heal: HealResult | null;
}

export interface SizeRun {
  nodes: number;
  startupMs: number;
  /** RSS growth over the agents' start, per agent, MB (a floor: memory freed by earlier sizes is reused). */
  memoryPerAgentMb: number;
  /** JS heap in use after a full GC, growth over the agents' start, per agent, MB. */
  heapPerAgentMb: number;
  connections: number;
  /** Mean connections per node. */
  degree: number;
  /** Nodes with peers but an empty mesh on the document topic when the writes began. */
  meshlessAtStart: number;
  /** Meshless episodes silo's mesh repair counted during the run (all topics). */
  meshlessEvents: number;
  sustained: SustainedResult | null;
  systems: SystemRun[];
  load: LoadSample;
}

export interface ConvergenceReport {
  bench: 'convergence';
  startedAt: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; loadavg1m: number };
  options: Omit<ConvergenceOptions, 'log'>;
  sizes: SizeRun[];
}

export async function runConvergence(options: ConvergenceOptions): Promise<ConvergenceReport> {
  const startedAt = new Date().toISOString();
  const sizes: SizeRun[] = [];
  for (const n of options.nodes) sizes.push(await runSize(n, options));
  const { log: _log, ...rest } = options;
  return {
    bench: 'convergence',
    startedAt,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
      node: process.version,
      loadavg1m: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
    },
    options: rest,
    sizes,
  };
}

async function runSize(n: number, options: ConvergenceOptions): Promise<SizeRun> {
  const { log } = options;
  const monitor = new LoadMonitor();
  monitor.start();
  const prng = new Prng(`${options.seed}:${n}`);
  log(`N=${n}: starting ${n} silo agents`);
  const heap = heapAfterGc();
  const rss = process.memoryUsage().rss;
  const began = performance.now();
  const cluster = await SimCluster.start({
    seed: `${options.seed}:${n}`,
    nodes: n,
    network: { latencyMs: options.latencyMs, jitterMs: options.jitterMs },
    reconciler: false,
    ...(options.timing ? { timing: options.timing } : {}),
    ...(options.mesh ? { mesh: options.mesh } : {}),
    ...(options.floodPublish !== undefined && { floodPublish: options.floodPublish }),
    ...(options.membership ? { membership: options.membership } : {}),
  });
  const startupMs = Math.round(performance.now() - began);
  const memoryPerAgentMb = Math.round(((process.memoryUsage().rss - rss) / 1024 / 1024 / n) * 10) / 10;
  const heapPerAgentMb = Math.round(((heapAfterGc() - heap) / 1024 / 1024 / n) * 10) / 10;
  const silo = new SiloSystem(cluster);
  const systems: SystemRun[] = [];
  let sustained: SustainedResult | null = null;
  let meshlessAtStart = 0;
  let meshlessEvents = 0;
  const graph = await (async () => {
    try {
      const warm = await waitUntil(
        () => cluster.converged() && cluster.agents().every((a) => a.gossip.peers().length > 0),
        60_000,
        50,
      );
      log(
        `N=${n}: started in ${startupMs} ms, warm after ${warm === null ? 'timeout' : `${Math.round(warm)} ms`}`,
      );
      // Meshes form at gossipsub heartbeats: give them a few.
      await sleep(options.settleMs ?? 3000);
      meshlessAtStart = silo.meshless();
      const edges = connectionGraph(cluster.net);
      log(
        `N=${n}: silo: ${options.writes} writes (${edges.length} connections, ${meshlessAtStart} meshless)`,
      );
      const writes = await measureWrites(silo, {
        writes: options.writes,
        gapMs: options.gapMs,
        deadlineMs: 15_000,
        idleMs: options.idleMs ?? 2000,
        prng,
      });
      log(`N=${n}: silo p50 ${writes.latencyMs.p50} p99 ${writes.latencyMs.p99} ms; sustained rate`);
      sustained = await measureSustained(silo, options.sustainRates, options.sustainSeconds, prng);
      log(`N=${n}: silo heal after ${options.partitionWrites} writes per side`);
      const heal = await measureHeal(silo, options.partitionWrites, 30_000, prng);
      meshlessEvents = await sumMetric(cluster, 'silo_gossip_meshless_events_total');
      systems.push({ system: 'silo', writes, heal });
      return edges;
    } finally {
      await silo.close();
    }
  })();
  const names = Array.from({ length: n }, (_, i) => `n${i + 1}`);
  if (options.baselines) {
    const quiet = pino({ level: 'silent' });
    log(`N=${n}: floodsub baseline`);
    const flood = await FloodsubSystem.start(newNet(options, n, 'floodsub'), names, graph, quiet);
    systems.push(await baseline(flood, options, prng, false));
    log(`N=${n}: push-pull baseline (every ${options.pushPullIntervalMs} ms)`);
    const pp = await PushPullSystem.start(
      newNet(options, n, 'push-pull'),
      names,
      graph,
      options.pushPullIntervalMs,
      quiet,
    );
    systems.push(await baseline(pp, options, prng, true));
  }
  const load = monitor.overall();
  monitor.stop();
  return {
    nodes: n,
    startupMs,
    memoryPerAgentMb,
    heapPerAgentMb,
    connections: graph.length,
    degree: Math.round(((2 * graph.length) / n) * 10) / 10,
    meshlessAtStart,
    meshlessEvents,
    sustained,
    systems,
    load,
  };
}

async function baseline(
  system: ReplicaSystem,
  options: ConvergenceOptions,
  prng: Prng,
  heal: boolean,
): Promise<SystemRun> {
  try {
    // Subscriptions (floodsub) and first sessions (push-pull) settle.
    await sleep(options.settleMs ?? 2000);
    const slow = system.name === 'push-pull';
    const writes = await measureWrites(system, {
      writes: options.writes,
      gapMs: options.gapMs,
      deadlineMs: slow ? 40 * options.pushPullIntervalMs : 15_000,
      idleMs: Math.max(options.idleMs ?? 2000, slow ? 2 * options.pushPullIntervalMs : 0),
      prng,
    });
    const healed = heal
      ? await measureHeal(system, options.partitionWrites, 60 * options.pushPullIntervalMs, prng)
      : null;
    return { system: system.name, writes, heal: healed };
  } finally {
    await system.close();
  }
}

function newNet(options: ConvergenceOptions, n: number, label: string): SimNetwork {
  return new SimNetwork({
    seed: `${options.seed}:${n}:${label}`,
    defaultLatencyMs: options.latencyMs,
    defaultJitterMs: options.jitterMs,
  });
}

async function sumMetric(cluster: SimCluster, name: string): Promise<number> {
  let total = 0;
  for (const agent of cluster.agents()) {
    const metric = agent.registry.getSingleMetric(name);
    if (!metric) continue;
    for (const v of (await metric.get()).values) total += v.value;
  }
  return total;
}
