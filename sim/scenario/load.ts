/**
 * Reads and validates a scenario file. Every problem is reported with the
 * file and, inside `steps`, the step number, its `at` and its action, so a
 * bad file is fixed without guessing.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { DEFAULT_SWIM_PARAMS } from '../../src/membership/swim-core.js';
import type { Capacity } from '../../src/state/schemas.js';
import type { InvariantName } from '../harness/invariants/types.js';
import {
  DEFAULT_SIM_TIMING,
  type SimMembership,
  type SimNetworkDefaults,
  type SimTiming,
} from '../harness/sim-cluster.js';
import type { SimRunnerTiming } from '../harness/sim-runner.js';
import { ScenarioFileSchema, STEP_ACTIONS, type Step, type StepAction, StepSchemas } from './schema.js';
import { highestNamedNode, parseSelector, SelectorError } from './selectors.js';

export class ScenarioError extends Error {
  override name = 'ScenarioError';
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`invalid scenario ${file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

export interface Scenario {
  file: string;
  name: string;
  description: string;
  seed: number | string;
  nodes: number;
  witnesses: number | string[] | undefined;
  clockRates: Record<string, number> | undefined;
  timing: Partial<SimTiming>;
  network: Partial<SimNetworkDefaults>;
  bootstrapPeers: number | undefined;
  runner: Partial<SimRunnerTiming>;
  membership: SimMembership | undefined;
  imageOn: string[] | undefined;
  capacity: Capacity | undefined;
  steps: Step[];
  expect: { invariants: InvariantName[]; convergeWithinMs: number; livenessBoundMs: number };
}

export async function loadScenario(file: string): Promise<Scenario> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ScenarioError(file, [`cannot read the file: ${(err as Error).message}`]);
  }
  return parseScenario(text, file);
}

export function parseScenario(text: string, file: string): Scenario {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    const where = err instanceof TomlError ? ` (line ${err.line}, column ${err.column})` : '';
    throw new ScenarioError(file, [`not valid TOML${where}: ${firstLine((err as Error).message)}`]);
  }
  const top = ScenarioFileSchema.safeParse(raw);
  if (!top.success) throw new ScenarioError(file, formatIssues(top.error.issues, ''));
  const doc = top.data;
  const problems: string[] = [];
  const steps: Step[] = [];
  const timing = toTiming(doc.timing);
  const merged = { ...DEFAULT_SIM_TIMING, ...timing };
  let knownNodes = doc.nodes;
  let previousAt = 0;
  doc.steps.forEach((rawStep, i) => {
    const where = describeStep(i, rawStep);
    const action = (rawStep as { action?: unknown } | null)?.action;
    if (typeof action !== 'string' || !(STEP_ACTIONS as string[]).includes(action)) {
      problems.push(`${where}: action must be one of ${STEP_ACTIONS.join(', ')}`);
      return;
    }
    const parsed = (StepSchemas[action as StepAction] as z.ZodType<Step>).safeParse(rawStep);
    if (!parsed.success) {
      problems.push(...formatIssues(parsed.error.issues, `${where}: `));
      return;
    }
    const step = parsed.data;
    if (!step.at.relative) {
      if (step.at.ms < previousAt) {
        problems.push(`${where}: steps must be in time order (an earlier step is at ${previousAt} ms)`);
      }
      previousAt = Math.max(previousAt, step.at.ms);
    }
    for (const problem of checkSelectors(step, knownNodes)) problems.push(`${where}: ${problem}`);
    if (step.action === 'witnesses') {
      for (const problem of nodeNameProblems('set', step.set, knownNodes))
        problems.push(`${where}: ${problem}`);
    }
    if (step.action === 'join') knownNodes += step.count;
    // The witnesses refuse a lease longer than their bound (rule W6): such a workload would never run.
    const stop = step.action === 'apply' ? step.workload.stop_timeout : undefined;
    if (stop !== undefined && stop > merged.maxStopTimeoutMs) {
      problems.push(
        `${where}: workload stop_timeout (${stop} ms) is above timing.max_stop_timeout (${merged.maxStopTimeoutMs} ms); the witnesses would refuse its lease`,
      );
    }
    steps.push(step);
  });
  if (Array.isArray(doc.witnesses)) problems.push(...nodeNameProblems('witnesses', doc.witnesses, doc.nodes));
  else if (doc.witnesses !== undefined && doc.witnesses > doc.nodes)
    problems.push(`witnesses: ${doc.witnesses} witnesses but only ${doc.nodes} nodes`);
  problems.push(...nodeNameProblems('clock_rates', Object.keys(doc.clock_rates ?? {}), doc.nodes));
  problems.push(...nodeNameProblems('image_on', doc.image_on ?? [], doc.nodes));
  if (!(merged.suspectAfterMs < merged.deadAfterMs)) {
    problems.push(
      `timing: suspect_after (${merged.suspectAfterMs} ms) must be below dead_after (${merged.deadAfterMs} ms)`,
    );
  }
  if (!(merged.fenceAfterMs < merged.deadAfterMs)) {
    problems.push(
      `timing: fence_after (${merged.fenceAfterMs} ms) must be below dead_after (${merged.deadAfterMs} ms)`,
    );
  }
  const m = doc.membership;
  if (m?.liveness === 'swim' && !m.swim) problems.push('membership: liveness = "swim" needs swim = true');
  const probe = {
    ...DEFAULT_SWIM_PARAMS,
    ...definedOnly({ probeIntervalMs: m?.probe_interval, probeTimeoutMs: m?.probe_timeout }),
  };
  if (m !== undefined && !(probe.probeTimeoutMs < probe.probeIntervalMs)) {
    problems.push(
      `membership: probe_timeout (${probe.probeTimeoutMs} ms) must be below probe_interval (${probe.probeIntervalMs} ms)`,
    );
  }
  if (problems.length > 0) throw new ScenarioError(file, problems);
  return {
    file,
    name: doc.name ?? basename(file).replace(/\.toml$/, ''),
    description: doc.description ?? '',
    seed: doc.seed,
    nodes: doc.nodes,
    witnesses: doc.witnesses,
    clockRates: doc.clock_rates,
    imageOn: doc.image_on,
    timing,
    network: definedOnly({
      latencyMs: doc.network.latency,
      jitterMs: doc.network.jitter,
      lossPct: doc.network.loss,
    }),
    bootstrapPeers: doc.network.bootstrap_peers,
    membership:
      m === undefined || !m.swim
        ? undefined
        : {
            liveness: m.liveness,
            params: definedOnly({ probeIntervalMs: m.probe_interval, probeTimeoutMs: m.probe_timeout }),
            ...(m.heartbeat_interval === undefined ? {} : { heartbeatIntervalMs: m.heartbeat_interval }),
          },
    runner: definedOnly({
      startMs: doc.runner.start,
      stopMs: doc.runner.stop,
      stateWriteMs: doc.runner.state_write,
    }),
    capacity:
      doc.capacity === undefined
        ? undefined
        : { cpus: doc.capacity.cpus, memoryMb: doc.capacity.memory_mb, scratchMb: doc.capacity.scratch_mb },
    steps,
    expect: {
      invariants: [...new Set(doc.expect.invariants)],
      convergeWithinMs: doc.expect.converge_within,
      livenessBoundMs: doc.expect.liveness_bound,
    },
  };
}

function checkSelectors(step: Step, knownNodes: number): string[] {
  const lists: [string, string | string[] | undefined][] = [];
  switch (step.action) {
    case 'partition':
      step.groups.forEach((group, i) => {
        lists.push([`groups[${i}]`, group]);
      });
      break;
    case 'cut':
      lists.push(['from', step.from], ['to', step.to]);
      break;
    case 'link':
      lists.push(['a', step.a], ['b', step.b]);
      if ((step.a === undefined) !== (step.b === undefined))
        return ['link: give both a and b, or neither (the default link)'];
      break;
    case 'loss':
    case 'crash':
    case 'restart':
    case 'skew':
    case 'write':
    case 'writes':
    case 'drain':
    case 'flap':
    case 'epoch':
      lists.push(['nodes', step.nodes]);
      break;
    case 'witnesses':
      lists.push(['via', step.via]);
      break;
    default:
      break;
  }
  const problems: string[] = [];
  for (const [field, selector] of lists) {
    if (selector === undefined) continue;
    for (const text of typeof selector === 'string' ? [selector] : selector) {
      try {
        const term = parseSelector(text);
        if (term.kind === 'rest' && step.action !== 'partition') {
          problems.push(`${field}: "rest" is only meaningful in partition groups`);
        }
        const highest = highestNamedNode(term);
        if (highest > knownNodes || (term.kind === 'name' && term.index === 0)) {
          problems.push(
            `${field}: "${text}" names a node that does not exist at this point (n1..n${knownNodes})`,
          );
        }
      } catch (err) {
        if (!(err instanceof SelectorError)) throw err;
        problems.push(`${field}: ${err.message}`);
      }
    }
  }
  return problems;
}

function toTiming(t: z.output<typeof ScenarioFileSchema>['timing']): Partial<SimTiming> {
  return definedOnly({
    heartbeatMs: t.heartbeat,
    suspectAfterMs: t.suspect_after,
    deadAfterMs: t.dead_after,
    syncGraceMs: t.sync_grace,
    syncIntervalMs: t.sync_interval,
    syncTimeoutMs: t.sync_timeout,
    gossipHeartbeatMs: t.gossip_heartbeat,
    batchMs: t.batch,
    redialIntervalMs: t.redial_interval,
    redialBackoffMaxMs: t.redial_backoff_max,
    meshCheckIntervalMs: t.mesh_check_interval,
    targetConnections: t.target_connections,
    fenceAfterMs: t.fence_after,
    claimSettleMs: t.claim_settle,
    fenceSlackMs: t.fence_slack,
    maxStopTimeoutMs: t.max_stop_timeout,
    clockDriftPpm: t.clock_drift_ppm,
    tickMs: t.tick,
    debounceMs: t.debounce,
    checkpointIntervalMs: t.checkpoint_interval,
    handoffMs: t.handoff,
    replicas: t.replicas,
    maxParallel: t.max_parallel,
  });
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function describeStep(index: number, raw: unknown): string {
  const step = (typeof raw === 'object' && raw !== null ? raw : {}) as { at?: unknown; action?: unknown };
  const parts = [`step ${index + 1}`];
  if (step.at !== undefined) parts.push(`at ${JSON.stringify(step.at)}`);
  if (step.action !== undefined) parts.push(`action ${JSON.stringify(step.action)}`);
  return parts.length === 1 ? (parts[0] as string) : `${parts[0]} (${parts.slice(1).join(', ')})`;
}

function formatIssues(issues: readonly z.core.$ZodIssue[], prefix: string): string[] {
  return issues.map((issue) => {
    const key = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    return `${prefix}${key}: ${issue.message}`;
  });
}

function firstLine(text: string): string {
  return text.split('\n')[0] ?? text;
}

/** Witness lists and clock rates name nodes (n1..nN) that exist, each once. */
function nodeNameProblems(field: string, names: readonly string[], knownNodes: number): string[] {
  const problems: string[] = [];
  if (new Set(names).size !== names.length) problems.push(`${field}: a node is listed twice`);
  for (const name of names) {
    const match = /^n(\d+)$/.exec(name);
    if (!match) problems.push(`${field}: "${name}" is not a node name (n1, n2, ...)`);
    else if (Number(match[1]) < 1 || Number(match[1]) > knownNodes)
      problems.push(
        `${field}: "${name}" names a node that does not exist at this point (n1..n${knownNodes})`,
      );
  }
  return problems;
}
