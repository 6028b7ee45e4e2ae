import { maxLeaseMs } from '../../../src/ownership/lease-bounds.js';
import { holdMs } from '../../../src/ownership/witness-core.js';
import type { ReconcileStatus } from '../../../src/reconciler/loop-status.js';
import { place, takeoverExtraWaitMs } from '../../../src/reconciler/placement/index.js';
import type { HolderRef, Liveness, PlacementNode } from '../../../src/reconciler/placement/types.js';
import type { WorkloadSpec } from '../../../src/state/schemas.js';
import type { LiveProcess } from '../running-registry.js';
import type { FaultEvent, FaultKind, SimCluster } from '../sim-cluster.js';
import { type InvariantResult, result } from './types.js';

/** Events after which placement has to settle again. */
const DISRUPTIVE = new Set<FaultKind>([
  'start',
  'partition',
  'cut',
  'heal',
  'crash',
  'restart',
  'join',
  'apply',
  'drain',
]);

/**
 * What the checker reads of the cluster: its ground truth (who is up, cut,
 * partitioned, draining, which processes run) and each agent's specs and
 * loop status. SimCluster is one; tests drive the checker with a small fake.
 */
export interface LivenessCluster {
  readonly timing: SimCluster['timing'];
  readonly registry: { snapshot(): Map<string, LiveProcess[]> };
  names(): string[];
  live(): string[];
  isUp(name: string): boolean;
  cutPairs(): [string, string][];
  partitionGroups(): string[][] | null;
  draining(): Set<string>;
  capacity(): ReturnType<SimCluster['capacity']>;
  onFault(listener: (event: FaultEvent) => void): () => void;
  /** The witnesses of the newest configuration (a restarted one keeps a quiet period, rule W6). */
  witnesses(): string[];
  agents(): { workloads: { list(): WorkloadSpec[] } }[];
  agent(name: string): { reconciler?: { loop?: { status(): ReconcileStatus } | null } | undefined };
}

export interface LivenessCheckerOptions {
  /** Slack beyond dead_after + the takeover wait + claim_settle (docs/sim.md, "Invariants"). */
  boundMs: number;
  /** How often recovery is re-evaluated while a disruption is unresolved. */
  pollMs?: number;
  describeTime?: (at: number) => string;
  /** Called when every placeable workload runs again after a disruption. */
  onRecovery?: (recovery: Recovery) => void;
  /** Called with every deadline check (and the final one). */
  onCheck?: (label: string, evaluation: Evaluation) => void;
}

export interface Evaluation {
  /**
   * Every placeable workload runs somewhere it may (exclusive: in the quorum
   * group; under one-way cuts, on a node that talks both ways with a majority).
   */
  ok: boolean;
  problems: string[];
  /** Stronger: every placeable workload runs exactly where placement puts it, and nowhere else. */
  settled: boolean;
  /** Placeable workloads not running (where they may). */
  notRunning: string[];
  placeable: number;
  unplaceable: string[];
}

export interface Recovery {
  event: string;
  at: number;
  /** From the event until every placeable workload ran (null: never, before the next event). */
  ms: number | null;
}

interface Pending {
  event: FaultEvent;
  deadline: number;
  timer: NodeJS.Timeout;
  recovered: boolean;
  /** When every placeable workload first ran after the event (null: not yet). */
  recoveredAt: number | null;
}

/**
 * Liveness: after every disruption (crash, restart, join, partition, heal,
 * drain, a new spec) every *placeable* workload runs again within
 * dead_after + the takeover extra wait + claim_settle + `boundMs`, unless
 * another disruption comes first (then that one's deadline counts).
 *
 * "Placeable" is judged on the harness's ground truth, not on any agent's
 * view: the running nodes of each partition group; exclusive workloads only
 * in a group holding a quorum (> N/2 of the enrolled nodes); placement's own
 * pure `place()` decides whether capacity and constraints allow it.
 *
 * Once a disruption has been recovered from, a workload can still go down
 * again with no new disruption: under sustained loss a lease renewal can
 * miss its witnesses and the holder fences. Such a *fresh outage* is held to
 * the same budget, counted from its own start: a deadline check that lands
 * inside one (the deadline is only an instant) does not fail it while it is
 * younger than the budget, and the poller fails it once it is older. A
 * point-in-time check alone would fail a run whose lease lapsed a moment
 * before the deadline and pass one whose lease lapsed for good just after it.
 */
