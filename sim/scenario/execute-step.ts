/**
 * One scenario step against a running SimCluster (docs/sim.md, "Steps"):
 * runScenario (run-scenario.ts) plays them at their times.
 */

import { sleep } from '../../src/util/sleep.js';
import { awaitConvergence, type ConvergenceLog } from '../harness/invariants/convergence.js';
import type { LivenessChecker } from '../harness/invariants/liveness.js';
import { describeLoad, type LoadMonitor } from '../harness/load-monitor.js';
import { compactNames, type SimCluster } from '../harness/sim-cluster.js';
import type { SimWorkloadDraft } from '../harness/workload.js';
import { startWriter, type WriterOutcome } from './background-writes.js';
import type { Step, WorkloadInput } from './schema.js';
import { resolveSelector, type SelectorContext } from './selectors.js';
import type { Timeline } from './timeline.js';

/** A step could not be carried out (e.g. `holder:db` when nothing runs db): the run is void. */
export class StepError extends Error {
  override name = 'StepError';
}

export interface StepContext {
  cluster: SimCluster;
  ctx: SelectorContext;
  timeline: Timeline;
  prng: SelectorContext['prng'];
  convergence: ConvergenceLog;
  liveness: LivenessChecker;
  writers: Promise<WriterOutcome>[];
  cancels: (() => void)[];
  load: LoadMonitor;
}

/**
 * How long a step naming `holder:<workload>` waits for the workload to run
 * somewhere. A workload can be between copies when its step comes due (a
 * move, or a holder that lost its lease and is taking it again); the step
 * means "whoever runs it", so it waits for one rather than voiding the run.
 */
const HOLDER_WAIT_MS = 60_000;

/**
 * Waits until every workload a step names as `holder:<workload>` runs
 * somewhere; returns a timeline line when it had to wait, null otherwise.
 * Throws when one still runs nowhere after HOLDER_WAIT_MS.
 */
export async function awaitHolders(step: Step, cluster: SimCluster): Promise<string | null> {
  const named = new Set<string>();
  for (const match of JSON.stringify(step).matchAll(/"holder:([a-z0-9][a-z0-9_-]*)"/g))
    named.add(match[1] as string);
  const missing = () => [...named].filter((w) => cluster.registry.runningOn(w).length === 0);
  if (missing().length === 0) return null;
  const started = performance.now();
  const waitedFor = missing();
  while (missing().length > 0) {
    if (performance.now() - started > HOLDER_WAIT_MS)
      throw new Error(
        `nobody runs ${missing().join(', ')} after waiting ${formatMs(HOLDER_WAIT_MS)} for a holder`,
      );
    await sleep(50);
  }
  return `waited ${formatMs(performance.now() - started)} for a holder of ${waitedFor.join(', ')} (it ran nowhere when the step came due)`;
}

