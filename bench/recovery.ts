import { monitorEventLoopDelay } from 'node:perf_hooks';
import { SimCluster } from '../sim/harness/sim-cluster.js';
import { DEFAULT_WORKLOAD, simWorkloadSpec } from '../sim/harness/workload.js';
import { writeReport } from './lib/report.js';
import { round } from './lib/stats.js';

/**
 * `npm run bench -- recovery` (docs/benchmarks.md, "Recovery with many
 * records"): how restart and catch-up grow with the state. Real agents on
 * the simulated network (SimCluster, reconcile loop off), one process:
 *
 * 1. n1 writes `records` workload specs (in transactions of `batch`);
 *    n2 follows (the time until n2's digests equal n1's is reported as
 *    "follow").
 * 2. n2 crashes and restarts on its data dir: `restart` is the time
 *    create + start take (opening lmdb, replaying the log into the Yjs
 *    documents, starting gossip), `restart equal` until its digests equal
 *    n1's again.
 * 3. A new node joins with an empty data dir: `catch-up` is the time until
 *    its digests equal n1's (one full sync of every document).
 *
 * The longest event-loop stall is reported per phase: every agent shares
 * this one loop, so a stall is what every agent of the process suffered.
 */
export interface RecoveryOptions {
  records: number[];
  batch: number;
  latencyMs: number;
  timeoutS: number;
  seed: number;
  log: (line: string) => void;
}

export interface RecoveryPhase {
  /** ms; null when it did not finish within the timeout. */
  ms: number | null;
  /** Longest event-loop delay seen during the phase, ms. */
  maxStallMs: number;
}

export interface RecoveryRow {
  records: number;
  /** Encoded size of the workloads document (Y.encodeStateAsUpdate), bytes. */
  docBytes: number;
  write: RecoveryPhase;
  follow: RecoveryPhase;
  restart: RecoveryPhase;
  restartEqual: RecoveryPhase;
  catchUp: RecoveryPhase;
}

export interface RecoveryReport {
  options: Omit<RecoveryOptions, 'log'>;
  rows: RecoveryRow[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `fn` and reports its duration and the longest loop stall meanwhile. */
async function phase(fn: () => Promise<boolean>): Promise<RecoveryPhase> {
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const began = performance.now();
  const done = await fn();
  const ms = performance.now() - began;
  loop.disable();
  return { ms: done ? Math.round(ms) : null, maxStallMs: round(loop.max / 1e6) };
}

function equalDigests(cluster: SimCluster, a: string, b: string): boolean {
  const x = cluster.agent(a).state.digestsAll();
  const y = cluster.agent(b).state.digestsAll();
  return Object.keys(x).every((doc) => x[doc as keyof typeof x] === y[doc as keyof typeof y]);
}

async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > end) return false;
    await sleep(20);
  }
  return true;
}

export async function runRecovery(options: RecoveryOptions): Promise<RecoveryReport> {
  const rows: RecoveryRow[] = [];
  const timeoutMs = options.timeoutS * 1000;
  for (const records of options.records) {
    options.log(`recovery: ${records} records`);
    const cluster = await SimCluster.start({
      seed: `recovery-${options.seed}-${records}`,
      nodes: 2,
      reconciler: false,
      network: { latencyMs: options.latencyMs, jitterMs: 0 },
    });
    try {
      const writer = cluster.agent('n1');
      const write = await phase(async () => {
        for (let start = 0; start < records; start += options.batch) {
          writer.state.transactLocal('workloads', () => {
            for (let i = start; i < Math.min(records, start + options.batch); i++) {
              writer.workloads.put(simWorkloadSpec(cluster.image, { ...DEFAULT_WORKLOAD, name: `svc-${i}` }));
            }
          });
          // Let gossip and the other agent run between batches, as writes from an API would.
          await sleep(0);
        }
        return true;
      });
      const docBytes = writer.state.encodeDiff('workloads').byteLength;
      const follow = await phase(() => until(() => equalDigests(cluster, 'n1', 'n2'), timeoutMs));
      options.log(`  written in ${write.ms} ms (${docBytes} bytes), n2 equal after ${follow.ms} ms`);
      await cluster.crash('n2');
      const restart = await phase(async () => {
        await cluster.restart('n2');
        return true;
      });
      const restartEqual = await phase(() => until(() => equalDigests(cluster, 'n1', 'n2'), timeoutMs));
      options.log(`  n2 restarted in ${restart.ms} ms, equal ${restartEqual.ms} ms later`);
      let joined = '';
      const catchUp = await phase(async () => {
        joined = await cluster.join();
        return until(() => equalDigests(cluster, 'n1', joined), timeoutMs);
      });
      options.log(`  ${joined} caught up in ${catchUp.ms} ms (longest stall ${catchUp.maxStallMs} ms)`);
      rows.push({ records, docBytes, write, follow, restart, restartEqual, catchUp });
    } finally {
      await cluster.close();
    }
  }
  const { log: _log, ...rest } = options;
  return { options: rest, rows };
}

export function recoveryMarkdown(report: RecoveryReport): string {
  const o = report.options;
  const cell = (p: RecoveryPhase) => `${p.ms === null ? 'timeout' : `${p.ms} ms`} (stall ${p.maxStallMs} ms)`;
  const lines = [
    `# Recovery with many records (one process, simulated network, ${o.latencyMs} ms links, batches of ${o.batch})`,
    '',
    'Each cell: duration (longest event-loop stall during it). Targets (issue 13): restart with 10k records < 2 s,',
    'catch-up < 5 s, no stall > 500 ms.',
    '',
    '| records | workloads doc | write | n2 follows | restart (create + start) | equal after restart | new node catches up |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...report.rows.map(
      (r) =>
        `| ${r.records} | ${(r.docBytes / 1024).toFixed(0)} KB | ${cell(r.write)} | ${cell(r.follow)} | ${cell(r.restart)} | ${cell(r.restartEqual)} | ${cell(r.catchUp)} |`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}

export async function writeRecoveryReport(dir: string, report: RecoveryReport): Promise<void> {
  await writeReport(dir, 'recovery', report, recoveryMarkdown(report));
}
