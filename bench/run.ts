/**
 * `npm run bench -- <benchmark> [options]` (docs/benchmarks.md):
 *
 *   convergence --nodes 5,10,25,50 --latency-ms 10 --writes 200 --out <dir>
 *               [--jitter-ms 0] [--gap-ms 20] [--partition-writes 100] [--pushpull-interval-ms 1000]
 *               [--rates 25,50,100,200,400,800,1600] [--sustain-seconds 3]
 *               [--heartbeat-ms 1000] [--mesh D,Dlo,Dhi] [--no-flood-publish] [--liveness acked-heartbeats|swim]
 *               [--no-baselines] [--seed 1]
 *   takeover    --runs 10 --nodes 5 --out <dir> [--stop-timeout-ms 10000] [--latency-ms 5] [--seed 1]
 *   swim-model  --nodes 100,1000,10000 --out <dir> [--warmup-s 30] [--after-s 120] [--crashes 5]
 *               [--gossip-nodes 3] [--gossip-interval-ms 200]
 *               [--latency-ms 10] [--jitter-ms 20] [--loss-pct 0,5] [--seed 1]
 *   agent-cost  --nodes 10,20,40 --out <dir> [--liveness acked-heartbeats,swim] [--warmup-s 20]
 *               [--window-s 30] [--writes-per-s 10] [--latency-ms 10] [--seed 1]
 *   recovery    --records 1000,10000,100000 --out <dir> [--batch 1000] [--latency-ms 5]
 *               [--timeout-s 300] [--seed 1]
 *   doc-growth  --updates 1000000 --out <dir> [--workloads 20] [--spec-updates 10000]
 *
 * Progress goes to stderr; the result files go to --out.
 */
import '../src/util/polyfill.js';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { MeshDegree } from '../src/gossip/index.js';
import {
  DEFAULT_SWIM_PARAMS,
  type SwimParams,
  SwimParamsError,
  validateSwimParams,
} from '../src/membership/swim-core.js';
import { agentCostMarkdown, runAgentCost, writeAgentCostReport } from './agent-cost.js';
import { writeConvergenceReport } from './convergence/report.js';
import { runConvergence } from './convergence/run-convergence.js';
import { docGrowthMarkdown, runDocGrowth, writeDocGrowthReport } from './doc-growth.js';
import { recoveryMarkdown, runRecovery, writeRecoveryReport } from './recovery.js';
import { runSwimModel, swimModelMarkdown, writeSwimModelReport } from './swim-model.js';
import { runTakeover, takeoverMarkdown, writeTakeoverReport } from './takeover.js';

const USAGE = `usage: npm run bench -- convergence --nodes 5,10 --latency-ms 10 --writes 200 --out <dir> [options]
       npm run bench -- takeover --runs 10 --nodes 5 --out <dir> [options]
       npm run bench -- swim-model --nodes 100,1000,10000 --out <dir> [options]
       npm run bench -- agent-cost --nodes 10,20,40 --out <dir> [options]
       npm run bench -- recovery --records 1000,10000,100000 --out <dir> [options]
       npm run bench -- doc-growth --updates 1000000 --out <dir> [options]`;

class UsageError extends Error {}

function usage(message: string): never {
  throw new UsageError(message);
}

/** `--mesh D,Dlo,Dhi`: gossipsub's mesh degree, Dlo ≤ D ≤ Dhi, all ≥ 1. */
function meshDegree(text: string): MeshDegree {
  const parts = text.split(',').map((p) => Number(p));
  const [D, Dlo, Dhi] = parts;
  if (parts.length !== 3 || D === undefined || Dlo === undefined || Dhi === undefined)
    return usage(`--mesh takes D,Dlo,Dhi, got "${text}"`);
  if (!parts.every((p) => Number.isInteger(p) && p >= 1) || !(Dlo <= D && D <= Dhi))
    return usage(`--mesh needs whole numbers with 1 ≤ Dlo ≤ D ≤ Dhi, got "${text}"`);
  return { D, Dlo, Dhi };
}

const log = (line: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'convergence') return convergence(rest);
  if (command === 'takeover') return takeover(rest);
  if (command === 'swim-model') return swimModel(rest);
  if (command === 'agent-cost') return agentCost(rest);
  if (command === 'recovery') return recovery(rest);
  if (command === 'doc-growth') return docGrowth(rest);
  throw new UsageError(command === undefined ? 'which benchmark?' : `unknown benchmark "${command}"`);
}

