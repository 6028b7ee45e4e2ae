import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { roleOf } from '../identity/role.js';
import type { LeaseStatus, LeaseWant } from '../ownership/index.js';
import type { EnrollmentView } from '../state/enrollment-view.js';
import { Origin } from '../state/names.js';
import type { ObservedView } from '../state/observed-view.js';
import {
  DEFAULT_RESTORE_WAIT_MS,
  type ObservedStatus,
  type Phase,
  type SignedEnrollment,
  type SnapshotRef,
  type WorkloadSpec,
} from '../state/schemas.js';
import type { WorkloadsView } from '../state/workloads-view.js';
import { ImageRefusedError, type ImageSource } from './image-fetch.js';
import type { LeaseSource } from './lease.js';
import { LoopMetrics } from './loop-metrics.js';
import { shortDigest } from './peer-fetch.js';
import {
  checkTiming,
  decideLocalActions,
  evaluateView,
  type LeaseView,
  type LocalAction,
  type LocalView,
  livenessOf,
  type OwnershipTiming,
  ownershipClass,
  type PlacementNode,
  type Restore,
  rankNodes,
  type ViewEvaluation,
} from './placement/index.js';
import type { RunnerStatus, ServiceRunner } from './service-runner.js';
import { type ClaimState, newSlot, type Slot, type Task } from './slot.js';
import {
  blankStatus,
  joinReason,
  pendingReportsOf,
  RUNNING_PHASES,
  slotStatus,
  withEpoch,
} from './slot-status.js';
import { SnapshotKeeper } from './snapshot-keeper.js';
import type { StateSnapshots } from './snapshots.js';
import { sameObservedStatus } from './status-equality.js';

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
 */

export interface ReconcileLoopOptions {
  nodeId: string;
  workloads: Pick<WorkloadsView, 'list' | 'onChange'>;
  observed: Pick<
    ObservedView,
    'listAll' | 'listForNode' | 'get' | 'setStatus' | 'remove' | 'onChange' | 'holdersOf' | 'batch'
  >;
  /** Drain flags (and their changes). */
  enrollment: Pick<EnrollmentView, 'isDraining' | 'onChange'>;
  /** The verified, active (unrevoked) enrolled nodes, draining ones included. */
  activeNodes: () => readonly SignedEnrollment[];
  /** Subscribes to changes of the active set (trust recomputed). */
  onActiveNodesChange?: (listener: () => void) => () => void;
  /** Liveness (who is alive, last heard, warm-up); ownership no longer comes from it. */
  lease: LeaseSource;
  /** This node's witness leases of exclusive workloads (docs/placement.md, "Witness leases"). */
  leases: WorkloadLeases;
  runner: ServiceRunner;
  snapshots: StateSnapshots;
  images: ImageSource;
  /** The local clock; the same one the failure detector uses. */
  now?: () => number;
  timing: OwnershipTiming;
  /** Reconcile at least this often (default 1 s). */
  tickMs?: number;
  /** Document changes are coalesced for this long (default 50 ms). */
  debounceMs?: number;
  /** services.checkpoint_interval; 0 disables checkpoints (default 30 s). */
  checkpointIntervalMs?: number;
  /** services.replicas: nodes that keep a copy of each checkpoint (default 1). */
  replicas?: number;
  /** services.max_parallel (default 1). */
  maxParallel?: number;
  /** Stored snapshots nobody references are collected this often (default 60 s). */
  gcIntervalMs?: number;
  /** Graceful stop: how long to wait for a replica to pull each released snapshot (default 3 s). */
  handoffMs?: number;
  logger: Logger;
  registry: Registry;
}

/** What the loop needs of the LeaseManager (src/ownership/lease-manager.ts). */
export interface WorkloadLeases {
  want(workload: string, want: LeaseWant): void;
  /** Only once nothing of the workload runs here. */
  unwant(workload: string): void;
  wanted(): string[];
  status(workload: string): LeaseStatus;
  /** A witness configuration is known. */
  configured(): boolean;
  /** Called when a lease starts or ends. */
  onChange(listener: () => void): () => void;
  /** The run window to ask for, at least `baseMs` (longer on a slow network). */
  windowFor?(baseMs: number): number;
}

/** How the loop stops: hand everything over, or just halt (a crash, as the cluster sees it). */
export type StopPolicy = 'release' | 'halt';

/** Actions that must not wait behind a pull: they abort it. */
const URGENT = new Set(['fence-stop', 'yield', 'stop-and-forget']);
/** Observed phases whose node ran the workload's current revision (it has the image). */
const RAN_PHASES = new Set<Phase>(['starting', 'running', 'stopping', 'released', 'failed']);
/** Phases of this node's entry for which it keeps its witness lease. */
const LEASED_PHASES = new Set<Phase>(['pulling', 'starting', 'running', 'stopping']);

