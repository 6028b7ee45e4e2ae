/**
 * The measurements the convergence benchmark makes on any ReplicaSystem.
 * Every figure comes with the load of the process while it was taken
 * (all nodes share one event loop: DESIGN §9).
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
  /** Bytes on the wire per write summed over the cluster, background traffic (heartbeats) subtracted. */
  bytesPerWrite: number;
  /** Same, background included (what the links carried while the writes ran). */
  grossBytesPerWrite: number;
  /** bytesPerWrite / updateBytes. */
  amplification: number;
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
  /** How long to measure background traffic before the writes, ms. */
  idleMs: number;
  prng: Prng;
}

interface Pending {
  startedAt: number;
  remaining: Set<string>;
}

export async function measureWrites(system: ReplicaSystem, options: WriteOptions): Promise<WriteLatency> {
  const nodes = system.nodes();
  const monitor = new LoadMonitor();
  // Background traffic first, over a window of its own.
  system.net.resetStats();
  await sleep(options.idleMs);
  const idleBytesPerMs = system.net.stats().totalBytes / options.idleMs;

  const pending = new Map<string, Pending>();
  const latencies: number[] = [];
  const bounds: number[] = [];
  const off = system.onApplied((node, key, at) => {
    const entry = pending.get(key);
    if (entry === undefined) return;
    entry.remaining.delete(node);
    if (entry.remaining.size === 0) {
      latencies.push(at - entry.startedAt);
      pending.delete(key);
    }
  });
  const duplicatesBefore = system.duplicates();
  let updateBytes = 0;
  monitor.start();
  system.net.resetStats();
  const started = performance.now();
  try {
    for (let i = 0; i < options.writes; i++) {
      const writer = options.prng.pick(nodes);
      const farthest = Math.max(0, ...system.net.shortestPathLatencyMs(writer).values());
      bounds.push(farthest);
      const entry: Pending = { startedAt: performance.now(), remaining: new Set(nodes) };
      const write = system.write(writer);
      // The writer applied it inside write(); every other node applies it later, asynchronously.
      entry.remaining.delete(writer);
      if (entry.remaining.size === 0) latencies.push(0);
      else pending.set(write.key, entry);
      updateBytes += write.bytes;
      await sleep(options.gapMs);
    }
    await waitUntil(() => pending.size === 0, options.deadlineMs, 20);
  } finally {
    off();
  }
  const elapsed = performance.now() - started;
  const load = monitor.lap();
  monitor.stop();
  const gross = system.net.stats().totalBytes;
  const net = Math.max(0, gross - idleBytesPerMs * elapsed);
  const meanUpdate = updateBytes / options.writes;
  const bytesPerWrite = net / options.writes;
  return {
    writes: options.writes,
    latencyMs: distribution(latencies),
    samples: latencies.map((x) => round(x, 2)),
    lowerBoundMs: distribution(bounds),
    timeouts: pending.size,
    updateBytes: round(meanUpdate),
    bytesPerWrite: Math.round(bytesPerWrite),
    grossBytesPerWrite: Math.round(gross / options.writes),
    amplification: round(bytesPerWrite / Math.max(1, meanUpdate)),
    duplicatesPerAgentPerWrite: round(
      (system.duplicates() - duplicatesBefore) / (nodes.length * options.writes),
      2,
    ),
    load,
  };
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