async function convergence(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      nodes: { type: 'string', default: '5,10,25,50' },
      'latency-ms': { type: 'string', default: '10' },
      'jitter-ms': { type: 'string', default: '0' },
      writes: { type: 'string', default: '200' },
      'gap-ms': { type: 'string', default: '20' },
      'partition-writes': { type: 'string', default: '100' },
      'pushpull-interval-ms': { type: 'string', default: '1000' },
      rates: { type: 'string', default: '25,50,100,200,400,800,1600' },
      'sustain-seconds': { type: 'string', default: '3' },
      'heartbeat-ms': { type: 'string' },
      mesh: { type: 'string' },
      'no-flood-publish': { type: 'boolean', default: false },
      liveness: { type: 'string', default: 'acked-heartbeats' },
      'no-baselines': { type: 'boolean', default: false },
      seed: { type: 'string', default: '1' },
      out: { type: 'string' },
    },
  });
  const out = required(values.out, '--out');
  const heartbeat =
    values['heartbeat-ms'] === undefined ? undefined : positive(values['heartbeat-ms'], '--heartbeat-ms');
  const report = await runConvergence({
    nodes: list(values.nodes, '--nodes'),
    latencyMs: nonNegative(values['latency-ms'], '--latency-ms'),
    jitterMs: nonNegative(values['jitter-ms'], '--jitter-ms'),
    writes: positive(values.writes, '--writes'),
    gapMs: nonNegative(values['gap-ms'], '--gap-ms'),
    partitionWrites: positive(values['partition-writes'], '--partition-writes'),
    pushPullIntervalMs: positive(values['pushpull-interval-ms'], '--pushpull-interval-ms'),
    sustainRates: list(values.rates, '--rates'),
    sustainSeconds: positive(values['sustain-seconds'], '--sustain-seconds'),
    seed: nonNegative(values.seed, '--seed'),
    baselines: !values['no-baselines'],
    ...(values.mesh === undefined ? {} : { mesh: meshDegree(values.mesh) }),
    ...(values['no-flood-publish'] ? { floodPublish: false } : {}),
    ...(values.liveness === 'swim'
      ? { membership: { liveness: 'swim' as const } }
      : values.liveness === 'acked-heartbeats'
        ? {}
        : usage(`--liveness takes acked-heartbeats or swim, got "${values.liveness}"`)),
    ...(heartbeat === undefined
      ? {}
      : {
          timing: {
            heartbeatMs: heartbeat,
            suspectAfterMs: 3 * heartbeat,
            deadAfterMs: 6 * heartbeat,
            fenceAfterMs: 4 * heartbeat,
            syncGraceMs: 2 * heartbeat,
          },
        }),
    log,
  });
  const files = await writeConvergenceReport(report, out);
  log(`wrote ${files.json}, ${files.markdown}, ${files.svg}`);
  return 0;
}

async function takeover(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      runs: { type: 'string', default: '10' },
      nodes: { type: 'string', default: '5' },
      'stop-timeout-ms': { type: 'string', default: '10000' },
      'latency-ms': { type: 'string', default: '5' },
      seed: { type: 'string', default: '1' },
      out: { type: 'string' },
    },
  });
  const out = required(values.out, '--out');
  const report = await runTakeover({
    runs: positive(values.runs, '--runs'),
    nodes: positive(values.nodes, '--nodes'),
    stopTimeoutMs: positive(values['stop-timeout-ms'], '--stop-timeout-ms'),
    latencyMs: nonNegative(values['latency-ms'], '--latency-ms'),
    seed: nonNegative(values.seed, '--seed'),
    log,
  });
  const files = await writeTakeoverReport(report, out);
  process.stdout.write(takeoverMarkdown(report));
  log(`wrote ${files.json}, ${files.markdown}`);
  return 0;
}

async function swimModel(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      nodes: { type: 'string', default: '100,1000,10000' },
      'warmup-s': { type: 'string', default: '30' },
      'after-s': { type: 'string', default: '120' },
      crashes: { type: 'string', default: '5' },
      'latency-ms': { type: 'string', default: '10' },
      'jitter-ms': { type: 'string', default: '20' },
      'loss-pct': { type: 'string', default: '0,5' },
      seed: { type: 'string', default: '1' },
      'gossip-nodes': { type: 'string' },
      'gossip-interval-ms': { type: 'string' },
      out: { type: 'string' },
    },
  });
  const out = required(values.out, '--out');
  const params: Partial<SwimParams> = {};
  if (values['gossip-nodes'] !== undefined)
    params.gossipNodes = nonNegative(values['gossip-nodes'], '--gossip-nodes');
  if (values['gossip-interval-ms'] !== undefined)
    params.gossipIntervalMs = positive(values['gossip-interval-ms'], '--gossip-interval-ms');
  try {
    validateSwimParams({ ...DEFAULT_SWIM_PARAMS, ...params });
  } catch (err) {
    if (err instanceof SwimParamsError) throw new UsageError(err.message);
    throw err;
  }
  const losses = (values['loss-pct'] ?? '').split(',').map((part) => {
    const loss = nonNegative(part, '--loss-pct');
    if (loss >= 100) throw new UsageError(`--loss-pct must be below 100, got ${loss}`);
    return loss;
  });
  const report = runSwimModel({
    nodes: list(values.nodes, '--nodes'),
    warmupS: positive(values['warmup-s'], '--warmup-s'),
    afterS: positive(values['after-s'], '--after-s'),
    crashes: nonNegative(values.crashes, '--crashes'),
    latencyMs: nonNegative(values['latency-ms'], '--latency-ms'),
    jitterMs: nonNegative(values['jitter-ms'], '--jitter-ms'),
    losses,
    seed: nonNegative(values.seed, '--seed'),
    params,
    log,
  });
  const files = await writeSwimModelReport(report, out);
  process.stdout.write(swimModelMarkdown(report));
  log(`wrote ${files.json}, ${files.markdown}`);
  return 0;
}

