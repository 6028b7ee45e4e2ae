import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Evaluation,
  LivenessChecker,
  type LivenessCluster,
} from '../../sim/harness/invariants/liveness.js';
import type { LiveProcess } from '../../sim/harness/running-registry.js';
import { DEFAULT_SIM_TIMING, type FaultEvent } from '../../sim/harness/sim-cluster.js';
import { makeSpec } from '../placement/fixtures.js';

/**
 * The liveness checker against a scripted ground truth (no agents): what it
 * fails and what it waits for. Budget here: dead_after 100 + claim_settle 10
 * + 2 ticks of 10 + bound 100 = 230 ms (fence_after + stop_timeout +
 * fence_slack = 70 ms stays under dead_after, so no extra takeover wait).
 */
const BUDGET_MS = 230;
const NODES = ['n1', 'n2', 'n3'];

class ScriptedCluster implements LivenessCluster {
  readonly timing = {
    ...DEFAULT_SIM_TIMING,
    deadAfterMs: 100,
    fenceAfterMs: 50,
    fenceSlackMs: 10,
    claimSettleMs: 10,
    tickMs: 10,
    clockDriftPpm: 0,
    // Lease bound 4 × 50 + 10 + 10 = 220 ms: a restarted witness is quiet that long (W6).
    maxStopTimeoutMs: 10,
  };
  private readonly running = new Map<string, LiveProcess[]>();
  private readonly listeners: ((event: FaultEvent) => void)[] = [];
  private readonly specs = [makeSpec('db', { stopTimeoutMs: 10, cpus: 0.25, memoryMb: 64, scratchMb: 10 })];
  readonly registry = { snapshot: () => new Map(this.running) };

  names(): string[] {
    return [...NODES];
  }
  live(): string[] {
    return [...NODES];
  }
  isUp(): boolean {
    return true;
  }
  cutPairs(): [string, string][] {
    return [];
  }
  partitionGroups(): string[][] | null {
    return null;
  }
  draining(): Set<string> {
    return new Set();
  }
  capacity() {
    return { cpus: 8, memoryMb: 16_384, scratchMb: 100_000 };
  }
  onFault(listener: (event: FaultEvent) => void): () => void {
    this.listeners.push(listener);
    return () => undefined;
  }
  witnesses(): string[] {
    return [...NODES];
  }
  agents() {
    return [{ workloads: { list: () => this.specs } }];
  }
  agent() {
    return {};
  }

  apply(): void {
    for (const listener of this.listeners)
      listener({ kind: 'apply', at: performance.now(), nodes: [], detail: 'db' });
  }
  restart(node: string): void {
    for (const listener of this.listeners)
      listener({ kind: 'restart', at: performance.now(), nodes: [node], detail: '' });
  }
  start(node: string): void {
    this.running.set('db', [
      { node, pid: 1, since: performance.now(), revision: 1, exclusive: true, ready: true },
    ]);
  }
  stop(): void {
    this.running.delete('db');
  }
}

function checkerOn(cluster: ScriptedCluster): { checker: LivenessChecker; checks: [string, Evaluation][] } {
  const checks: [string, Evaluation][] = [];
  const checker = new LivenessChecker(cluster, {
    boundMs: 100,
    pollMs: 10,
    onCheck: (label, evaluation) => checks.push([label, evaluation]),
  });
  assert.equal(checker.budgetMs(), BUDGET_MS);
  return { checker, checks };
}

test('a workload that never runs after the disruption fails the deadline check', async () => {
  const cluster = new ScriptedCluster();
  const { checker, checks } = checkerOn(cluster);
  cluster.apply();
  await sleep(BUDGET_MS + 60);
  checker.stop();
  assert.equal(checks.length, 1);
  assert.equal(checks[0]?.[1].ok, false);
  assert.match(checks[0]?.[1].problems[0] ?? '', /db placeable \(on n\d\) but not running/);
  assert.equal(checker.result().ok, false);
});

test('a workload that runs by the deadline passes it, and the run ends clean', async () => {
  const cluster = new ScriptedCluster();
  const { checker } = checkerOn(cluster);
  cluster.apply();
  await sleep(50);
  cluster.start('n1');
  await sleep(BUDGET_MS);
  await checker.finalCheck();
  checker.stop();
  assert.equal(checker.result().ok, true, checker.result().violations.join('; '));
  assert.equal(checker.result().checked, 2);
  assert.ok((checker.recoveryTimes()[0]?.ms ?? Number.POSITIVE_INFINITY) < BUDGET_MS);
});

test('a fresh outage at the deadline (lease lapsed under loss) is waited for, not failed, when it ends within the budget', async () => {
  const cluster = new ScriptedCluster();
  const { checker, checks } = checkerOn(cluster);
  cluster.apply();
  await sleep(30);
  cluster.start('n1');
  // Recovered; then down again shortly before the apply's deadline, with no new disruption.
  await sleep(BUDGET_MS - 30 - 40);
  cluster.stop();
  await sleep(80); // the deadline passes while it is down
  assert.equal(checks.length, 1, 'the deadline check ran');
  assert.equal(checks[0]?.[1].ok, true, checks[0]?.[1].problems.join('; '));
  const finished = checker.finalCheck();
  await sleep(60);
  cluster.start('n2');
  await finished;
  checker.stop();
  assert.equal(checker.result().ok, true, checker.result().violations.join('; '));
  assert.ok((checker.longestOutages().get('db') ?? 0) >= 100, 'the outage is still reported');
});

test('a fresh outage that outlasts the budget fails on its own, after the deadline passed', async () => {
  const cluster = new ScriptedCluster();
  const { checker, checks } = checkerOn(cluster);
  cluster.apply();
  await sleep(30);
  cluster.start('n1');
  await sleep(BUDGET_MS + 20);
  assert.equal(checks[0]?.[1].ok, true);
  const wentDown = performance.now();
  cluster.stop();
  await sleep(BUDGET_MS + 60);
  checker.stop();
  const failed = checks.filter(([, evaluation]) => !evaluation.ok);
  assert.equal(failed.length, 1, 'reported once');
  assert.match(failed[0]?.[0] ?? '', /db went down with no disruption \+ 230 ms/);
  assert.ok(performance.now() - wentDown >= BUDGET_MS);
  assert.equal(checker.result().ok, false);
});

test('the final check waits out a fresh outage and fails it if it outlasts the budget', async () => {
  const cluster = new ScriptedCluster();
  const { checker } = checkerOn(cluster);
  cluster.apply();
  await sleep(30);
  cluster.start('n3');
  await sleep(60);
  cluster.stop();
  await checker.finalCheck();
  checker.stop();
  const result = checker.result();
  assert.equal(result.ok, false);
  assert.ok(
    result.violations.some((v) => v.startsWith('at the end') || v.includes('went down with no disruption')),
    result.violations.join('; '),
  );
});

test("a witness's restart moves the deadline past its quiet period (W6), and no further", async () => {
  const cluster = new ScriptedCluster();
  const { checker, checks } = checkerOn(cluster);
  const quietMs = checker.witnessQuietMs();
  assert.ok(quietMs >= 221 && quietMs <= 223, `quiet ${quietMs} ms`);
  cluster.restart('n1');
  cluster.apply();
  await sleep(BUDGET_MS + 60);
  assert.equal(checks.length, 0, 'no deadline while the witness may still be quiet');
  await sleep(quietMs);
  checker.stop();
  assert.equal(checks.length, 1);
  assert.equal(checks[0]?.[1].ok, false, 'never running past quiet + budget fails');
});
