/**
 * `bench takeover`: time from the death of a persistent workload's holder
 * (node crash: no release, no snapshot) until the workload runs on another
 * node, over repeated runs, with silo's default timings (config defaults:
 * heartbeat 1 s, dead_after 10 s, fence_after 6 s, claim_settle 3 s,
 * fence_slack 2 s). Placed beside Kubernetes (≈340 s: 40 s node-monitor
 * grace + 300 s default eviction toleration) and Nomad (≈20 s for a lost
 * client's allocations to be rescheduled with default heartbeat TTLs).
 */

import os from 'node:os';
import { LoadMonitor, type LoadSample } from '../sim/harness/load-monitor.js';
import type { RunStart } from '../sim/harness/running-registry.js';
import { SimCluster, type SimTiming } from '../sim/harness/sim-cluster.js';
import { DEFAULT_WORKLOAD } from '../sim/harness/workload.js';
import { holdMs } from '../src/ownership/index.js';
import { writeReport } from './lib/report.js';
import { type Distribution, distribution, round, sleep, waitUntil } from './lib/stats.js';

export interface TakeoverOptions {
  runs: number;
  nodes: number;
  seed: number;
  stopTimeoutMs: number;
  latencyMs: number;
  log: (line: string) => void;
}

/** silo's configuration defaults (src/config/schema.ts and the reconciler's own). */
export const DEFAULT_AGENT_TIMING: Partial<SimTiming> = {
  heartbeatMs: 1000,
  suspectAfterMs: 3000,
  deadAfterMs: 10_000,
  syncGraceMs: 2000,
  syncIntervalMs: 10_000,
  gossipHeartbeatMs: 1000,
  fenceAfterMs: 6000,
  claimSettleMs: 3000,
  fenceSlackMs: 2000,
  clockDriftPpm: 1000,
  tickMs: 1000,
  debounceMs: 50,
  checkpointIntervalMs: 30_000,
  handoffMs: 3000,
  replicas: 1,
  maxParallel: 1,
};

export interface TakeoverReport {
  bench: 'takeover';
  machine: { cpus: number; memoryGiB: number; node: string; loadavg1m: number };
  options: Omit<TakeoverOptions, 'log'>;
  timing: Partial<SimTiming>;
  /** max(dead_after, the witnesses' hold of the old lease): the floor the rules impose, ms. */
  expectedFloorMs: number;
  takeoverMs: Distribution;
  samples: number[];
  failures: number;
  load: LoadSample;
  comparison: { system: string; seconds: number; source: string }[];
}

export async function runTakeover(options: TakeoverOptions): Promise<TakeoverReport> {
  const timing = DEFAULT_AGENT_TIMING;
  // The new holder is chosen once the old one has been silent for dead_after
  // (placement), and the witnesses grant it the lease once the old holder's
  // has expired: its hold is fence_after + stop_timeout + fence_slack,
  // stretched by the drift bound, from its last renewal (docs/placement.md,
  // "Witness leases"). The later of the two is the floor.
  const hold = holdMs(
    (timing.fenceAfterMs as number) + options.stopTimeoutMs + (timing.fenceSlackMs as number),
    timing.clockDriftPpm as number,
  );
  const floor = Math.max(timing.deadAfterMs as number, hold);
  const cluster = await SimCluster.start({
    seed: options.seed,
    nodes: options.nodes,
    timing,
    network: { latencyMs: options.latencyMs, jitterMs: options.latencyMs / 2 },
  });
  const monitor = new LoadMonitor();
  monitor.start();
  const samples: number[] = [];
  let failures = 0;
  try {
    cluster.apply({ ...DEFAULT_WORKLOAD, name: 'db', stopTimeoutMs: options.stopTimeoutMs });
    for (let run = 1; run <= options.runs; run++) {
      const placed = await waitUntil(() => holderOf(cluster) !== null, 120_000, 50);
      if (placed === null) throw new Error('the workload was never placed');
      // Let the new holder settle and the restarted node be seen alive by everyone.
      await waitUntil(() => everyoneAlive(cluster), 60_000, 100);
      await sleep(2000);
      const holder = holderOf(cluster) as string;
      const crashedAt = performance.now();
      let startedAt: number | null = null;
      const off = cluster.registry.subscribe((event) => {
        if (event.kind === 'start' && (event as RunStart).node !== holder && startedAt === null)
          startedAt = event.at;
      });
      await cluster.crash(holder);
      const ok = await waitUntil(() => startedAt !== null, floor + 60_000, 20);
      off();
      if (ok === null || startedAt === null) {
        failures++;
        options.log(
          `run ${run}: holder ${holder} crashed, no takeover within ${Math.round((floor + 60_000) / 1000)} s`,
        );
      } else {
        const ms = (startedAt as number) - crashedAt;
        samples.push(round(ms));
        options.log(
          `run ${run}: holder ${holder} crashed → running elsewhere after ${(ms / 1000).toFixed(2)} s`,
        );
      }
      await cluster.restart(holder);
    }
  } finally {
    await cluster.close();
  }
  const load = monitor.overall();
  monitor.stop();
  return {
    bench: 'takeover',
    machine: {
      cpus: os.cpus().length,
      memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
      node: process.version,
      loadavg1m: round(os.loadavg()[0] ?? 0, 2),
    },
    options: {
      runs: options.runs,
      nodes: options.nodes,
      seed: options.seed,
      stopTimeoutMs: options.stopTimeoutMs,
      latencyMs: options.latencyMs,
    },
    timing,
    expectedFloorMs: floor,
    takeoverMs: distribution(samples),
    samples,
    failures,
    load,
    comparison: [
      {
        system: 'Kubernetes (defaults)',
        seconds: 340,
        source: 'node-monitor-grace-period 40 s + default not-ready toleration 300 s',
      },
      {
        system: 'Nomad (defaults)',
        seconds: 20,
        source: 'client heartbeat TTL missed, allocations rescheduled',
      },
    ],
  };
}

function holderOf(cluster: SimCluster): string | null {
  const running = cluster.registry.runningOn('db').filter((p) => p.ready && cluster.isUp(p.node));
  return running.length === 1 ? (running[0]?.node as string) : null;
}

function everyoneAlive(cluster: SimCluster): boolean {
  const live = cluster.live();
  return cluster
    .agents()
    .every((agent) => live.every((n) => n === agent.nodeId || agent.gossip.detector.state(n) === 'alive'));
}

export function writeTakeoverReport(
  report: TakeoverReport,
  dir: string,
): Promise<{ json: string; markdown: string }> {
  return writeReport(dir, 'takeover', report, takeoverMarkdown(report));
}

export function takeoverMarkdown(report: TakeoverReport): string {
  const t = report.takeoverMs;
  const s = (ms: number | null) => (ms === null ? '–' : `${(ms / 1000).toFixed(1)} s`);
  const lines = [
    `Holder killed → workload running on another node, ${report.options.nodes} agents, ${report.samples.length} runs (${report.failures} without takeover), stop_timeout ${report.options.stopTimeoutMs / 1000} s, silo's default timings (floor: max(dead_after, witness hold of the dead holder's lease) = ${s(report.expectedFloorMs)}); loop p99 ${Math.round(report.load.loopP99Ms)} ms, CPU ${Math.round(report.load.cpuPct)}%.`,
    '',
    '| system | p50 | p99 | max |',
    '|---|---:|---:|---:|',
    `| silo | ${s(t.p50)} | ${s(t.p99)} | ${s(t.max)} |`,
    ...report.comparison.map((c) => `| ${c.system} | ${c.seconds} s | | (${c.source}) |`),
  ];
  return `${lines.join('\n')}\n`;
}
