/**
 * Runs a scenario: starts the cluster, plays the steps at their times,
 * keeps the invariant checkers running throughout, does the final checks
 * and returns the summary (docs/sim.md, "Running").
 */
import type { Logger } from 'pino';
import { sleep } from '../../src/util/sleep.js';
import { type Detection, DetectionWatch } from '../harness/detection-watch.js';
import { awaitConvergence, ConvergenceLog } from '../harness/invariants/convergence.js';
import { type Evaluation, LivenessChecker, type Recovery } from '../harness/invariants/liveness.js';
import { SafetyChecker } from '../harness/invariants/safety.js';
import { StateMoveChecker } from '../harness/invariants/state-moves.js';
import type { InvariantName, InvariantResult } from '../harness/invariants/types.js';
import { checkWrites } from '../harness/invariants/writes.js';
import { describeLoad, LoadMonitor, type LoadSample } from '../harness/load-monitor.js';
import type { RunEvent } from '../harness/running-registry.js';
import { compactNames, SimCluster } from '../harness/sim-cluster.js';
import type { WriterOutcome } from './background-writes.js';
import { awaitHolders, executeStep, formatMs, StepError } from './execute-step.js';
import type { Scenario } from './load.js';
import type { SelectorContext } from './selectors.js';
import { Timeline, type Writer } from './timeline.js';

export { StepError } from './execute-step.js';

export interface RunOptions {
  /** Timeline and summary (default: process.stdout). */
  out?: Writer;
  /** Progress (default: process.stderr). */
  err?: Writer;
  /** Rewrite one progress line (a terminal) or print one every few seconds. Default: stderr is a TTY. */
  tty?: boolean;
  /** false: no progress output at all. */
  progress?: boolean;
  logger?: Logger;
  /** Working directory for the agents' data (default: a temp dir, removed afterwards). */
  root?: string;
  /** Called with the cluster once it runs (tests use it to inject runner faults). */
  onCluster?: (cluster: SimCluster) => void;
}

export interface RunSummary {
  scenario: string;
  ok: boolean;
  invariants: Partial<Record<InvariantName, InvariantResult>>;
  metrics: RunMetrics;
}

export interface RunMetrics {
  wallMs: number;
  nodes: { total: number; runningAtEnd: number };
  startupMs: number;
  /** RSS growth while the agents started, divided by their number. */
  memoryPerAgentMb: number;
  writes: { acked: number; skipped: number };
  finalConvergenceMs: number | null;
  /** After each disruption: how long until every placeable workload ran. */
  recoveries: { event: string; ms: number | null }[];
  /** Per workload, the longest time it was placeable but not running (ms), longest first. */
  longestOutages: { workload: string; ms: number }[];
  /** With SWIM: after each crash, how long until some agent suspected it and until every running agent held it dead. */
  detections: Detection[];
  /** Unplanned moves of persistent workloads and the writes they lost (restored from an older checkpoint). */
  takeovers: { workload: string; from: string; to: string; previousEnd: string; lostWrites: number }[];
  /** kills: died with their node; exits: died on their own and were restarted by their runner. */
  processes: { starts: number; stops: number; kills: number; exits: number };
  network: { bytes: number; connectionsOpened: number; dialsRefused: number };
  load: LoadSample;
}

const PROGRESS_TTY_MS = 250;
const PROGRESS_PLAIN_MS = 5000;

