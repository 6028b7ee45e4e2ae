/**
 * The measurements the convergence benchmark makes on any ReplicaSystem.
 * Every figure comes with the load of the process while it was taken
 * (all nodes share one event loop: docs/sim.md).
 */

import { LoadMonitor, type LoadSample } from '../../sim/harness/load-monitor.js';
import type { Prng } from '../../sim/net/prng.js';
import { type Distribution, distribution, round, sleep, waitUntil } from '../lib/stats.js';
import type { ReplicaSystem } from './systems.js';

export interface WriteLatency {
  writes: number;
  /** Write → applied on every node, ms. */
  latencyMs: Distribution;
  /** All latencies, ms (for the CDF). */
  samples: number[];
  /** Shortest path in the live connection graph from the writer to its farthest node, ms (jitter and loss excluded). */
  lowerBoundMs: Distribution;
  /** Writes that had not reached every node at the deadline. */
  timeouts: number;
  /** Yjs update size of one write, bytes (mean). */
  updateBytes: number;
  /**
   * Bytes on the wire per write summed over the cluster, background traffic
   * (heartbeats, gossip, periodic syncs) subtracted; null when the writes
   * added less than 10% to the background (the difference is noise).
   */
  bytesPerWrite: number | null;
  /** Same, background included (what the links carried while the writes ran). */
  grossBytesPerWrite: number;
  /** bytesPerWrite / updateBytes (null with bytesPerWrite). */
  amplification: number | null;
  /** Deliveries of a write a node already had, per node per write. */
  duplicatesPerAgentPerWrite: number;
  load: LoadSample;
}

export interface WriteOptions {
  writes: number;
  /** Gap between two writes, ms (writes overlap when it is shorter than their latency). */
  gapMs: number;
  /** How long to wait for the last write to reach every node, ms. */
  deadlineMs: number;
  /** Window of the background-traffic measurement, ms. */
  idleMs: number;
  /** Writes of the separate bytes-on-the-wire burst (default 50). */
  bytesWrites?: number;
  prng: Prng;
}

interface Pending {
  startedAt: number;
  remaining: Set<string>;
}

export async function measureWrites(system: ReplicaSystem, options: WriteOptions): Promise<WriteLatency> {
  const nodes = system.nodes();
  const monitor = new LoadMonitor();
  const duplicatesBefore = system.duplicates();
  monitor.start();
  const run = await timedWrites(
    system,
    nodes,
    options.writes,
    options.gapMs,
    options.deadlineMs,
    options.prng,
    true,
  );
  const load = monitor.lap();
  monitor.stop();
  const duplicates = system.duplicates() - duplicatesBefore;
  const bytes = await measureBytes(system, nodes, options);
  return {
    writes: options.writes,
    latencyMs: distribution(run.latencies),
    samples: run.latencies.map((x) => round(x, 2)),
    lowerBoundMs: distribution(run.bounds),
    timeouts: run.timeouts,
    updateBytes: round(run.updateBytes / options.writes),
    bytesPerWrite: bytes.net,
    grossBytesPerWrite: bytes.gross,
    amplification:
      bytes.net === null ? null : round(bytes.net / Math.max(1, run.updateBytes / options.writes)),
    duplicatesPerAgentPerWrite: round(duplicates / (nodes.length * options.writes), 2),
    load,
  };
}

/**
 * Bytes on the wire per write, in a window of its own: background traffic
 * (heartbeats, gossip, syncs) over an idle window, then a short burst of
 * writes until all applied; the burst's bytes minus the background rate
 * over its duration. Short windows keep the background estimate honest
 * even when a busy loop stretches the latency run.
 */
async function measureBytes(
  system: ReplicaSystem,
  nodes: string[],
  options: WriteOptions,
): Promise<{ net: number | null; gross: number }> {
  const count = Math.min(options.writes, options.bytesWrites ?? 100);
  const idleRate = async () => {
    system.net.resetStats();
    const from = performance.now();
    await sleep(options.idleMs);
    return system.net.stats().totalBytes / (performance.now() - from);
  };
  const before = await idleRate();
  system.net.resetStats();
  const started = performance.now();
  await timedWrites(system, nodes, count, 2, options.deadlineMs, options.prng, false);
  const elapsed = performance.now() - started;
  const gross = system.net.stats().totalBytes;
  // Background measured on both sides of the burst: it drifts (syncs, gossip heartbeats).
  const background = ((before + (await idleRate())) / 2) * elapsed;
  const added = gross - background;
  return {
    net: added < 0.1 * background ? null : Math.round(added / count),
    gross: Math.round(gross / count),
  };
}

interface TimedWrites {
  latencies: number[];
  bounds: number[];
  timeouts: number;
  updateBytes: number;
}