async function agentCost(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      nodes: { type: 'string', default: '10,20,40' },
      liveness: { type: 'string', default: 'acked-heartbeats,swim' },
      'warmup-s': { type: 'string', default: '20' },
      'window-s': { type: 'string', default: '30' },
      'writes-per-s': { type: 'string', default: '10' },
      'latency-ms': { type: 'string', default: '10' },
      seed: { type: 'string', default: '1' },
      out: { type: 'string' },
    },
  });
  const out = required(values.out, '--out');
  const liveness = (values.liveness ?? '').split(',').map((kind) => {
    if (kind !== 'acked-heartbeats' && kind !== 'swim')
      throw new UsageError(`--liveness takes acked-heartbeats and/or swim, got "${kind}"`);
    return kind;
  });
  const report = await runAgentCost({
    nodes: list(values.nodes, '--nodes'),
    liveness,
    warmupS: positive(values['warmup-s'], '--warmup-s'),
    windowS: positive(values['window-s'], '--window-s'),
    writesPerS: nonNegative(values['writes-per-s'], '--writes-per-s'),
    latencyMs: nonNegative(values['latency-ms'], '--latency-ms'),
    seed: nonNegative(values.seed, '--seed'),
    log,
  });
  const files = await writeAgentCostReport(report, out);
  process.stdout.write(agentCostMarkdown(report));
  log(`wrote ${files.json}, ${files.markdown}`);
  return 0;
}

async function recovery(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      records: { type: 'string', default: '1000,10000,100000' },
      batch: { type: 'string', default: '1000' },
      'latency-ms': { type: 'string', default: '5' },
      'timeout-s': { type: 'string', default: '300' },
      seed: { type: 'string', default: '1' },
      out: { type: 'string' },
    },
  });
  const out = required(values.out, '--out');
  const report = await runRecovery({
    records: list(values.records, '--records'),
    batch: list(values.batch, '--batch')[0] as number,
    latencyMs: nonNegative(values['latency-ms'], '--latency-ms'),
    timeoutS: positive(values['timeout-s'], '--timeout-s'),
    seed: nonNegative(values.seed, '--seed'),
    log,
  });
  await writeRecoveryReport(out, report);
  process.stdout.write(recoveryMarkdown(report));
  log(`wrote ${join(out, 'recovery.json')}, ${join(out, 'recovery.md')}`);
  return 0;
}

async function docGrowth(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      updates: { type: 'string', default: '1000000' },
      workloads: { type: 'string', default: '20' },
      'spec-updates': { type: 'string', default: '10000' },
      out: { type: 'string' },
    },
  });
  const out = required(values.out, '--out');
  const report = await runDocGrowth({
    updates: positive(values.updates, '--updates'),
    workloads: positive(values.workloads, '--workloads'),
    specUpdates: positive(values['spec-updates'], '--spec-updates'),
    log,
  });
  await writeDocGrowthReport(out, report);
  process.stdout.write(docGrowthMarkdown(report));
  log(`wrote ${join(out, 'doc-growth.json')}, ${join(out, 'doc-growth.md')}`);
  return 0;
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`${flag} is required`);
  return value;
}

function number(value: string | undefined, flag: string): number {
  const n = Number(value);
  if (value === undefined || value.trim() === '' || !Number.isFinite(n)) {
    throw new UsageError(`${flag} must be a number, got ${JSON.stringify(value)}`);
  }
  return n;
}

function nonNegative(value: string | undefined, flag: string): number {
  const n = number(value, flag);
  if (n < 0) throw new UsageError(`${flag} must be >= 0, got ${n}`);
  return n;
}

function positive(value: string | undefined, flag: string): number {
  const n = number(value, flag);
  if (!(n > 0)) throw new UsageError(`${flag} must be > 0, got ${n}`);
  return n;
}

function list(value: string | undefined, flag: string): number[] {
  const items = (value ?? '').split(',').map((part) => part.trim());
  if (items.length === 0 || items.some((part) => part === ''))
    throw new UsageError(`${flag}: a comma-separated list of numbers`);
  return items.map((part) => {
    const n = positive(part, flag);
    if (!Number.isInteger(n)) throw new UsageError(`${flag}: ${part} is not an integer`);
    return n;
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
      process.exit(2);
    }
    process.stderr.write(
      `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