/** Does one step; returns the text of its timeline line. */
export async function executeStep(step: Step, index: number, s: StepContext): Promise<string> {
  const { cluster, ctx } = s;
  const pick = (selector: string | string[]) => resolveSelector(selector, ctx);
  switch (step.action) {
    case 'partition': {
      // Groups naming nodes go first, so that "rest" is everything they left.
      const isRest = (g: string | string[]) => (typeof g === 'string' ? g === 'rest' : g.includes('rest'));
      const groups: string[][] = step.groups.map(() => []);
      step.groups.forEach((g, i) => {
        if (!isRest(g)) groups[i] = pick(g);
      });
      step.groups.forEach((g, i) => {
        if (isRest(g)) groups[i] = pick(g);
      });
      cluster.partition(groups, step.mode);
      return groups.map((g) => `[${compactNames(g)}]`).join(' | ');
    }
    case 'heal':
      cluster.heal();
      return 'every partition and cut removed';
    case 'cut': {
      const from = pick(step.from);
      const to = pick(step.to);
      for (const f of from) for (const t of to) if (f !== t) cluster.cut(f, t, step.abort_after);
      return `${compactNames(from)} -/-> ${compactNames(to)}`;
    }
    case 'link': {
      const params = definedLink(step.latency, step.jitter, step.loss);
      if (step.a === undefined || step.b === undefined) {
        cluster.defaultLink(params);
        return `default link: ${JSON.stringify(params)}`;
      }
      const a = pick(step.a);
      const b = pick(step.b);
      for (const x of a) for (const y of b) if (x !== y) cluster.link(x, y, params);
      return `${compactNames(a)} <-> ${compactNames(b)}: ${JSON.stringify(params)}`;
    }
    case 'loss': {
      if (step.nodes === undefined) {
        cluster.defaultLink({ lossPct: step.pct });
        return `${step.pct}% loss on every link`;
      }
      const nodes = pick(step.nodes);
      for (const x of nodes)
        for (const y of cluster.names()) if (x !== y) cluster.link(x, y, { lossPct: step.pct });
      return `${step.pct}% loss on every link of ${compactNames(nodes)}`;
    }
    case 'crash': {
      const nodes = pick(step.nodes);
      await Promise.all(nodes.map((name) => cluster.crash(name)));
      return compactNames(nodes);
    }
    case 'restart': {
      const nodes = pick(step.nodes);
      const options = step.from_copy === undefined ? {} : { fromCopy: step.from_copy };
      await Promise.all(nodes.map((name) => cluster.restart(name, options)));
      const on = step.from_copy === undefined ? '' : ` on copy "${step.from_copy}"`;
      return nodes.length === 0 ? '(nothing down)' : `${compactNames(nodes)}${on}`;
    }
    case 'copy-data': {
      const nodes = pick(step.nodes);
      for (const name of nodes) await cluster.copyData(name, step.name);
      return `${compactNames(nodes)} as "${step.name}"`;
    }
    case 'join': {
      const joined: string[] = [];
      for (let i = 0; i < step.count; i++) joined.push(await cluster.join());
      return compactNames(joined);
    }
    case 'skew': {
      const nodes = pick(step.nodes);
      for (const name of nodes) cluster.skew(name, step.by);
      return `${compactNames(nodes)} by ${step.by >= 0 ? '+' : ''}${step.by} ms`;
    }
    case 'epoch': {
      const nodes = pick(step.nodes).filter((name) => cluster.isUp(name));
      const started = nodes.map((name) => {
        const epoch = cluster.agent(name).state.startEpoch(step.doc);
        return `${name}: ${step.doc} epoch ${epoch.number}/${epoch.id.slice(0, 6)}`;
      });
      return started.length === 0 ? '(no running node)' : started.join(', ');
    }
    case 'write': {
      const made: string[] = [];
      for (let i = 0; i < step.count; i++) {
        const candidates = resolveSelector(step.nodes, { ...ctx, taken: new Set() }).filter((n) =>
          cluster.isUp(n),
        );
        if (candidates.length === 0) throw new Error(`step ${index + 1}: no running node to write on`);
        made.push(cluster.write(s.prng.pick(candidates)).key);
      }
      return `${made.length} write(s)`;
    }
    case 'writes': {
      const nodes = pick(step.nodes);
      const writer = startWriter(cluster, {
        n: step.n,
        rate: step.rate,
        nodes: () => nodes,
        pick: (candidates) => s.prng.pick(candidates),
      });
      s.cancels.push(writer.cancel);
      s.writers.push(writer.done);
      const what = `${step.n} at ${step.rate}/s on ${compactNames(nodes)}`;
      if (!step.wait) return `${what} (in the background)`;
      const outcome = await writer.done;
      return `${what}: ${outcome.acked} acknowledged in ${formatMs(outcome.ms)}`;
    }
    case 'apply': {
      const drafts = workloadDrafts(step.workload, step.count);
      const via = step.via === undefined ? undefined : pick(step.via)[0];
      for (const draft of drafts) cluster.apply(draft, via);
      return drafts.length === 1
        ? `${drafts[0]?.name} (${step.workload.scratch_class}, on_partition ${step.workload.on_partition}, ${step.workload.cpus} cpu)`
        : `${drafts.length} workloads ${drafts[0]?.name}..${drafts.at(-1)?.name}`;
    }
    case 'witnesses': {
      const via = step.via === undefined ? undefined : pick(step.via)[0];
      const version = cluster.setWitnesses(step.set, via);
      return `witness configuration v${version}: ${step.set.join(', ')}`;
    }
    case 'drain': {
      const nodes = pick(step.nodes);
      for (const name of nodes) cluster.drain(name, !step.undrain);
      return `${step.undrain ? 'undrain' : 'drain'} ${compactNames(nodes)}`;
    }
    case 'kill-service': {
      const holders = cluster.registry.runningOn(step.workload).map((p) => p.node);
      const killed = holders.filter((node) => cluster.runner(node)?.crashProcess(step.workload) === true);
      return killed.length > 0
        ? `${step.workload} on ${compactNames(killed)}`
        : `${step.workload}: not running anywhere`;
    }
    case 'wait': {
      if (step.until === 'converged') {
        const outcome = await awaitConvergence(cluster, step.timeout);
        s.convergence.record(`step ${index + 1}`, outcome, step.timeout);
        return outcome.ok
          ? `until converged: ${formatMs(outcome.ms)} (${describeLoad(s.load.lap())})`
          : `until converged: NOT within ${formatMs(step.timeout)}`;
      }
      if (step.until === 'writes-done') {
        const started = performance.now();
        await Promise.all(s.writers);
        return `until writes done: ${formatMs(performance.now() - started)}`;
      }
      const started = performance.now();
      // Settled: running where placement puts it (a drain's move has finished), not merely somewhere.
      while (!s.liveness.evaluate().settled) {
        if (performance.now() - started > step.timeout)
          return `until placed: NOT within ${formatMs(step.timeout)}`;
        await sleep(50);
      }
      return `until placed: ${formatMs(performance.now() - started)}`;
    }
    case 'flap': {
      const nodes = pick(step.nodes);
      for (let i = 0; i < step.times; i++) {
        if (step.mode === 'crash') await Promise.all(nodes.map((n) => cluster.crash(n)));
        else cluster.partition([nodes, cluster.names().filter((n) => !nodes.includes(n))]);
        await sleep(step.down);
        if (step.mode === 'crash') await Promise.all(nodes.map((n) => cluster.restart(n)));
        else cluster.heal();
        await sleep(step.up);
      }
      return `${compactNames(nodes)} ${step.times}× (${step.mode}, down ${step.down} ms, up ${step.up} ms)`;
    }
  }
}

function workloadDrafts(input: WorkloadInput, count: number | undefined): SimWorkloadDraft[] {
  const base: Omit<SimWorkloadDraft, 'name'> = {
    scratchClass: input.scratch_class,
    onPartition: input.on_partition,
    cpus: input.cpus,
    memoryMb: input.memory_mb,
    scratchMb: input.scratch_mb,
    stopTimeoutMs: input.stop_timeout,
    constraints: input.constraints,
    ...(input.restore_wait !== undefined ? { restoreWaitMs: input.restore_wait } : {}),
  };
  if (count === undefined) return [{ ...base, name: input.name }];
  return Array.from({ length: count }, (_, i) => ({ ...base, name: `${input.name}-${i + 1}` }));
}

function definedLink(latencyMs?: number, jitterMs?: number, lossPct?: number) {
  return {
    ...(latencyMs !== undefined ? { latencyMs } : {}),
    ...(jitterMs !== undefined ? { jitterMs } : {}),
    ...(lossPct !== undefined ? { lossPct } : {}),
  };
}

export function formatMs(ms: number | null): string {
  if (ms === null) return 'never';
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