export class ReconcileLoop {
  readonly nodeId: string;
  private readonly options: ReconcileLoopOptions;
  private readonly logger: Logger;
  private readonly clock: () => number;
  private readonly timing: OwnershipTiming;
  private readonly metrics: LoopMetrics;
  private readonly slots = new Map<string, Slot>();
  /** Checkpoint history, replica pulls, pins and snapshot garbage collection. */
  private readonly keeper: SnapshotKeeper;
  /** workload → why this node waits (placement's wait actions), for status output. */
  private readonly waits = new Map<string, string>();
  /** Workloads whose `pending` status this node reports for the cluster. */
  private pendingReports = new Set<string>();
  /** Spec names of the previous pass: one gone since was deleted. */
  private knownSpecs: Set<string> | null = null;
  /** Deleted workloads whose STATE_DIRECTORY this node still has to empty. */
  private readonly pendingWipes = new Set<string>();
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
    for (const [key, value] of [
      ['tickMs', options.tickMs],
      ['debounceMs', options.debounceMs],
      ['checkpointIntervalMs', options.checkpointIntervalMs],
      ['gcIntervalMs', options.gcIntervalMs],
      ['handoffMs', options.handoffMs],
    ] as const) {
      if (value !== undefined && !(Number.isFinite(value) && value >= 0))
        throw new RangeError(`ReconcileLoop: ${key} must be a number of ms >= 0, got ${String(value)}`);
    }
    if (options.replicas !== undefined && !(Number.isSafeInteger(options.replicas) && options.replicas >= 0))
      throw new RangeError(`ReconcileLoop: replicas must be an integer >= 0, got ${options.replicas}`);
    this.metrics = new LoopMetrics(options.registry, {
      phases: () => [...options.observed.listForNode(this.nodeId).values()].map((s) => s.phase),
      checkpointAges: () => this.checkpointAges(),
    });
    this.keeper = new SnapshotKeeper({
      nodeId: this.nodeId,
      snapshots: options.snapshots,
      observed: options.observed,
      replicas: this.replicas,
      gcIntervalMs: options.gcIntervalMs ?? 60_000,
      now: () => this.now(),
      logger: this.logger,
      replicaPulls: this.metrics.replicaPulls,
      heldDigests: () => this.heldDigests(),
    });
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
    await this.adopt();
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
    this.logger.info({ lease: lease.kind, adopted: this.slots.size }, 'reconcile loop started');
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
    for (const slot of this.slots.values()) {
      if (slot.task && !slot.task.urgent) slot.task.controller.abort(new Error('agent stopping'));
    }
    await Promise.allSettled([...this.slots.values()].map((slot) => slot.task?.done));
    await this.keeper.settle();
    if (policy === 'halt' || !wasRunning) {
      this.logger.info({ policy }, 'reconcile loop halted');
      return;
    }
    const handedOver: string[] = [];
    await Promise.allSettled(
      [...this.slots.values()].map(async (slot) => {
        if (slot.authored?.phase === 'pulling') {
          this.dropSlot(slot);
          return;
        }
        const running = this.options.runner.status(slot.name);
        if (!running || !RUNNING_PHASES.has(running.phase)) return;
        const spec = this.specOf(slot.name);
        const persistent = spec?.scratchClass === 'persistent' || slot.checkpoint !== null;
        slot.release = { reason: 'agent stopping', snapshot: persistent };
        await this.release(slot);
        const digest = slot.authored?.snapshot?.digest;
        if (digest) handedOver.push(digest);
      }),
    );
    await this.options.runner.stopAll({ reason: 'agent stopping' });
    const handoffMs = this.options.handoffMs ?? 3000;
    if (handedOver.length > 0 && handoffMs > 0 && this.replicas > 0) {
      const pulled = await this.options.snapshots.waitServed(handedOver, handoffMs);
      if (!pulled) {
        this.logger.warn(
          { snapshots: handedOver.length, waitedMs: handoffMs },
          'stopping before every released snapshot was pulled by a peer; they move only if this node returns',
        );
      }
    }
    this.logger.info({ released: handedOver.length }, 'reconcile loop stopped');
  }

  /** What the loop is doing, for status output and tests. */
  status(): ReconcileStatus {
    const workloads: ReconcileStatus['workloads'] = [];
    const names = new Set([...this.slots.keys(), ...this.waits.keys()]);
    for (const spec of this.options.workloads.list()) names.add(spec.name);
    const assignments = this.lastEvaluation?.placement.assignments;
    for (const name of [...names].sort()) {
      const slot = this.slots.get(name);
      const assignment = assignments?.get(name);
      workloads.push({
        name,
        assignment:
          assignment === undefined
            ? null
            : 'node' in assignment
              ? assignment.node
              : // Why it left its holder, if it did: a drained holder with nowhere to go says "is draining".
                `pending: ${assignment.pending}${assignment.movedBecause ? `; ${assignment.movedBecause}` : ''}`,
        action: this.lastActions.find((action) => action.workload === name)?.kind ?? null,
        waiting: this.waits.get(name) ?? null,
        task: slot?.task?.kind ?? null,
        error: slot?.error ? `${slot.error.what}: ${slot.error.message}` : null,
        checkpoint: slot?.checkpoint ?? null,
        lease: this.leaseSummary(name),
      });
    }
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
    this.writePendingReports(evaluation, specsByName);
    this.resumeReleases(now);
    this.scheduleCheckpoints(now, specsByName);
    this.keeper.pullReplicas(view, evaluation, specsByName);
    // One update for the whole pass: a status change rewrites this node's report (docs/protocol.md).
    this.options.observed.batch(() => {
      for (const slot of this.slots.values()) this.writeSlot(slot);
    });
    this.syncLeases(specsByName);
    this.wipeDeleted(specsByName);
    this.keeper.maybeCollect(now);
  }

  /**
   * Keep asking for the lease of every exclusive workload this node pulls,
   * starts, runs or is stopping (renewals keep it while a stop takes its
   * time), and release it once nothing of the workload runs here any more.
   */
  private syncLeases(specs: ReadonlyMap<string, WorkloadSpec>): void {
    const { leases, runner } = this.options;
    const mine = this.options.observed.listForNode(this.nodeId);
    const keep = new Set<string>();
    for (const [name, status] of mine) {
      const spec = specs.get(name);
      if (!spec || ownershipClass(spec) !== 'exclusive') continue;
      if (!LEASED_PHASES.has(status.phase)) continue;
      keep.add(name);
      leases.want(name, this.leaseWant(spec));
    }
    for (const name of leases.wanted()) {
      if (keep.has(name)) continue;
      const running = runner.status(name);
      // Never release while a process may still run: the lease is what keeps others off.
      if (running && RUNNING_PHASES.has(running.phase)) continue;
      if (this.slots.get(name)?.task) continue;
      leases.unwant(name);
    }
  }

  /**
   * `silo delete` removes a workload's state on every node (docs/reconciler.md,
   * "Deleting"): each node that sees a spec disappear empties its
   * STATE_DIRECTORY once nothing of the workload runs here, so a later apply
   * of the same name starts empty wherever it is placed, not from whatever
   * an earlier holder left behind.
   */
  private wipeDeleted(specs: ReadonlyMap<string, WorkloadSpec>): void {
    if (this.knownSpecs !== null) {
      for (const name of this.knownSpecs) if (!specs.has(name)) this.pendingWipes.add(name);
    }
    this.knownSpecs = new Set(specs.keys());
    for (const name of [...this.pendingWipes]) {
      if (specs.has(name)) {
        // Applied again before the wipe ran: its state is the new spec's business.
        this.pendingWipes.delete(name);
        continue;
      }
      const running = this.options.runner.status(name);
      if (this.slots.get(name)?.task || (running && RUNNING_PHASES.has(running.phase))) continue;
      this.pendingWipes.delete(name);
      this.options.snapshots.discardState(name).then(
        (had) => {
          if (had)
            this.logger.info(
              { workload: name },
              'workload deleted: its STATE_DIRECTORY on this node emptied',
            );
        },
        (err: unknown) => {
          this.logger.warn(
            { workload: name, err: (err as Error).message },
            'emptying a deleted workload failed; retrying',
          );
          this.pendingWipes.add(name);
        },
      );
    }
  }

  /** The lease a workload needs: the run window (fence_after) plus its stop budget (rule O2). */
  private leaseWant(spec: WorkloadSpec): LeaseWant {
    const stopBudgetMs = spec.stopTimeoutMs + this.timing.fenceSlackMs;
    const windowMs = this.options.leases.windowFor?.(this.timing.fenceAfterMs) ?? this.timing.fenceAfterMs;
    return { durationMs: windowMs + stopBudgetMs, stopBudgetMs };
  }

  private leaseSummary(workload: string): ReconcileStatus['workloads'][number]['lease'] {
    if (!this.options.leases.wanted().includes(workload)) return null;
    const status = this.options.leases.status(workload);
    return {
      ballot: status.ballot,
      held: status.held,
      mayRun: status.mayRun,
      configVersion: status.configVersion,
      quorum: status.quorum,
      grantedBy: status.grantedBy,
      missing: status.missing.map((m) => `${m.witness}: ${m.said}`),
    };
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
      leases: this.leaseViews(specs),
      witnessConfigured: this.options.leases.configured(),
      lastHeard: source.lastHeard(),
      listeningSince: Math.min(source.listeningSince(), now),
      timing: this.timing,
      maxParallel: this.options.maxParallel ?? 1,
    };
  }

  private leaseViews(specs: readonly WorkloadSpec[]): Map<string, LeaseView> {
    const views = new Map<string, LeaseView>();
    const wanted = new Set(this.options.leases.wanted());
    for (const spec of specs) {
      if (ownershipClass(spec) !== 'exclusive' || !wanted.has(spec.name)) continue;
      const status = this.options.leases.status(spec.name);
      views.set(spec.name, { mayRun: status.mayRun, why: describeLease(status) });
    }
    return views;
  }

  private dispatch(action: LocalAction, spec: WorkloadSpec | undefined, view: LocalView): void {
    const name = action.workload;
    if (action.kind === 'wait' || action.kind === 'wait-for-snapshot') {
      this.waits.set(name, action.reason);
      return;
    }
    // Our `pending` report is not a leftover while we are the reporter.
    if (action.kind === 'forget' && this.pendingReports.has(name)) return;
    const urgent = URGENT.has(action.kind);
    const slot = this.slotFor(name);
    if (slot.task !== null) {
      if (urgent && !slot.task.urgent) slot.task.controller.abort(new Error(`preempted by ${action.kind}`));
      return; // decided again on the pass after the task ends
    }
    if (!urgent && this.now() < slot.retryAt) return;
    this.run(slot, action.kind, urgent, (signal) => this.execute(slot, action, spec, view, signal));
  }

  private run(slot: Slot, kind: string, urgent: boolean, work: (signal: AbortSignal) => Promise<void>): void {
    const controller = new AbortController();
    const task: Task = { kind, urgent, controller, done: Promise.resolve() };
    // A checkpoint runs beside the placement actions' retry schedule: its
    // failure shows in the reason but delays nothing else.
    const background = kind === 'checkpoint';
    slot.task = task;
    task.done = (async () => {
      try {
        await work(controller.signal);
        this.metrics.actions.inc({ kind, result: 'ok' });
        if (!background || slot.error?.what === kind) slot.error = null;
        if (!background) {
          slot.failures = 0;
          slot.retryAt = 0;
        }
      } catch (err) {
        if (controller.signal.aborted) {
          this.metrics.actions.inc({ kind, result: 'aborted' });
          this.logger.info(
            { workload: slot.name, kind, why: String(controller.signal.reason) },
            'action aborted',
          );
        } else {
          const message = (err as Error).message ?? String(err);
          this.metrics.actions.inc({ kind, result: 'error' });
          slot.error = { what: kind, message };
          let backoff = 0;
          if (!background) {
            slot.failures++;
            backoff = Math.min(30_000, 500 * 2 ** Math.min(slot.failures - 1, 6));
            slot.retryAt = this.now() + backoff;
          }
          this.logger.warn({ workload: slot.name, kind, err: message, retryInMs: backoff }, 'action failed');
        }
      } finally {
        slot.task = null;
        if (!slot.dropped) this.writeSlot(slot);
        this.schedule();
      }
    })();
  }

  private execute(
    slot: Slot,
    action: LocalAction,
    spec: WorkloadSpec | undefined,
    view: LocalView,
    signal: AbortSignal,
  ): Promise<void> {
    switch (action.kind) {
      case 'claim':
        return this.claim(slot, requireSpec(spec, action), action.restore, action.takeoverFrom, signal);
      case 'start':
        return this.startClaimed(slot, requireSpec(spec, action), view, signal);
      case 'restart':
        return this.restart(slot, requireSpec(spec, action), action.fromRevision, signal);
      case 'stop-and-release':
        slot.release = { reason: `moving to ${action.to}: ${action.reason}`, snapshot: action.snapshot };
        return this.release(slot);
      case 'fence-stop':
        this.metrics.leaseFences.inc();
        this.logger.warn({ workload: slot.name, reason: action.reason }, 'witness lease lost: fencing');
        slot.release = { reason: `fenced: ${action.reason}`, snapshot: action.snapshot };
        return this.release(slot);
      case 'yield':
        return this.letGo(slot, action.reason);
      case 'stop-and-forget':
      case 'forget':
        return this.letGo(slot, action.reason);
      case 'wait':
      case 'wait-for-snapshot':
        return Promise.resolve();
    }
  }

  // ---- actions ----------------------------------------------------------------

  /** Write `pulling` first, then fetch and verify the image and the state. */
  private async claim(
    slot: Slot,
    spec: WorkloadSpec,
    restore: Restore,
    takeoverFrom: string | null,
    signal: AbortSignal,
  ): Promise<void> {
    slot.claim = { revision: spec.revision, restore, takeoverFrom, prepared: false };
    slot.release = null;
    slot.note = null;
    slot.checkpoint = null;
    slot.lastCheckpointAt = null;
    slot.error = null;
    slot.mirrored = null;
    const why = takeoverFrom === null ? 'claimed' : `claimed: taking over from ${takeoverFrom} (dead)`;
    slot.authored = blankStatus(this.now(), 'pulling', spec.revision, `${why}; ${describeRestore(restore)}`);
    this.writeSlot(slot);
    this.logger.info(
      { workload: spec.name, revision: spec.revision, restore: restore.from, takeoverFrom },
      why,
    );
    await this.prepare(slot, spec, signal);
  }

  /** The pull of a claim: image, then state. False when the image was refused (the workload failed). */
  private async prepare(slot: Slot, spec: WorkloadSpec, signal: AbortSignal): Promise<boolean> {
    const claim = slot.claim;
    if (claim === null) throw new Error('no claim to prepare');
    try {
      await this.options.images.ensure(spec, this.imageHints(spec), signal);
    } catch (err) {
      if (!(err instanceof ImageRefusedError)) throw err;
      this.metrics.actions.inc({ kind: 'image', result: 'refused' });
      this.logger.error({ workload: spec.name, reason: err.message }, 'image refused');
      slot.claim = null;
      slot.authored = blankStatus(this.now(), 'failed', spec.revision, err.message);
      return false;
    }
    signal.throwIfAborted();
    await this.ensureStopped(slot.name, 'making way for a restore');
    await this.restoreState(slot, spec, claim.restore, signal);
    claim.prepared = true;
    if (slot.authored?.phase === 'pulling') {
      slot.authored = {
        ...slot.authored,
        reason: joinReason(slot.note, 'image and state ready; claim settling'),
      };
    }
    return true;
  }

  private async restoreState(
    slot: Slot,
    spec: WorkloadSpec,
    restore: Restore,
    signal: AbortSignal,
  ): Promise<void> {
    const { snapshots } = this.options;
    const name = spec.name;
    switch (restore.from) {
      case 'none':
      case 'local':
        this.metrics.restores.inc({ source: restore.from });
        return;
      case 'snapshot': {
        let from: string | null;
        try {
          from = await this.keeper.withPin(restore.snapshot.digest, () =>
            snapshots.fetch(restore.snapshot.digest, this.snapshotSources(name, restore.nodeId), {
              anyPeer: true,
              signal,
            }),
          );
        } catch (err) {
          if (signal.aborted || !this.restoreWaitOver(slot, spec)) throw this.waiting(err, slot, spec);
          // Nobody reachable has the released snapshot (its node is cut off):
          // the workload's own policy says how long that may keep it down.
          const what = `${restore.nodeId}'s released snapshot ${shortDigest(restore.snapshot.digest)} could not be fetched (${(err as Error).message})`;
          await this.restoreFallback(
            slot,
            spec,
            restore.nodeId,
            what,
            this.keeper.history.olderThan(name, restore.snapshot),
            signal,
          );
          return;
        }
        signal.throwIfAborted();
        await snapshots.restore(name, restore.snapshot);
        slot.note = `state restored from ${restore.nodeId}'s snapshot ${shortDigest(restore.snapshot.digest)}${from === null ? '' : ` (fetched from ${from})`}`;
        this.metrics.restores.inc({ source: 'snapshot' });
        return;
      }
      case 'checkpoint': {
        const candidates = [restore.snapshot, ...this.keeper.history.olderThan(name, restore.snapshot)];
        const sources = this.snapshotSources(name, restore.nodeId);
        const failures: string[] = [];
        for (const ref of candidates) {
          signal.throwIfAborted();
          try {
            const from = await this.keeper.withPin(ref.digest, () =>
              snapshots.fetch(ref.digest, sources, { anyPeer: true, signal }),
            );
            signal.throwIfAborted();
            await snapshots.restore(name, ref);
            const lastHeard = this.options.lease.lastHeard().get(restore.nodeId) ?? this.now();
            const windowS = Math.max(0, Math.round((lastHeard - ref.at) / 1000));
            const older =
              ref.digest === restore.snapshot.digest ? '' : ' (an older one: the newest was not replicated)';
            slot.note = `took over from ${restore.nodeId}: restored its checkpoint of ${new Date(ref.at).toISOString()}${older}${from === null ? '' : ` fetched from ${from}`}; writes after it are lost (about ${windowS} s)`;
            this.metrics.restores.inc({ source: 'checkpoint' });
            this.metrics.dataLossWindow.observe(windowS);
            this.logger.warn(
              { workload: name, from: restore.nodeId, digest: ref.digest, lostSeconds: windowS },
              slot.note,
            );
            return;
          } catch (err) {
            if (signal.aborted) throw err;
            failures.push(`${shortDigest(ref.digest)}: ${(err as Error).message}`);
          }
        }
        const what = `no checkpoint of ${restore.nodeId} could be fetched (${failures.join('; ')})`;
        if (!this.restoreWaitOver(slot, spec)) throw this.waiting(new Error(what), slot, spec);
        await this.restoreFallback(slot, spec, restore.nodeId, what, [], signal);
        return;
      }
      case 'empty': {
        await snapshots.restoreEmpty(name);
        slot.note = `took over from ${restore.lostStateOf} with no checkpoint: its state is lost; started with an empty STATE_DIRECTORY`;
        this.metrics.restores.inc({ source: 'empty' });
        this.logger.error({ workload: name, lostStateOf: restore.lostStateOf }, slot.note);
        return;
      }
    }
  }

  /** The workload's restore wait (spec `restoreWaitMs`) has passed since this claim began. */
  private restoreWaitOver(slot: Slot, spec: WorkloadSpec): boolean {
    const since = slot.authored?.phase === 'pulling' ? slot.authored.since : this.now();
    return this.now() - since >= (spec.restoreWaitMs ?? DEFAULT_RESTORE_WAIT_MS);
  }

  /** A restore failure while the wait lasts: says how long is left (shown as the reason). */
  private waiting(err: unknown, slot: Slot, spec: WorkloadSpec): Error {
    const since = slot.authored?.phase === 'pulling' ? slot.authored.since : this.now();
    const leftS = Math.max(
      0,
      Math.ceil(((spec.restoreWaitMs ?? DEFAULT_RESTORE_WAIT_MS) - (this.now() - since)) / 1000),
    );
    return new Error(
      `${(err as Error).message}; waiting up to ${leftS} s more for it (restore_wait), then starting from an older checkpoint or empty`,
    );
  }

  /**
   * The restore wait is over and the state the workload should start from
   * is out of reach: the newest of `older` that can be fetched, else empty.
   * Either way the loss is reported, never silent.
   */
  private async restoreFallback(
    slot: Slot,
    spec: WorkloadSpec,
    from: string,
    what: string,
    older: readonly SnapshotRef[],
    signal: AbortSignal,
  ): Promise<void> {
    const { snapshots } = this.options;
    const name = spec.name;
    for (const ref of older) {
      signal.throwIfAborted();
      try {
        await this.keeper.withPin(ref.digest, () =>
          snapshots.fetch(ref.digest, this.snapshotSources(name, from), { anyPeer: true, signal }),
        );
        signal.throwIfAborted();
        await snapshots.restore(name, ref);
        slot.note = `${what}; after restore_wait started from an older checkpoint of ${new Date(ref.at).toISOString()}: writes after it are lost`;
        this.metrics.restores.inc({ source: 'checkpoint' });
        this.logger.error({ workload: name, from, digest: ref.digest }, slot.note);
        return;
      } catch (err) {
        if (signal.aborted) throw err;
      }
    }
    await snapshots.restoreEmpty(name);
    slot.note = `${what}; after restore_wait started with an empty STATE_DIRECTORY: ${from}'s state is lost`;
    this.metrics.restores.inc({ source: 'empty' });
    this.logger.error({ workload: name, from }, slot.note);
  }

  /** The claim settled: run the process (after the pull, if it has not finished or must be redone). */
  private async startClaimed(
    slot: Slot,
    spec: WorkloadSpec,
    view: LocalView,
    signal: AbortSignal,
  ): Promise<void> {
    if (slot.claim === null || !slot.claim.prepared || slot.claim.revision !== spec.revision) {
      // The pull failed (or is from a previous agent life, or the runner lost
      // the image): plan it again from the current view, which may have
      // changed since the claim (the old holder came back, released a newer
      // snapshot, ...). If this node would not claim it now, let go.
      const plan = this.replan(view, spec.name);
      if (plan === null) {
        await this.letGo(slot, 'the claim is no longer what placement says: dropped');
        return;
      }
      slot.claim = { revision: spec.revision, ...plan, prepared: false };
      if (!(await this.prepare(slot, spec, signal))) return;
    }
    signal.throwIfAborted();
    if (ownershipClass(spec) === 'exclusive') {
      // Re-checked right before the process starts (rule O1): the pull took
      // its time, and the lease may have ended meanwhile.
      const lease = this.options.leases.status(spec.name);
      if (!lease.mayRun) throw new Error(`witness lease not held at the start (${describeLease(lease)})`);
    }
    const since = this.now();
    slot.authored = null;
    slot.mirrored = { phase: 'starting', since };
    const status = await this.options.runner.ensureRunning(spec, { reason: 'claimed' });
    slot.claim = null;
    this.logger.info({ workload: spec.name, revision: spec.revision, phase: status.phase }, 'started');
  }

  private async restart(
    slot: Slot,
    spec: WorkloadSpec,
    fromRevision: number,
    signal: AbortSignal,
  ): Promise<void> {
    // The new image first: the old revision keeps running while it is fetched.
    await this.options.images.ensure(spec, this.imageHints(spec), signal);
    signal.throwIfAborted();
    const current = this.desired(slot) ?? blankStatus(this.now(), 'starting', spec.revision, null);
    const since = this.now();
    slot.authored = {
      ...current,
      phase: 'starting',
      since,
      revision: spec.revision,
      reason: `restarting: spec revision ${fromRevision} → ${spec.revision}`,
    };
    this.writeSlot(slot);
    try {
      await this.options.runner.ensureRunning(spec, {
        reason: `spec revision ${fromRevision} → ${spec.revision}`,
      });
    } finally {
      slot.authored = null;
      slot.mirrored = { phase: 'starting', since };
    }
  }

  /**
   * Stop the process, snapshot STATE_DIRECTORY (persistent), write
   * `released {snapshot}`. Resumed by later passes until it completes: a
   * node stuck in `stopping` would block the move for good.
   */
  private async release(slot: Slot): Promise<void> {
    const release = slot.release;
    if (release === null) return;
    const current = this.desired(slot);
    const revision = current?.revision ?? this.specOf(slot.name)?.revision ?? 0;
    if (slot.authored?.phase !== 'stopping') {
      slot.authored = {
        ...(current ?? blankStatus(this.now(), 'stopping', revision, null)),
        phase: 'stopping',
        since: this.now(),
        reason: release.reason,
      };
      this.writeSlot(slot);
    }
    slot.claim = null;
    const stopped = await this.options.runner.stop(slot.name, { reason: release.reason });
    const snapshot = release.snapshot
      ? await this.options.snapshots.capture(slot.name, { live: false })
      : null;
    slot.authored = {
      phase: 'released',
      since: this.now(),
      revision,
      restarts: stopped?.restarts ?? slot.authored.restarts,
      lastExit: stopped?.lastExit ?? slot.authored.lastExit,
      reason: release.reason,
      sandbox: stopped?.sandbox ?? slot.authored.sandbox,
      scratchUsedMb: stopped?.scratchUsedMb ?? slot.authored.scratchUsedMb,
      snapshot,
    };
    slot.release = null;
    slot.checkpoint = null;
    slot.mirrored = null;
    this.logger.info(
      { workload: slot.name, reason: release.reason, snapshot: snapshot?.digest ?? null },
      'released',
    );
  }

  /**
   * What this node would claim `workload` with if it had no entry for it:
   * decideLocalActions on the same view minus our own entry. Null when it
   * would not claim it at all.
   */
  private replan(view: LocalView, workload: string): Pick<ClaimState, 'restore' | 'takeoverFrom'> | null {
    const observed = new Map(view.observed);
    const mine = observed.get(this.nodeId);
    if (mine?.has(workload)) {
      const without = new Map(mine);
      without.delete(workload);
      observed.set(this.nodeId, without);
    }
    const action = decideLocalActions(this.nodeId, { ...view, observed }).find(
      (a) => a.workload === workload,
    );
    return action?.kind === 'claim' ? { restore: action.restore, takeoverFrom: action.takeoverFrom } : null;
  }

  /** Yield, forget, spec removed: stop whatever runs here, drop our entry, keep no claim. */
  private async letGo(slot: Slot, reason: string): Promise<void> {
    await this.ensureStopped(slot.name, reason);
    this.dropSlot(slot);
    this.logger.info({ workload: slot.name, reason }, 'let go');
  }

  private async checkpoint(slot: Slot, signal: AbortSignal): Promise<void> {
    const ref = await this.options.snapshots.capture(slot.name, { live: true, signal });
    slot.lastCheckpointAt = this.now();
    // Only a changed state is announced: the document should not churn for nothing.
    if (slot.checkpoint?.digest === ref.digest) {
      this.metrics.checkpoints.inc({ result: 'unchanged' });
      return;
    }
    const status = this.options.runner.status(slot.name);
    if (slot.authored !== null || status?.phase !== 'running') return; // it stopped meanwhile
    slot.checkpoint = ref;
    this.metrics.checkpoints.inc({ result: 'new' });
    this.writeSlot(slot);
  }

  private async ensureStopped(name: string, reason: string): Promise<void> {
    const status = this.options.runner.status(name);
    if (status !== null && RUNNING_PHASES.has(status.phase)) await this.options.runner.stop(name, { reason });
  }

  // ---- periodic duties ------------------------------------------------------

  private resumeReleases(now: number): void {
    for (const slot of this.slots.values()) {
      if (slot.release === null || slot.task !== null || now < slot.retryAt) continue;
      this.run(slot, 'release', true, () => this.release(slot));
    }
  }

  private scheduleCheckpoints(now: number, specs: ReadonlyMap<string, WorkloadSpec>): void {
    const interval = this.checkpointIntervalMs;
    if (interval <= 0) return;
    for (const slot of this.slots.values()) {
      if (slot.task !== null || slot.authored !== null || now < slot.retryAt) continue;
      if (specs.get(slot.name)?.scratchClass !== 'persistent') continue;
      if (this.options.runner.status(slot.name)?.phase !== 'running') continue;
      const since = slot.lastCheckpointAt ?? slot.mirrored?.since ?? now;
      if (now - since < interval) continue;
      this.run(slot, 'checkpoint', false, (signal) =>
        this.checkpoint(slot, signal).catch((err: unknown) => {
          this.metrics.checkpoints.inc({ result: 'error' });
          slot.lastCheckpointAt = this.now();
          throw err;
        }),
      );
    }
  }

  /** Snapshots this loop's slots hold: kept by garbage collection. */
  private *heldDigests(): Iterable<string> {
    for (const slot of this.slots.values()) {
      if (slot.checkpoint) yield slot.checkpoint.digest;
      if (slot.authored?.snapshot) yield slot.authored.snapshot.digest;
    }
  }

  // ---- pending reports --------------------------------------------------------

  private writePendingReports(evaluation: ViewEvaluation, specs: ReadonlyMap<string, WorkloadSpec>): void {
    for (const name of this.pendingReports) {
      const assignment = evaluation.placement.assignments.get(name);
      const spec = specs.get(name);
      if (!assignment || !('pending' in assignment) || !spec) continue;
      const slot = this.slotFor(name);
      if (slot.task !== null || (slot.authored !== null && slot.authored.phase !== 'pending')) continue;
      if (slot.authored === null && this.options.runner.status(name) !== null) continue;
      const reason = `not placed: ${assignment.pending}`;
      if (slot.authored?.reason === reason && slot.authored.revision === spec.revision) continue;
      slot.authored = blankStatus(this.now(), 'pending', spec.revision, reason);
    }
    for (const slot of [...this.slots.values()]) {
      if (slot.authored?.phase === 'pending' && slot.task === null && !this.pendingReports.has(slot.name)) {
        this.dropSlot(slot);
      }
    }
  }

  // ---- observed statuses ---------------------------------------------------------

  private onRunnerStatus(status: RunnerStatus): void {
    const slot = this.slots.get(status.name);
    if (!this.running || slot === undefined || slot.authored !== null) return;
    this.writeSlot(slot);
    this.schedule();
  }

  /** The status this node should show for the workload, or null when it has nothing to say. */
  private desired(slot: Slot): ObservedStatus | null {
    return slotStatus(slot, this.options.runner.status(slot.name), this.now());
  }

  private writeSlot(slot: Slot): void {
    if (slot.dropped) return;
    const found = this.desired(slot);
    if (found === null) return;
    const wanted = this.options.leases.wanted().includes(slot.name);
    const desired = withEpoch(found, wanted ? this.options.leases.status(slot.name) : null);
    const current = this.options.observed.get(this.nodeId, slot.name);
    if (current !== undefined && sameObservedStatus(current, desired)) return;
    try {
      this.options.observed.setStatus(this.nodeId, slot.name, desired);
    } catch (err) {
      this.logger.error({ err, workload: slot.name }, 'cannot write observed status');
    }
  }

  // ---- slots -------------------------------------------------------------------

  private slotFor(name: string): Slot {
    let slot = this.slots.get(name);
    if (slot === undefined) {
      slot = newSlot(name);
      this.slots.set(name, slot);
    }
    return slot;
  }

  private dropSlot(slot: Slot): void {
    slot.dropped = true;
    if (this.slots.get(slot.name) === slot) this.slots.delete(slot.name);
    try {
      this.options.observed.remove(this.nodeId, slot.name);
    } catch (err) {
      this.logger.error({ err, workload: slot.name }, 'cannot remove observed status');
    }
  }

  /**
   * At start-up this node's entries describe a previous agent life whose
   * processes are gone (reaped): a claim is dropped, a running workload is
   * recorded as released (persistent: with a snapshot of its state, so it
   * stays this node's and restarts from it), the rest is kept as it is.
   */
  private async adopt(): Promise<void> {
    const specs = new Map(this.options.workloads.list().map((spec) => [spec.name, spec]));
    for (const [name, status] of this.options.observed.listForNode(this.nodeId)) {
      const slot = this.slotFor(name);
      const spec = specs.get(name);
      if (status.phase === 'pulling' || (spec === undefined && RUNNING_PHASES.has(status.phase))) {
        this.dropSlot(slot);
        continue;
      }
      if (status.phase === 'starting' || status.phase === 'running' || status.phase === 'stopping') {
        let snapshot: SnapshotRef | null = null;
        if (spec?.scratchClass === 'persistent') {
          try {
            snapshot = await this.options.snapshots.capture(name, { live: false });
          } catch (err) {
            this.logger.error(
              { err, workload: name },
              'cannot snapshot the state left by the previous agent',
            );
          }
        }
        slot.authored = {
          ...status,
          phase: 'released',
          since: this.now(),
          reason: 'agent restarted: nothing runs here any more',
          snapshot,
        };
      } else {
        slot.authored = status;
      }
      this.writeSlot(slot);
    }
  }

  // ---- helpers -------------------------------------------------------------------

  private specOf(name: string): WorkloadSpec | undefined {
    return this.options.workloads.list().find((spec) => spec.name === name);
  }

  /** Nodes that ran this image (their entry is at a revision whose spec names it), live ones first. */
  /**
   * Nodes to ask for `spec`'s image: those whose store holds it (the
   * observed document's `images` record, connected to us or not), then those
   * that ran it; dead ones last. Peers we are merely connected to come after
   * these (fetchFromPeers).
   */
  private imageHints(spec: WorkloadSpec): string[] {
    const specs = new Map(this.options.workloads.list().map((s) => [s.name, s]));
    const liveness = this.options.lease.liveness(this.now());
    const nodes = new Set<string>(this.options.observed.holdersOf(spec.imageDigest));
    nodes.delete(this.nodeId);
    for (const [nodeId, statuses] of this.options.observed.listAll()) {
      if (nodeId === this.nodeId) continue;
      for (const [name, status] of statuses) {
        const other = specs.get(name);
        if (
          other?.imageDigest === spec.imageDigest &&
          other.revision === status.revision &&
          RAN_PHASES.has(status.phase)
        ) {
          nodes.add(nodeId);
        }
      }
    }
    return [...nodes].sort(
      (a, b) => Number(livenessOf(liveness, a) === 'dead') - Number(livenessOf(liveness, b) === 'dead'),
    );
  }

  /**
   * Where to look for a snapshot of `holderId`'s: the holder itself (first
   * while it is not dead in our view, else last: a dial to a dead node can
   * take long), the other nodes in the workload's rendezvous order (the
   * replicas come first there).
   */
  private snapshotSources(workload: string, holderId: string): string[] {
    const others = this.options
      .activeNodes()
      .map((record) => record.nodeId)
      .filter((id) => id !== holderId && id !== this.nodeId);
    const ordered = rankNodes(workload, others);
    const holderDead = livenessOf(this.options.lease.liveness(this.now()), holderId) === 'dead';
    return holderDead ? [...ordered, holderId] : [holderId, ...ordered];
  }

  private *checkpointAges(): Iterable<[string, number]> {
    const now = this.now();
    for (const slot of this.slots.values()) {
      if (slot.authored === null && slot.checkpoint !== null) {
        yield [slot.name, Math.max(0, (now - slot.checkpoint.at) / 1000)];
      }
    }
  }
}