export async function runScenario(scenario: Scenario, options: RunOptions = {}): Promise<RunSummary> {
  const out = options.out ?? ((text: string) => void process.stdout.write(text));
  const err = options.err ?? ((text: string) => void process.stderr.write(text));
  const tty = options.tty ?? process.stderr.isTTY === true;
  let t0 = performance.now();
  const timeline = new Timeline(() => t0, out, err, tty);
  const expected = new Set(scenario.expect.invariants);
  const load = new LoadMonitor();
  load.start();

  timeline.raw(
    `scenario ${scenario.name}: ${scenario.nodes} agents, seed ${JSON.stringify(scenario.seed)}, ${scenario.steps.length} steps`,
  );
  if (scenario.description) timeline.raw(`  ${scenario.description.trim().replace(/\s*\n\s*/g, ' ')}`);
  const rssBefore = process.memoryUsage().rss;
  const startedAt = performance.now();
  const cluster = await SimCluster.start({
    seed: scenario.seed,
    nodes: scenario.nodes,
    timing: scenario.timing,
    network: scenario.network,
    bootstrapPeers: scenario.bootstrapPeers,
    runner: scenario.runner,
    capacity: scenario.capacity,
    ...(scenario.witnesses !== undefined ? { witnesses: scenario.witnesses } : {}),
    ...(scenario.clockRates !== undefined ? { clockRates: scenario.clockRates } : {}),
    ...(scenario.membership !== undefined ? { membership: scenario.membership } : {}),
    ...(scenario.imageOn !== undefined ? { imageOn: scenario.imageOn } : {}),
    logger: options.logger,
    root: options.root,
  });
  const startupMs = performance.now() - startedAt;
  const memoryPerAgentMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024 / scenario.nodes;
  t0 = performance.now();
  timeline.line(
    `started ${scenario.nodes} agents in ${Math.round(startupMs)} ms (~${memoryPerAgentMb.toFixed(1)} MB RSS per agent; ${describeLoad(load.lap())})`,
  );
  options.onCluster?.(cluster);

  const describeTime = (at: number) => timeline.stamp(at);
  const safety = new SafetyChecker(cluster.registry, describeTime);
  const stateMoves = new StateMoveChecker(cluster.registry, describeTime);
  const convergence = new ConvergenceLog();
  const detection =
    scenario.membership === undefined
      ? null
      : new DetectionWatch(cluster, {
          onDetected: (d) =>
            timeline.line(
              d.deadEverywhereMs === null
                ? `swim: ${d.node} not dead in every view (${d.firstSuspectMs === null ? 'never suspected' : `first suspected after ${d.firstSuspectMs} ms`})`
                : `swim: ${d.node} dead in every running agent's view ${d.deadEverywhereMs} ms after its crash (first suspected after ${d.firstSuspectMs} ms)`,
            ),
        });
  detection?.start();
  const liveness = new LivenessChecker(cluster, {
    boundMs: scenario.expect.livenessBoundMs,
    describeTime,
    onRecovery: (r: Recovery) =>
      timeline.line(
        `every placeable workload running ${formatMs(r.ms)} after ${r.event} (${describeLoad(load.lap())})`,
      ),
    onCheck: (label: string, e: Evaluation) => {
      if (e.ok === false)
        timeline.line(`LIVENESS VIOLATION at ${label}: ${e.problems.slice(0, 3).join('; ')}`);
    },
  });
  const processCounts = { starts: 0, stops: 0, kills: 0, exits: 0 };
  const lastEnd = new Map<string, RunEvent>();
  const unsubscribeRuns = cluster.registry.subscribe((event) => {
    countProcess(processCounts, event);
    timeline.line(describeRun(event, cluster, lastEnd), event.at);
    if (event.kind !== 'start') lastEnd.set(event.workload, event);
    if (event.kind === 'start' && event.exclusive && cluster.registry.runningOn(event.workload).length > 1) {
      timeline.line(
        `SAFETY VIOLATION: ${event.workload} runs on ${cluster.registry
          .runningOn(event.workload)
          .map((p) => p.node)
          .join(' and ')}`,
        event.at,
      );
    }
  });

  const prng = cluster.net.prng.fork('scenario');
  const writers: Promise<WriterOutcome>[] = [];
  const cancels: (() => void)[] = [];
  let currentStep = 0;
  const progress =
    options.progress === false
      ? undefined
      : setInterval(
          () => {
            const acked = cluster.ackedWrites().length;
            const sample = load.overall();
            timeline.progress(
              `${timeline.stamp()} step ${Math.min(currentStep, scenario.steps.length)}/${scenario.steps.length} | running ${cluster.live().length}/${cluster.names().length} | writes ${acked} | loop p99 ${Math.round(sample.loopP99Ms)} ms cpu ${Math.round(sample.cpuPct)}% rss ${Math.round(sample.rssMb)} MB`,
            );
          },
          tty ? PROGRESS_TTY_MS : PROGRESS_PLAIN_MS,
        );
  progress?.unref();

  let finalConvergenceMs: number | null = null;
  const results: Partial<Record<InvariantName, InvariantResult>> = {};
  let writerTotals = { acked: 0, skipped: 0 };
  try {
    let previousEnd = t0;
    for (const [index, step] of scenario.steps.entries()) {
      currentStep = index + 1;
      const due = (step.at.relative ? previousEnd : t0) + step.at.ms;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const late = performance.now() - due;
      const stepFailed = (err: unknown) =>
        new StepError(
          `step ${index + 1} (at ${step.at.relative ? '+' : ''}${step.at.ms} ms, ${step.action}) failed: ${(err as Error).message}`,
          { cause: err },
        );
      const holderWait = await awaitHolders(step, cluster).catch((err: unknown) => {
        throw stepFailed(err);
      });
      if (holderWait !== null) timeline.line(holderWait);
      const ctx: SelectorContext = {
        all: cluster.names(),
        live: cluster.live(),
        down: cluster.down(),
        holders: (workload) => cluster.registry.runningOn(workload).map((p) => p.node),
        prng,
        taken: new Set(),
      };
      let text: string;
      try {
        text = await executeStep(step, index, {
          cluster,
          ctx,
          timeline,
          prng,
          convergence,
          liveness,
          writers,
          cancels,
          load,
        });
      } catch (err) {
        throw stepFailed(err);
      }
      timeline.line(`${step.action} ${text}${late > 100 ? ` (started ${Math.round(late)} ms late)` : ''}`);
      previousEnd = performance.now();
    }
    currentStep = scenario.steps.length + 1;
    const outcomes = await Promise.all(writers);
    writerTotals = outcomes.reduce(
      (sum, o) => ({ acked: sum.acked + o.acked, skipped: sum.skipped + o.skipped }),
      writerTotals,
    );
    if (writers.length > 0)
      timeline.line(
        `writers done: ${writerTotals.acked} acknowledged, ${writerTotals.skipped} skipped (no running node)`,
      );
    const final = await awaitConvergence(cluster, scenario.expect.convergeWithinMs);
    convergence.record('final', final, scenario.expect.convergeWithinMs);
    finalConvergenceMs = final.ok ? final.ms : null;
    timeline.line(
      final.ok
        ? `converged: ${cluster.live().length} running agents equal after ${formatMs(final.ms)} (${describeLoad(load.lap())})`
        : `NOT converged within ${formatMs(scenario.expect.convergeWithinMs)}: digest groups ${final.groups.map((g) => `[${compactNames(g)}]`).join(' ')}, ${final.crossLinks} connections between them`,
    );
    if (expected.has('liveness')) await liveness.finalCheck();
    if (expected.has('convergence')) results.convergence = convergence.result();
    if (expected.has('writes')) results.writes = checkWrites(cluster);
    if (expected.has('safety')) results.safety = safety.result();
    if (expected.has('liveness')) results.liveness = liveness.result();
    if (expected.has('state')) results.state = stateMoves.result();
  } catch (err) {
    // Writers first: a writer that outlives the cluster writes to closed agents.
    for (const cancel of cancels) cancel();
    load.stop();
    await cluster.close();
    throw err;
  } finally {
    for (const cancel of cancels) cancel();
    if (progress) clearInterval(progress);
    timeline.clearProgress();
    liveness.stop();
    detection?.stop();
    safety.stop();
    stateMoves.stop();
    unsubscribeRuns();
  }
  const wallMs = performance.now() - t0;
  const stats = cluster.net.stats();
  const metrics: RunMetrics = {
    wallMs: Math.round(wallMs),
    nodes: { total: cluster.names().length, runningAtEnd: cluster.live().length },
    startupMs: Math.round(startupMs),
    memoryPerAgentMb: round1(memoryPerAgentMb),
    writes: { acked: cluster.ackedWrites().length, skipped: writerTotals.skipped },
    finalConvergenceMs: finalConvergenceMs === null ? null : Math.round(finalConvergenceMs),
    recoveries: liveness
      .recoveryTimes()
      .map((r) => ({ event: r.event, ms: r.ms === null ? null : Math.round(r.ms) })),
    longestOutages: [...liveness.longestOutages()]
      .sort((a, b) => b[1] - a[1])
      .map(([workload, ms]) => ({ workload, ms: Math.round(ms) })),
    detections: [...(detection?.detections() ?? [])],
    takeovers: stateMoves.takeovers().map((t) => ({
      workload: t.workload,
      from: t.from,
      to: t.to,
      previousEnd: t.previousEnd,
      lostWrites: t.lostWrites,
    })),
    processes: processCounts,
    network: {
      bytes: stats.totalBytes,
      connectionsOpened: stats.connections.opened,
      dialsRefused: stats.connections.dialsRefused,
    },
    load: load.overall(),
  };
  load.stop();
  await cluster.close();
  for (const res of Object.values(results)) {
    timeline.raw(`${res.ok ? 'ok  ' : 'FAIL'} ${res.name}: ${res.summary}`);
    for (const violation of res.violations) timeline.raw(`       ${violation}`);
  }
  timeline.raw(`load over the run: ${describeLoad(metrics.load)}, rss ${Math.round(metrics.load.rssMb)} MB`);
  const ok = Object.values(results).every((r) => r.ok);
  return { scenario: scenario.name, ok, invariants: results, metrics };
}

