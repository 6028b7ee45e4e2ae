import type { Logger } from 'pino';
import type { ObservedStatus, WorkloadSpec } from '../state/schemas.js';
import { ImageRefusedError, type ImageSource } from './image-fetch.js';
import type { LoopMetrics } from './loop-metrics.js';
import type { WorkloadLeases } from './loop-options.js';
import { describeLease, describeRestore } from './loop-status.js';
import { decideLocalActions, type LocalView, ownershipClass, type Restore } from './placement/index.js';
import type { ServiceRunner } from './service-runner.js';
import type { ClaimState, Slot } from './slot.js';
import { blankStatus, joinReason, RUNNING_PHASES } from './slot-status.js';
import type { StateSnapshots } from './snapshots.js';
import type { StateRestorer } from './state-restorer.js';

export interface SlotActionsOptions {
  nodeId: string;
  runner: ServiceRunner;
  images: ImageSource;
  snapshots: StateSnapshots;
  leases: Pick<WorkloadLeases, 'status'>;
  restorer: Pick<StateRestorer, 'restore'>;
  metrics: Pick<LoopMetrics, 'actions' | 'checkpoints'>;
  logger: Logger;
  /** The reconcile loop's clock. */
  now: () => number;
  /** The loop's bookkeeping of this node's observed entries. */
  slots: {
    /** Writes the slot's status to the observed document when it changed. */
    write(slot: Slot): void;
    /** Forgets the slot and removes this node's entry for it. */
    drop(slot: Slot): void;
    /** The status this node should show for the slot, or null. */
    desired(slot: Slot): ObservedStatus | null;
  };
  specOf(name: string): WorkloadSpec | undefined;
  /** Nodes to ask for a spec's image, best first. */
  imageHints(spec: WorkloadSpec): string[];
}

/**
 * What the reconcile loop does for one workload once placement decided
 * (docs/reconciler.md): claim (write `pulling`, fetch and verify the image,
 * put the state in place), start once the claim settled (the witness lease
 * re-checked right before the process starts, rule O1), restart on a new
 * revision, release (stop, snapshot, `released`), let go, checkpoint. Each
 * runs as the slot's one task (SlotTasks); a failure throws and is retried.
 */
export class SlotActions {
  private readonly options: SlotActionsOptions;

  constructor(options: SlotActionsOptions) {
    this.options = options;
  }

  /** Write `pulling` first, then fetch and verify the image and the state. */
  async claim(
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
    slot.authored = blankStatus(
      this.options.now(),
      'pulling',
      spec.revision,
      `${why}; ${describeRestore(restore)}`,
    );
    this.options.slots.write(slot);
    this.options.logger.info(
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
      await this.options.images.ensure(spec, this.options.imageHints(spec), signal);
    } catch (err) {
      if (!(err instanceof ImageRefusedError)) throw err;
      this.options.metrics.actions.inc({ kind: 'image', result: 'refused' });
      this.options.logger.error({ workload: spec.name, reason: err.message }, 'image refused');
      slot.claim = null;
      slot.authored = blankStatus(this.options.now(), 'failed', spec.revision, err.message);
      return false;
    }
    signal.throwIfAborted();
    await this.ensureStopped(slot.name, 'making way for a restore');
    await this.options.restorer.restore(slot, spec, claim.restore, signal);
    claim.prepared = true;
    if (slot.authored?.phase === 'pulling') {
      slot.authored = {
        ...slot.authored,
        reason: joinReason(slot.note, 'image and state ready; claim settling'),
      };
    }
    return true;
  }

  /** The claim settled: run the process (after the pull, if it has not finished or must be redone). */
  async startClaimed(slot: Slot, spec: WorkloadSpec, view: LocalView, signal: AbortSignal): Promise<void> {
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
    const since = this.options.now();
    slot.authored = null;
    slot.mirrored = { phase: 'starting', since };
    const status = await this.options.runner.ensureRunning(spec, { reason: 'claimed' });
    slot.claim = null;
    this.options.logger.info(
      { workload: spec.name, revision: spec.revision, phase: status.phase },
      'started',
    );
  }

  async restart(slot: Slot, spec: WorkloadSpec, fromRevision: number, signal: AbortSignal): Promise<void> {
    // The new image first: the old revision keeps running while it is fetched.
    await this.options.images.ensure(spec, this.options.imageHints(spec), signal);
    signal.throwIfAborted();
    const current =
      this.options.slots.desired(slot) ?? blankStatus(this.options.now(), 'starting', spec.revision, null);
    const since = this.options.now();
    slot.authored = {
      ...current,
      phase: 'starting',
      since,
      revision: spec.revision,
      reason: `restarting: spec revision ${fromRevision} → ${spec.revision}`,
    };
    this.options.slots.write(slot);
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
  async release(slot: Slot): Promise<void> {
    const release = slot.release;
    if (release === null) return;
    const current = this.options.slots.desired(slot);
    const revision = current?.revision ?? this.options.specOf(slot.name)?.revision ?? 0;
    if (slot.authored?.phase !== 'stopping') {
      slot.authored = {
        ...(current ?? blankStatus(this.options.now(), 'stopping', revision, null)),
        phase: 'stopping',
        since: this.options.now(),
        reason: release.reason,
      };
      this.options.slots.write(slot);
    }
    slot.claim = null;
    const stopped = await this.options.runner.stop(slot.name, { reason: release.reason });
    const snapshot = release.snapshot
      ? await this.options.snapshots.capture(slot.name, { live: false })
      : null;
    slot.authored = {
      phase: 'released',
      since: this.options.now(),
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
    this.options.logger.info(
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
    const mine = observed.get(this.options.nodeId);
    if (mine?.has(workload)) {
      const without = new Map(mine);
      without.delete(workload);
      observed.set(this.options.nodeId, without);
    }
    const action = decideLocalActions(this.options.nodeId, { ...view, observed }).find(
      (a) => a.workload === workload,
    );
    return action?.kind === 'claim' ? { restore: action.restore, takeoverFrom: action.takeoverFrom } : null;
  }

  /** Yield, forget, spec removed: stop whatever runs here, drop our entry, keep no claim. */
  async letGo(slot: Slot, reason: string): Promise<void> {
    await this.ensureStopped(slot.name, reason);
    this.options.slots.drop(slot);
    this.options.logger.info({ workload: slot.name, reason }, 'let go');
  }

  async checkpoint(slot: Slot, signal: AbortSignal): Promise<void> {
    const ref = await this.options.snapshots.capture(slot.name, { live: true, signal });
    slot.lastCheckpointAt = this.options.now();
    // Only a changed state is announced: the document should not churn for nothing.
    if (slot.checkpoint?.digest === ref.digest) {
      this.options.metrics.checkpoints.inc({ result: 'unchanged' });
      return;
    }
    const status = this.options.runner.status(slot.name);
    if (slot.authored !== null || status?.phase !== 'running') return; // it stopped meanwhile
    slot.checkpoint = ref;
    this.options.metrics.checkpoints.inc({ result: 'new' });
    this.options.slots.write(slot);
  }

  async ensureStopped(name: string, reason: string): Promise<void> {
    const status = this.options.runner.status(name);
    if (status !== null && RUNNING_PHASES.has(status.phase)) await this.options.runner.stop(name, { reason });
  }
}