async function timedWrites(
  system: ReplicaSystem,
  nodes: string[],
  writes: number,
  gapMs: number,
  deadlineMs: number,
  prng: Prng,
  withBounds: boolean,
): Promise<TimedWrites> {
  const pending = new Map<string, Pending>();
  const latencies: number[] = [];
  const bounds: number[] = [];
  let updateBytes = 0;
  const off = system.onApplied((node, key, at) => {
    const entry = pending.get(key);
    if (entry === undefined) return;
    entry.remaining.delete(node);
    if (entry.remaining.size === 0) {
      latencies.push(at - entry.startedAt);
      pending.delete(key);
    }
  });
  try {
    for (let i = 0; i < writes; i++) {
      const writer = prng.pick(nodes);
      if (withBounds) bounds.push(Math.max(0, ...system.net.shortestPathLatencyMs(writer).values()));
      const entry: Pending = { startedAt: performance.now(), remaining: new Set(nodes) };
      const write = system.write(writer);
      // The writer applied it inside write(); every other node applies it later, asynchronously.
      entry.remaining.delete(writer);
      if (entry.remaining.size === 0) latencies.push(0);
      else pending.set(write.key, entry);
      updateBytes += write.bytes;
      await sleep(gapMs);
    }
    await waitUntil(() => pending.size === 0, deadlineMs, 20);
  } finally {
    off();
  }
  return { latencies, bounds, timeouts: pending.size, updateBytes };
}

export interface HealResult {
  writesPerSide: number;
  /** Heal → every node holds the same content, ms (null: not within the deadline). */
  healToEqualMs: number | null;
  deadlineMs: number;
  load: LoadSample;
}

/** Halves (by node order) cut apart, `writesPerSide` writes on each side, heal, time until equal. */
export async function measureHeal(
  system: ReplicaSystem,
  writesPerSide: number,
  deadlineMs: number,
  prng: Prng,
): Promise<HealResult> {
  const nodes = system.nodes();
  const all = system.net.nodes();
  const left = nodes.slice(0, Math.ceil(nodes.length / 2));
  const right = all.filter((n) => !left.includes(n));
  system.net.partition([left, right]);
  await sleep(200);
  for (let i = 0; i < writesPerSide; i++) {
    system.write(prng.pick(left));
    system.write(prng.pick(right.filter((n) => nodes.includes(n))));
    if (i % 20 === 19) await sleep(5);
  }
  await sleep(200);
  const monitor = new LoadMonitor();
  monitor.start();
  const healedAt = performance.now();
  system.net.heal();
  await system.reconnect?.();
  const reached = await waitUntil(() => system.converged(), deadlineMs, 20);
  const ms = reached === null ? null : performance.now() - healedAt;
  const load = monitor.lap();
  monitor.stop();
  return { writesPerSide, healToEqualMs: ms === null ? null : Math.round(ms), deadlineMs, load };
}

export interface SustainedResult {
  /** Highest rate tried whose write→all p99 stayed under 1 s (null: not even the first). */
  maxRatePerS: number | null;
  steps: { ratePerS: number; p99Ms: number | null; timeouts: number; cpuPct: number; loopP99Ms: number }[];
}

/** Steps up the write rate while the p99 lag stays under 1 s. */
export async function measureSustained(
  system: ReplicaSystem,
  rates: readonly number[],
  secondsPerStep: number,
  prng: Prng,
): Promise<SustainedResult> {
  const steps: SustainedResult['steps'] = [];
  let best: number | null = null;
  for (const rate of rates) {
    const writes = Math.max(1, Math.round(rate * secondsPerStep));
    const result = await measureRate(system, rate, writes, prng);
    steps.push(result);
    if (result.p99Ms === null || result.p99Ms >= 1000 || result.timeouts > 0) break;
    best = rate;
  }
  return { maxRatePerS: best, steps };
}

async function measureRate(
  system: ReplicaSystem,
  rate: number,
  writes: number,
  prng: Prng,
): Promise<SustainedResult['steps'][number]> {
  const nodes = system.nodes();
  const monitor = new LoadMonitor();
  const pending = new Map<string, Pending>();
  const latencies: number[] = [];
  const off = system.onApplied((node, key, at) => {
    const entry = pending.get(key);
    if (entry === undefined) return;
    entry.remaining.delete(node);
    if (entry.remaining.size === 0) {
      latencies.push(at - entry.startedAt);
      pending.delete(key);
    }
  });
  monitor.start();
  const started = performance.now();
  const interval = 1000 / rate;
  try {
    for (let i = 0; i < writes; i++) {
      const due = started + i * interval;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const writer = prng.pick(nodes);
      const entry: Pending = { startedAt: performance.now(), remaining: new Set(nodes) };
      const { key } = system.write(writer);
      entry.remaining.delete(writer);
      // Arrivals before this line were the writer's own; the others cannot have happened yet.
      pending.set(key, entry);
    }
    await waitUntil(() => pending.size === 0, 5000, 20);
  } finally {
    off();
  }
  const load = monitor.lap();
  monitor.stop();
  const d = distribution(latencies);
  return {
    ratePerS: rate,
    p99Ms: d.p99,
    timeouts: pending.size,
    cpuPct: load.cpuPct,
    loopP99Ms: load.loopP99Ms,
  };
}