export interface ReconcileStatus {
  nodeId: string;
  leaseSource: string;
  workloads: {
    name: string;
    /** Where placement puts it (a node id, or "pending: <reason>"). */
    assignment: string | null;
    /** This node's current placement action for it. */
    action: string | null;
    /** Why this node waits, when it does. */
    waiting: string | null;
    /** The action running for it now. */
    task: string | null;
    /** The last failed action, retried later. */
    error: string | null;
    checkpoint: SnapshotRef | null;
    /** This node's witness lease of it (exclusive workloads it claims or runs), else null. */
    lease: {
      ballot: number;
      held: boolean;
      mayRun: boolean;
      configVersion: number;
      quorum: number;
      grantedBy: string[];
      /** "witness: what it said" for each witness without a live grant. */
      missing: string[];
    } | null;
  }[];
}

/** One line on a lease for reasons and logs: who granted, or what is missing. */
export function describeLease(status: LeaseStatus): string {
  if (status.configVersion === 0) return 'no witness configuration';
  const missing = status.missing.map((m) => `${m.witness}: ${m.said}`).join('; ');
  if (status.mayRun) return `ballot ${status.ballot} granted by ${status.grantedBy.join(', ')}`;
  if (status.held) {
    // Grants that are still live but about to end: their renewals have not come back (yet).
    const why = missing === '' ? `no renewal back from ${status.grantedBy.join(', ')} in time` : missing;
    return `ballot ${status.ballot} ends within the stop budget; renewal missing (${why})`;
  }
  return `ballot ${status.ballot}: ${status.grantedBy.length} of ${status.quorum} needed grants (${missing})`;
}

function requireSpec(spec: WorkloadSpec | undefined, action: LocalAction): WorkloadSpec {
  if (spec === undefined) throw new Error(`${action.kind} of ${action.workload}: the spec is gone`);
  return spec;
}

function describeRestore(restore: Restore): string {
  switch (restore.from) {
    case 'none':
      return 'volatile: no state to restore';
    case 'local':
      return 'state: this node’s STATE_DIRECTORY';
    case 'snapshot':
      return `state: ${restore.nodeId}'s released snapshot ${shortDigest(restore.snapshot.digest)}`;
    case 'checkpoint':
      return `state: ${restore.nodeId}'s checkpoint ${shortDigest(restore.snapshot.digest)} (writes after it are lost)`;
    case 'empty':
      return `state: none (${restore.lostStateOf} left no checkpoint; its state is lost)`;
  }
}
