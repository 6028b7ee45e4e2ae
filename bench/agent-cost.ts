import { monitorEventLoopDelay } from 'node:perf_hooks';
import { SimCluster } from '../sim/harness/sim-cluster.js';
import { writeReport } from './lib/report.js';
import { round } from './lib/stats.js';

/**
 * `npm run bench -- agent-cost` (docs/benchmarks.md, "Per-agent cost"):
 * real agents in one process on the simulated network (SimCluster, no
 * reconciler), 1 s heartbeats, for each cluster size and liveness source:
 * what one agent sends per second and what the process's CPU and event
 * loop do, over a window of idle and a window of writes at a fixed rate.
 *
 * Windows, not whole runs: start-up (every agent syncing every document) is
 * left out by a warm-up, and each figure is the difference of the network
 * counters between the window's ends.
 *
 * The CPU is this process's, all agents together, on one event loop: when
 * the loop saturates (p99 in seconds) timers run late, fewer heartbeats go
 * out, and the bytes figure understates what the protocol would send. The
 * report says so per row.
 */
export interface AgentCostOptions {
  nodes: number[];
  liveness: ('acked-heartbeats' | 'swim')[];
  warmupS: number;
  windowS: number;
  writesPerS: number;
  latencyMs: number;
  seed: number;
  log: (line: string) => void;
}

export interface AgentCostWindow {
  /** Network bytes (both directions, framing included) per agent per second. */
  bytesPerAgentS: number;
  /** This process's CPU (user + system) per agent, percent of one core. */
  cpuPctPerAgent: number;
  loopP99Ms: number;
  /** Connections opened in the window, per agent per minute (SWIM probes members it has no connection to). */
  connectionsPerAgentMin: number;
}

export interface AgentCostRow {
  nodes: number;
  liveness: 'acked-heartbeats' | 'swim';
  idle: AgentCostWindow;
  writes: AgentCostWindow;
  /** The event loop's p99 above this: the figures measure the process more than the protocol. */
  saturated: boolean;
}

export interface AgentCostReport {
  options: Omit<AgentCostOptions, 'log'>;
  rows: AgentCostRow[];
}

const SATURATED_LOOP_P99_MS = 200;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runAgentCost(options: AgentCostOptions): Promise<AgentCostReport> {
  const rows: AgentCostRow[] = [];
  for (const nodes of options.nodes) {
    for (const liveness of options.liveness) {
      options.log(`agent-cost: ${nodes} agents, liveness ${liveness}`);
      const cluster = await SimCluster.start({
        seed: `agent-cost-${options.seed}-${nodes}`,
        nodes,
        reconciler: false,
        timing: { heartbeatMs: 1000, suspectAfterMs: 3000, deadAfterMs: 6000 },
        network: { latencyMs: options.latencyMs, jitterMs: options.latencyMs / 2 },
        ...(liveness === 'swim' ? { membership: { liveness } } : {}),
      });
      try {
        await sleep(options.warmupS * 1000);
        const idle = await measure(cluster, nodes, options.windowS, () => undefined);
        let next = 0;
        const live = cluster.live();
        const writes = await measure(
          cluster,
          nodes,
          options.windowS,
          () => {
            cluster.write(live[next++ % live.length] as string);
          },
          options.writesPerS,
        );
        const row: AgentCostRow = {
          nodes,
          liveness,
          idle,
          writes,
          saturated: Math.max(idle.loopP99Ms, writes.loopP99Ms) > SATURATED_LOOP_P99_MS,
        };
        options.log(
          `  idle ${row.idle.bytesPerAgentS} B/s, ${row.idle.cpuPctPerAgent}% cpu, loop p99 ${row.idle.loopP99Ms} ms; ` +
            `writes ${row.writes.bytesPerAgentS} B/s, ${row.writes.cpuPctPerAgent}% cpu, loop p99 ${row.writes.loopP99Ms} ms`,
        );
        rows.push(row);
      } finally {
        await cluster.close();
      }
    }
  }
  const { log: _log, ...rest } = options;
  return { options: rest, rows };
}

/** One window: counters at both ends; `tick` runs `perS` times a second (0: never). */
async function measure(
  cluster: SimCluster,
  nodes: number,
  windowS: number,
  tick: () => void,
  perS = 0,
): Promise<AgentCostWindow> {
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const before = cluster.net.stats();
  const cpuBefore = process.cpuUsage();
  const startedAt = performance.now();
  const timer = perS > 0 ? setInterval(tick, 1000 / perS) : null;
  await sleep(windowS * 1000);
  if (timer) clearInterval(timer);
  const elapsedS = (performance.now() - startedAt) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  loop.disable();
  const after = cluster.net.stats();
  const bytes = after.totalBytes - before.totalBytes;
  const opened = after.connections.opened - before.connections.opened;
  return {
    connectionsPerAgentMin: round((opened / elapsedS / nodes) * 60),
    bytesPerAgentS: Math.round(bytes / elapsedS / nodes),
    cpuPctPerAgent: round((((cpu.user + cpu.system) / 1000 / (elapsedS * 1000)) * 100) / nodes, 2),
    loopP99Ms: round(loop.percentile(99) / 1e6),
  };
}

export function agentCostMarkdown(report: AgentCostReport): string {
  const o = report.options;
  const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB/s`;
  const lines = [
    `# Per-agent cost (one process, simulated network, ${o.latencyMs} ms links, 1 s heartbeats; ${o.warmupS} s warm-up, ${o.windowS} s windows, ${o.writesPerS} writes/s)`,
    '',
    'Bytes are everything the simulated links carried (noise, yamux, libp2p framing included), per agent. CPU is this',
    "process's, per agent, in percent of one core. A row marked saturated had event-loop p99 above 200 ms: timers ran",
    'late, so its figures describe this machine more than the protocol. New connections: opened during the idle',
    'window, per agent per minute.',
    '',
    '| agents | liveness | idle traffic | idle CPU | idle loop p99 | idle new connections | writes traffic | writes CPU | writes loop p99 | |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of report.rows) {
    lines.push(
      `| ${r.nodes} | ${r.liveness} | ${kb(r.idle.bytesPerAgentS)} | ${r.idle.cpuPctPerAgent} % | ${r.idle.loopP99Ms} ms | ${r.idle.connectionsPerAgentMin}/min | ${kb(r.writes.bytesPerAgentS)} | ${r.writes.cpuPctPerAgent} % | ${r.writes.loopP99Ms} ms | ${r.saturated ? 'saturated' : ''} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

export function writeAgentCostReport(
  report: AgentCostReport,
  dir: string,
): Promise<{ json: string; markdown: string }> {
  return writeReport(dir, 'agent-cost', report, agentCostMarkdown(report));
}