export class LivenessChecker {
  private readonly cluster: LivenessCluster;
  private readonly options: LivenessCheckerOptions;
  private readonly checks: { label: string; evaluation: Evaluation }[] = [];
  private readonly recoveries: Recovery[] = [];
  private pending: Pending | null = null;
  /** workload → when it was first seen placeable but not running (while it stays so). */
  private readonly downSince = new Map<string, number>();
  /** workload → its longest finished outage, ms. */
  private readonly outages = new Map<string, number>();
  /** Fresh outages already failed (workload → its start), so each is reported once. */
  private readonly failedOutages = new Map<string, number>();
  /** When the quiet periods of restarted witnesses end (rule W6): deadlines start no earlier. */
  private witnessesQuietUntil = Number.NEGATIVE_INFINITY;
  private readonly poller: NodeJS.Timeout;
  private readonly unsubscribe: () => void;
  private readonly describeTime: (at: number) => string;

  constructor(cluster: LivenessCluster, options: LivenessCheckerOptions) {
    this.cluster = cluster;
    this.options = options;
    this.describeTime = options.describeTime ?? ((at) => `${Math.round(at)} ms`);
    this.unsubscribe = cluster.onFault((event) => {
      if (DISRUPTIVE.has(event.kind)) this.onDisruption(event);
    });
    this.poller = setInterval(() => this.poll(), options.pollMs ?? 250);
    this.poller.unref();
  }

  /** How long after a disruption placement must have settled, ms. */
  budgetMs(): number {
    const t = this.cluster.timing;
    const stopTimeout = Math.max(0, ...this.specs().map((spec) => spec.stopTimeoutMs));
    const extra = takeoverExtraWaitMs(
      {
        deadAfterMs: t.deadAfterMs,
        fenceAfterMs: t.fenceAfterMs,
        claimSettleMs: t.claimSettleMs,
        fenceSlackMs: t.fenceSlackMs,
        clockDriftPpm: t.clockDriftPpm,
      },
      stopTimeout,
    );
    return t.deadAfterMs + extra + t.claimSettleMs + 2 * t.tickMs + this.options.boundMs;
  }

  /**
   * How long a witness grants nothing after a restart (rule W6), in real
   * time: holdMs of the longest lease on a clock that runs slow by ρ.
   */
  witnessQuietMs(): number {
    const t = this.cluster.timing;
    const bound = maxLeaseMs({
      fenceAfterMs: t.fenceAfterMs,
      fenceSlackMs: t.fenceSlackMs,
      maxStopTimeoutMs: t.maxStopTimeoutMs,
    });
    return Math.ceil(holdMs(bound, t.clockDriftPpm) / (1 - t.clockDriftPpm / 1e6));
  }

  recoveryTimes(): readonly Recovery[] {
    return this.recoveries;
  }

