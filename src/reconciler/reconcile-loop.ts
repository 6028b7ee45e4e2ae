import type { Logger } from 'pino';
import { roleOf } from '../identity/role.js';
import { Origin } from '../state/names.js';
import type { WorkloadSpec } from '../state/schemas.js';
import { executeAction, URGENT_ACTIONS } from './action-execution.js';
import type { DeletedState } from './deleted-state.js';
import { handOver } from './loop-handover.js';
import { LoopMetrics } from './loop-metrics.js';
import { checkLoopOptions, type ReconcileLoopOptions, type StopPolicy } from './loop-options.js';
import { buildLoopParts } from './loop-parts.js';
import { type ReconcileStatus, workloadStatuses } from './loop-status.js';
import { imageHintNodes, snapshotSourceNodes } from './peer-hints.js';
import {
  checkTiming,
  decideLocalActions,
  evaluateView,
  type LocalAction,
  type LocalView,
  type OwnershipTiming,
  type PlacementNode,
  type ViewEvaluation,
} from './placement/index.js';
import type { RunnerStatus } from './service-runner.js';
import type { SlotActions } from './slot-actions.js';
import type { SlotBook } from './slot-book.js';
import type { SlotLeases } from './slot-leases.js';
import { pendingReportsOf } from './slot-status.js';
import type { SlotTasks } from './slot-tasks.js';
import type { SnapshotKeeper } from './snapshot-keeper.js';
import type { StateRestorer } from './state-restorer.js';

/**
 * The reconcile loop of one node (docs/placement.md): on every
 * tick and on every change of the documents, build this node's LocalView,
 * ask placement what to do (`decideLocalActions`) and do it, and keep this
 * node's entries in the observed document equal to what really runs here.
 *
 * Level-triggered: nothing depends on having seen an event. An action that
 * fails is logged, shown in the status reason and retried on a later pass
 * (with back-off); a workload never has two actions in flight, but an
 * urgent one (fence, yield, spec removed) aborts a slower one (a pull).
 *
 * Checkpoints: every `checkpointIntervalMs` the STATE_DIRECTORY of each
 * running persistent workload is snapshotted and, when it changed,
 * announced as the `snapshot` of its running status; the next `replicas`
 * nodes in the workload's rendezvous order pull and keep it, so a takeover
 * after the holder died can restore it (placement's `checkpoint` restore).
 *
 * This class is the pass (view → placement → dispatch) and the lifecycle;
 * the parts it dispatches to have one job each and are tested alone:
 * SlotTasks, SlotBook, SlotActions, StateRestorer, SlotLeases,
 * DeletedState, SnapshotKeeper, and the functions of action-execution.ts,
 * loop-handover.ts and loop-status.ts (docs/reconciler.md, the module table).
 */

export class ReconcileLoop {
  readonly nodeId: string;
  private readonly options: ReconcileLoopOptions;
  private readonly logger: Logger;
  private readonly clock: () => number;
  private readonly timing: OwnershipTiming;
  private readonly metrics: LoopMetrics;
  /** Checkpoint history, replica pulls, pins and snapshot garbage collection. */
  private readonly keeper: SnapshotKeeper;
  /** Runs each slot's one task, with back-off after failures. */
  private readonly tasks: SlotTasks;
  /** The slots and this node's observed entries: the one writer of both. */
  private readonly book: SlotBook;
  /** Which exclusive workloads this node asks a witness lease for. */
  private readonly slotLeases: SlotLeases;
  /** Empties deleted workloads' STATE_DIRECTORY. */
  private readonly deletedState: DeletedState;
  /** Puts a claim's state in place (snapshot, checkpoint, fallback). */
  private readonly restorer: StateRestorer;
  /** Claim, start, restart, release, let go, checkpoint. */
  private readonly actions: SlotActions;
  /** workload → why this node waits (placement's wait actions), for status output. */
  private readonly waits = new Map<string, string>();
  /** Workloads whose `pending` status this node reports for the cluster. */
  private pendingReports = new Set<string>();
  private readonly unsubscribes: (() => void)[] = [];
  private lastNow = 0;
  private lastActions: LocalAction[] = [];
  private lastEvaluation: ViewEvaluation | null = null;
  private tickTimer: NodeJS.Timeout | null = null;
  private debounceTimer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(options: ReconcileLoopOptions) {
    this.options = options;
    this.nodeId = options.nodeId;
    this.logger = options.logger.child({ component: 'reconcile' });
    this.clock = options.now ?? Date.now;
    this.timing = checkTiming({ ...options.timing });
    checkLoopOptions(options);
    this.metrics = new LoopMetrics(options.registry, {
      phases: () => [...options.observed.listForNode(this.nodeId).values()].map((s) => s.phase),
      checkpointAges: () => this.checkpointAges(),
    });
    ({
      keeper: this.keeper,
      book: this.book,
      slotLeases: this.slotLeases,
      deletedState: this.deletedState,
      restorer: this.restorer,
      actions: this.actions,
      tasks: this.tasks,
    } = buildLoopParts(
      options,
      {
        nodeId: this.nodeId,
        logger: this.logger,
        metrics: this.metrics,
        timing: this.timing,
        replicas: this.replicas,
      },
      {
        now: () => this.now(),
        heldDigests: () => this.heldDigests(),
        snapshotSources: (workload, holderId) => this.snapshotSources(workload, holderId),
        specOf: (name) => this.specOf(name),
        imageHints: (spec) => this.imageHints(spec),
        settled: (slot) => {
          if (!slot.dropped) this.book.write(slot);
          this.schedule();
        },
      },
    ));
  }