function countProcess(counts: RunMetrics['processes'], event: RunEvent): void {
  if (event.kind === 'start') counts.starts++;
  else if (event.kind === 'stop') counts.stops++;
  else if (event.kind === 'exit') counts.exits++;
  else counts.kills++;
}

function describeRun(event: RunEvent, cluster: SimCluster, lastEnd: Map<string, RunEvent>): string {
  if (event.kind === 'start') {
    const others = cluster.registry
      .runningOn(event.workload)
      .filter((p) => p.node !== event.node)
      .map((p) => p.node);
    const previous = lastEnd.get(event.workload);
    const from =
      previous !== undefined && previous.node !== event.node
        ? `; ${previous.node}'s process ended at ${previous.counter}${previous.counter > event.counter ? `: ${previous.counter - event.counter} writes lost` : ''}`
        : '';
    return `${event.workload}: process started on ${event.node} (state counter ${event.counter}${from})${others.length > 0 ? `; ALSO RUNNING on ${others.join(', ')}` : ''}`;
  }
  if (event.kind === 'stop') {
    return `${event.workload}: process stopped on ${event.node} at counter ${event.counter} (${event.reason ?? 'no reason'})`;
  }
  if (event.kind === 'exit') {
    return `${event.workload}: process on ${event.node} died at counter ${event.counter} (${event.reason ?? 'no reason'})`;
  }
  return `${event.workload}: process killed with ${event.node} at counter ${event.counter}`;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