  /** Waits out the current disruption's deadline (or its recovery), then checks. */
  async finalCheck(): Promise<void> {
    const pending = this.pending;
    if (pending !== null) {
      while (!pending.recovered && performance.now() < pending.deadline && this.pending === pending) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    // A fresh outage still within its budget is a recovery to wait for
    // (tracked from the ground truth now, not as of the last poll).
    for (;;) {
      this.trackOutages(this.evaluate().notRunning);
      if (this.pending !== pending || this.youngFreshOutages(performance.now()).size === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    this.record('at the end', this.excusingFreshOutages(this.evaluate()));
  }

  stop(): void {
    this.unsubscribe();
    clearInterval(this.poller);
    if (this.pending !== null) clearTimeout(this.pending.timer);
    this.pending = null;
  }

  result(): InvariantResult {
    const judged = this.checks;
    const failures = judged
      .filter((c) => c.evaluation.ok === false)
      .map((c) => `${c.label}: ${c.evaluation.problems.slice(0, 5).join('; ')}`);
    const settled = this.recoveries.filter((r) => r.ms !== null).map((r) => r.ms as number);
    const slowest = settled.length === 0 ? 'n/a' : `${Math.round(Math.max(...settled))} ms`;
    const longest = [...this.longestOutages()].sort((a, b) => b[1] - a[1])[0];
    const outage = longest === undefined ? '' : `; longest outage ${longest[0]} ${Math.round(longest[1])} ms`;
    return result(
      'liveness',
      judged.length,
      failures,
      failures.length === 0
        ? `${judged.length} deadline checks passed (budget ${this.budgetMs()} ms after each disruption; slowest recovery ${slowest}${outage})`
        : `${failures.length} of ${judged.length} deadline checks found placeable workloads not running`,
    );
  }

  /** The ground-truth check, now. */
  evaluate(): Evaluation {
    const cluster = this.cluster;
    const specs = this.specs();
    const all = cluster.names();
    // Under one-way cuts a node counts only while it talks both ways with a
    // majority of the nodes: one that cannot (everyone's messages to it cut,
    // or its own to everyone) can neither renew nor win a lease, so the
    // workloads must run elsewhere, and the deadlines are checked there.
    const impaired = impairedByCuts(all, cluster.cutPairs());
    const up = new Set(cluster.live().filter((name) => !impaired.has(name)));
    const draining = cluster.draining();
    const running = cluster.registry.snapshot();
    const groups = cluster.partitionGroups() ?? [all];
    const problems: string[] = [];
    const notRunning: string[] = [];
    let settled = true;
    const placeableSomewhere = new Set<string>();
    for (const group of groups) {
      const members = group.filter((name) => up.has(name));
      if (members.length === 0) continue;
      const quorum = members.length > all.length / 2;
      const candidates = specs.filter((spec) => quorum || isRelaxed(spec));
      const inGroup = new Set(members);
      const nodes: PlacementNode[] = members.map((nodeId) => ({
        nodeId,
        capacity: cluster.capacity(),
        labels: { sim: 'true' },
        draining: draining.has(nodeId),
      }));
      const liveness = new Map<string, Liveness>(members.map((name) => [name, 'alive']));
      const holders = new Map<string, HolderRef>();
      for (const [workload, processes] of running) {
        const here = processes.filter((p) => inGroup.has(p.node)).sort((a, b) => a.since - b.since);
        const first = here[0];
        if (first !== undefined) holders.set(workload, { nodeId: first.node, phase: 'running', since: 0 });
      }
      const placement = place({ specs: candidates, nodes, liveness, holders });
      for (const [workload, assignment] of placement.assignments) {
        if (!('node' in assignment)) continue;
        placeableSomewhere.add(workload);
        const processes = running.get(workload) ?? [];
        const ready = processes.some((p) => p.ready && inGroup.has(p.node));
        if (!ready) {
          notRunning.push(workload);
          problems.push(
            `${workload} placeable (on ${assignment.node}) but not running; ${this.whyNot(assignment.node, workload)}`,
          );
        }
        const onTarget = processes.some((p) => p.ready && p.node === assignment.node);
        const elsewhere = processes.some((p) => p.node !== assignment.node && inGroup.has(p.node));
        if (!onTarget || elsewhere) settled = false;
      }
    }
    const unplaceable = specs.map((s) => s.name).filter((name) => !placeableSomewhere.has(name));
    const ok = problems.length === 0;
    return {
      ok,
      problems,
      settled: ok && settled,
      notRunning,
      placeable: placeableSomewhere.size,
      unplaceable,
    };
  }

  /** What the target's own reconcile loop says about the workload (why it does not run it). */
  private whyNot(node: string, workload: string): string {
    if (!this.cluster.isUp(node)) return `${node} is down`;
    const status = this.cluster.agent(node).reconciler?.loop?.status();
    const entry = status?.workloads.find((w) => w.name === workload);
    if (entry === undefined) return `${node}'s loop does not know it`;
    const parts = [
      `${node} places it on ${entry.assignment ?? '?'}`,
      entry.action ? `action ${entry.action}` : null,
      entry.waiting ? `waiting: ${entry.waiting}` : null,
      entry.task ? `task ${entry.task}` : null,
      entry.error ? `error: ${entry.error}` : null,
      entry.lease
        ? `lease ballot ${entry.lease.ballot} ${entry.lease.mayRun ? 'held' : 'not held'} (granted by ${entry.lease.grantedBy.join(', ') || 'none'}; missing ${entry.lease.missing.join('; ') || 'none'})`
        : null,
    ];
    return parts.filter((p) => p !== null).join(', ');
  }

  private specs(): WorkloadSpec[] {
    // Union over running agents, newest revision: during a partition a spec may be known on one side only.
    const byName = new Map<string, WorkloadSpec>();
    for (const agent of this.cluster.agents()) {
      for (const spec of agent.workloads.list()) {
        const known = byName.get(spec.name);
        if (known === undefined || known.revision < spec.revision) byName.set(spec.name, spec);
      }
    }
    return [...byName.values()];
  }

  private onDisruption(event: FaultEvent): void {
    // The new deadline covers whatever is down now.
    this.failedOutages.clear();
    const previous = this.pending;
    if (previous !== null) {
      clearTimeout(previous.timer);
      if (!previous.recovered) {
        this.recoveries.push({ event: label(previous.event), at: previous.event.at, ms: null });
      }
    }
    // A restarted witness grants nothing for its quiet period (rule W6):
    // placement may have to wait it out before a quorum of witnesses grants.
    if (event.kind === 'restart' && event.nodes.some((node) => this.cluster.witnesses().includes(node)))
      this.witnessesQuietUntil = Math.max(this.witnessesQuietUntil, event.at + this.witnessQuietMs());
    const deadline = Math.max(event.at, this.witnessesQuietUntil) + this.budgetMs();
    const pending: Pending = {
      event,
      deadline,
      recovered: false,
      recoveredAt: null,
      timer: setTimeout(() => this.onDeadline(pending), Math.max(0, deadline - performance.now())),
    };
    pending.timer.unref();
    this.pending = pending;
  }

  private onDeadline(pending: Pending): void {
    if (this.pending !== pending) return;
    const evaluation = this.excusingFreshOutages(this.evaluate());
    this.record(
      `${this.describeTime(pending.event.at)} ${label(pending.event)} + ${this.budgetMs()} ms`,
      evaluation,
    );
  }

  /**
   * Longest time each workload was placeable but not running, ms. Deadline
   * checks are superseded by the next disruption; this is not: a workload
   * that stays down across a series of disruptions shows here.
   */
  longestOutages(): Map<string, number> {
    const out = new Map(this.outages);
    const now = performance.now();
    for (const [workload, since] of this.downSince)
      out.set(workload, Math.max(out.get(workload) ?? 0, now - since));
    return out;
  }

  private poll(): void {
    const evaluation = this.evaluate();
    this.trackOutages(evaluation.notRunning);
    this.failStaleFreshOutages(evaluation);
    const pending = this.pending;
    if (pending === null || pending.recovered) return;
    if (evaluation.settled) {
      pending.recovered = true;
      pending.recoveredAt = performance.now();
      const recovery: Recovery = {
        event: label(pending.event),
        at: pending.event.at,
        ms: performance.now() - pending.event.at,
      };
      this.recoveries.push(recovery);
      this.options.onRecovery?.(recovery);
    }
  }

  /** Outages that began after the current disruption was recovered from: workload → start. */
  private freshOutages(): Map<string, number> {
    const fresh = new Map<string, number>();
    const recoveredAt = this.pending?.recoveredAt ?? null;
    if (recoveredAt === null) return fresh;
    for (const [workload, since] of this.downSince) if (since > recoveredAt) fresh.set(workload, since);
    return fresh;
  }

  /** Fresh outages still within the budget, counted from their own start. */
  private youngFreshOutages(now: number): Map<string, number> {
    const budget = this.budgetMs();
    const young = new Map<string, number>();
    for (const [workload, since] of this.freshOutages()) if (now - since < budget) young.set(workload, since);
    return young;
  }

  /** The evaluation without the workloads whose fresh outage is younger than the budget. */
  private excusingFreshOutages(evaluation: Evaluation): Evaluation {
    this.trackOutages(evaluation.notRunning);
    const young = this.youngFreshOutages(performance.now());
    if (young.size === 0) return evaluation;
    const problems: string[] = [];
    const notRunning: string[] = [];
    evaluation.notRunning.forEach((workload, i) => {
      if (young.has(workload)) return;
      notRunning.push(workload);
      problems.push(evaluation.problems[i] ?? workload);
    });
    const ok = problems.length === 0;
    return { ...evaluation, ok, problems, notRunning, settled: evaluation.settled && ok };
  }

  /** A fresh outage older than the budget is a violation of its own, reported once. */
  private failStaleFreshOutages(evaluation: Evaluation): void {
    const now = performance.now();
    const budget = this.budgetMs();
    for (const [workload, since] of this.freshOutages()) {
      if (now - since < budget || this.failedOutages.get(workload) === since) continue;
      this.failedOutages.set(workload, since);
      const index = evaluation.notRunning.indexOf(workload);
      const problem = evaluation.problems[index] ?? `${workload} placeable but not running`;
      this.record(`${this.describeTime(since)} ${workload} went down with no disruption + ${budget} ms`, {
        ...evaluation,
        ok: false,
        settled: false,
        problems: [problem],
        notRunning: [workload],
      });
    }
  }

  private trackOutages(notRunning: readonly string[]): void {
    const now = performance.now();
    const down = new Set(notRunning);
    for (const workload of down) if (!this.downSince.has(workload)) this.downSince.set(workload, now);
    for (const [workload, since] of [...this.downSince]) {
      if (down.has(workload)) continue;
      this.downSince.delete(workload);
      this.outages.set(workload, Math.max(this.outages.get(workload) ?? 0, now - since));
    }
  }

  private record(labelText: string, evaluation: Evaluation): void {
    this.checks.push({ label: labelText, evaluation });
    this.options.onCheck?.(labelText, evaluation);
  }
}

/** Nodes that lack two-way links with a majority of the nodes (themselves included) because of cuts. */
function impairedByCuts(all: readonly string[], cuts: readonly [string, string][]): Set<string> {
  const impaired = new Set<string>();
  if (cuts.length === 0) return impaired;
  const broken = new Map<string, Set<string>>();
  for (const [from, to] of cuts) {
    for (const [x, y] of [
      [from, to],
      [to, from],
    ] as const) {
      const set = broken.get(x) ?? new Set<string>();
      set.add(y);
      broken.set(x, set);
    }
  }
  for (const name of all) {
    const twoWay = all.length - (broken.get(name)?.size ?? 0);
    if (twoWay <= all.length / 2) impaired.add(name);
  }
  return impaired;
}

function isRelaxed(spec: WorkloadSpec): boolean {
  return spec.scratchClass === 'volatile' && spec.onPartition === 'keep';
}

function label(event: FaultEvent): string {
  return `${event.kind} ${event.detail}`.trim();
}