  /**
   * The lease is renewed only when a pass observes it, so passes must come
   * well within fence_after (a single node proves its own quorum at each
   * observation): at most a quarter of it.
   */
  private get tickMs(): number {
    return Math.max(10, Math.min(this.options.tickMs ?? 1000, Math.floor(this.timing.fenceAfterMs / 4)));
  }

  private get replicas(): number {
    return this.options.replicas ?? 1;
  }

  private get checkpointIntervalMs(): number {
    return this.options.checkpointIntervalMs ?? 30_000;
  }

  /**
   * Reaps what a previous agent left running, repairs interrupted restores,
   * turns this node's own records of a previous life into the truth
   * (nothing runs any more), then reconciles on every tick and change.
   */
  async start(): Promise<void> {
    if (this.running) return;
    await this.options.runner.init();
    await this.options.snapshots.init();
    await this.book.adopt();
    this.running = true;
    const schedule = () => this.schedule();
    const { workloads, observed, enrollment, runner, lease } = this.options;
    this.unsubscribes.push(
      workloads.onChange(schedule),
      // Our own writes need no pass of their own.
      observed.onChange((origin) => {
        if (origin !== Origin.local) schedule();
      }),
      enrollment.onChange(schedule),
      runner.onStatus((status) => this.onRunnerStatus(status)),
    );
    if (this.options.onActiveNodesChange) this.unsubscribes.push(this.options.onActiveNodesChange(schedule));
    if (lease.onChange) this.unsubscribes.push(lease.onChange(schedule));
    // A lease that starts or ends is acted on at once (a fence must not wait for the tick).
    this.unsubscribes.push(this.options.leases.onChange(() => this.pass()));
    this.tickTimer = setInterval(() => this.pass(), this.tickMs);
    this.tickTimer.unref();
    this.logger.info({ lease: lease.kind, adopted: this.book.size }, 'reconcile loop started');
    this.pass();
  }

  /**
   * `release` (default): stop every service, snapshot persistent state,
   * write `released {snapshot}` and wait (up to handoffMs) for a replica to
   * pull each snapshot, so the workloads can move if this node does not
   * come back. `halt`: stop reconciling and leave processes and records as
   * they are (what a crash looks like to the cluster; the next agent on
   * this data directory reaps the processes).
   */
  async stop(policy: StopPolicy = 'release'): Promise<void> {
    const wasRunning = this.running;
    this.running = false;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    if (this.debounceTimer !== null) clearTimeout(this.debounceTimer);
    this.tickTimer = null;
    this.debounceTimer = null;
    for (const off of this.unsubscribes.splice(0)) off();
    for (const slot of this.book.all()) {
      if (slot.task && !slot.task.urgent) slot.task.controller.abort(new Error('agent stopping'));
    }
    await Promise.allSettled([...this.book.all()].map((slot) => slot.task?.done));
    await this.keeper.settle();
    if (policy === 'halt' || !wasRunning) {
      this.logger.info({ policy }, 'reconcile loop halted');
      return;
    }
    const released = await handOver({
      book: this.book,
      runner: this.options.runner,
      actions: this.actions,
      snapshots: this.options.snapshots,
      specOf: (name) => this.specOf(name),
      handoffMs: this.options.handoffMs ?? 3000,
      replicas: this.replicas,
      logger: this.logger,
    });
    this.logger.info({ released }, 'reconcile loop stopped');
  }

  /** What the loop is doing, for status output and tests. */
  status(): ReconcileStatus {
    const workloads = workloadStatuses({
      names: [
        ...this.book.names(),
        ...this.waits.keys(),
        ...this.options.workloads.list().map((spec) => spec.name),
      ],
      slot: (name) => this.book.get(name),
      assignments: this.lastEvaluation?.placement.assignments,
      lastActions: this.lastActions,
      waits: this.waits,
      lease: (name) => this.slotLeases.summary(name),
    });
    return { nodeId: this.nodeId, leaseSource: 'witnesses', workloads };
  }

  // ---- the pass -------------------------------------------------------------

  private schedule(): void {
    if (!this.running || this.debounceTimer !== null) return;
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = null;
      this.pass();
    }, this.options.debounceMs ?? 50);
    this.debounceTimer.unref();
  }

  private now(): number {
    // Placement and the FenceTracker need a clock that never runs backwards.
    const t = Math.floor(this.clock());
    if (t > this.lastNow) this.lastNow = t;
    return this.lastNow;
  }

  /** One synchronous pass: decide, dispatch actions (they run on their own), write statuses. */
  private pass(): void {
    if (!this.running) return;
    try {
      this.passOnce();
    } catch (err) {
      // A timer callback must never throw: the next pass tries again.
      this.logger.error({ err }, 'reconcile pass failed');
    }
  }

  private passOnce(): void {
    this.metrics.passes.inc();
    const now = this.now();
    const specs = this.options.workloads.list();
    const specsByName = new Map(specs.map((spec) => [spec.name, spec]));
    let view: LocalView;
    let actions: LocalAction[];
    let evaluation: ViewEvaluation;
    try {
      view = this.buildView(now, specs);
      actions = decideLocalActions(this.nodeId, view);
      evaluation = evaluateView(this.nodeId, view);
    } catch (err) {
      this.logger.error({ err }, 'reconcile pass failed: cannot evaluate the view');
      return;
    }
    this.lastActions = actions;
    this.lastEvaluation = evaluation;
    this.keeper.record(evaluation, new Set(specsByName.keys()));
    this.pendingReports = pendingReportsOf(this.nodeId, view, evaluation, this.timing.deadAfterMs);
    this.waits.clear();
    for (const action of actions) this.dispatch(action, specsByName.get(action.workload), view);
    this.book.writePendingReports(this.pendingReports, evaluation, specsByName);
    this.resumeReleases(now);
    this.scheduleCheckpoints(now, specsByName);
    this.keeper.pullReplicas(view, evaluation, specsByName);
    // One update for the whole pass: a status change rewrites this node's report (docs/protocol.md).
    this.options.observed.batch(() => {
      for (const slot of this.book.all()) this.book.write(slot);
    });
    this.slotLeases.sync(specsByName);
    this.deletedState.sweep(specsByName);
    this.keeper.maybeCollect(now);
  }

  private buildView(now: number, specs: WorkloadSpec[]): LocalView {
    const { enrollment, lease: source } = this.options;
    const nodes: PlacementNode[] = this.options.activeNodes().map((record) => ({
      nodeId: record.nodeId,
      capacity: record.capacity,
      labels: record.labels,
      draining: enrollment.isDraining(record.nodeId),
      role: roleOf(record),
    }));
    return {
      now,
      specs,
      nodes,
      liveness: source.liveness(now),
      observed: this.options.observed.listAll(),
      leases: this.slotLeases.views(specs),
      witnessConfigured: this.options.leases.configured(),
      lastHeard: source.lastHeard(),
      listeningSince: Math.min(source.listeningSince(), now),
      timing: this.timing,
      maxParallel: this.options.maxParallel ?? 1,
    };
  }

  private dispatch(action: LocalAction, spec: WorkloadSpec | undefined, view: LocalView): void {
    const name = action.workload;
    if (action.kind === 'wait' || action.kind === 'wait-for-snapshot') {
      this.waits.set(name, action.reason);
      return;
    }
    // Our `pending` report is not a leftover while we are the reporter.
    if (action.kind === 'forget' && this.pendingReports.has(name)) return;
    const urgent = URGENT_ACTIONS.has(action.kind);
    const slot = this.book.slotFor(name);
    if (slot.task !== null) {
      if (urgent && !slot.task.urgent) slot.task.controller.abort(new Error(`preempted by ${action.kind}`));
      return; // decided again on the pass after the task ends
    }
    if (!urgent && this.now() < slot.retryAt) return;
    const execution = { actions: this.actions, metrics: this.metrics, logger: this.logger };
    this.tasks.run(slot, action.kind, urgent, (signal) =>
      executeAction(execution, slot, action, spec, view, signal),
    );
  }

  // ---- periodic duties ------------------------------------------------------

  private resumeReleases(now: number): void {
    for (const slot of this.book.all()) {
      if (slot.release === null || slot.task !== null || now < slot.retryAt) continue;
      this.tasks.run(slot, 'release', true, () => this.actions.release(slot));
    }
  }

  private scheduleCheckpoints(now: number, specs: ReadonlyMap<string, WorkloadSpec>): void {
    const interval = this.checkpointIntervalMs;
    if (interval <= 0) return;
    for (const slot of this.book.all()) {
      if (slot.task !== null || slot.authored !== null || now < slot.retryAt) continue;
      if (specs.get(slot.name)?.scratchClass !== 'persistent') continue;
      if (this.options.runner.status(slot.name)?.phase !== 'running') continue;
      const since = slot.lastCheckpointAt ?? slot.mirrored?.since ?? now;
      if (now - since < interval) continue;
      this.tasks.run(slot, 'checkpoint', false, (signal) =>
        this.actions.checkpoint(slot, signal).catch((err: unknown) => {
          this.metrics.checkpoints.inc({ result: 'error' });
          slot.lastCheckpointAt = this.now();
          throw err;
        }),
      );
    }
  }

  /** Snapshots this loop's slots hold: kept by garbage collection. */
  private *heldDigests(): Iterable<string> {
    for (const slot of this.book.all()) {
      if (slot.checkpoint) yield slot.checkpoint.digest;
      if (slot.authored?.snapshot) yield slot.authored.snapshot.digest;
    }
  }

  // ---- observed statuses ---------------------------------------------------------

  private onRunnerStatus(status: RunnerStatus): void {
    const slot = this.book.get(status.name);
    if (!this.running || slot === undefined || slot.authored !== null) return;
    this.book.write(slot);
    this.schedule();
  }

  // ---- helpers -------------------------------------------------------------------

  private specOf(name: string): WorkloadSpec | undefined {
    return this.options.workloads.list().find((spec) => spec.name === name);
  }

  /** Nodes to ask for `spec`'s image, best first (peer-hints.ts). */
  private imageHints(spec: WorkloadSpec): string[] {
    return imageHintNodes({
      selfId: this.nodeId,
      spec,
      holders: this.options.observed.holdersOf(spec.imageDigest),
      specs: new Map(this.options.workloads.list().map((s) => [s.name, s])),
      observed: this.options.observed.listAll(),
      liveness: this.options.lease.liveness(this.now()),
    });
  }

  /** Nodes to ask for a snapshot of `holderId`'s, best first (peer-hints.ts). */
  private snapshotSources(workload: string, holderId: string): string[] {
    return snapshotSourceNodes({
      selfId: this.nodeId,
      workload,
      holderId,
      activeNodeIds: this.options.activeNodes().map((record) => record.nodeId),
      liveness: this.options.lease.liveness(this.now()),
    });
  }

  private *checkpointAges(): Iterable<[string, number]> {
    const now = this.now();
    for (const slot of this.book.all()) {
      if (slot.authored === null && slot.checkpoint !== null) {
        yield [slot.name, Math.max(0, (now - slot.checkpoint.at) / 1000)];
      }
    }
  }
}
