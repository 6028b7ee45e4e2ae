import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import type { ObservedView } from '../state/observed-view.js';
import type { WorkloadSpec } from '../state/schemas.js';
import { CheckpointHistory, replicaNodes } from './checkpoints.js';
import { type LocalView, livenessOf, type ViewEvaluation } from './placement/index.js';
import type { StateSnapshots } from './snapshots.js';

export interface SnapshotKeeperOptions {
  nodeId: string;
  snapshots: Pick<StateSnapshots, 'has' | 'fetch' | 'gc'>;
  observed: Pick<ObservedView, 'listAll'>;
  /** Checkpoint replicas per persistent workload besides its holder (services.replicas). */
  replicas: number;
  /** How often unreferenced snapshots are deleted, ms (0: never). */
  gcIntervalMs: number;
  now: () => number;
  logger: Logger;
  replicaPulls: Counter<'result'>;
  /** Digests the reconcile loop's own slots hold right now (checkpoints announced, snapshots being written). */
  heldDigests: () => Iterable<string>;
}

/** How long a failed replica pull of one checkpoint waits before it is tried again, ms. */
const REPLICA_RETRY_MS = 2000;

/**
 * The snapshot store's housekeeping for the reconcile loop
 * (docs/protocol.md, "Checkpoints and replicas"): the recent checkpoints
 * seen per workload (older ones to fall back to), copies of the
 * checkpoints of workloads held elsewhere when this node is one of their
 * replicas, pins on snapshots in use, and the garbage collection that
 * deletes what nothing references. The loop calls it once per pass; it
 * never touches a running service.
 */
export class SnapshotKeeper {
  /** The last few checkpoints of each workload, as the observed document announced them. */
  readonly history = new CheckpointHistory();
  private readonly options: SnapshotKeeperOptions;
  private readonly pinned = new Map<string, number>();
  private readonly pulls = new Map<string, Promise<void>>();
  private readonly retryAt = new Map<string, number>();
  private lastGcAt = 0;
  private gcRunning = false;

  constructor(options: SnapshotKeeperOptions) {
    this.options = options;
  }

  /** Runs `work` with `digest` kept from garbage collection meanwhile. */
  async withPin<T>(digest: string, work: () => Promise<T>): Promise<T> {
    this.pinned.set(digest, (this.pinned.get(digest) ?? 0) + 1);
    try {
      return await work();
    } finally {
      const left = (this.pinned.get(digest) ?? 1) - 1;
      if (left <= 0) this.pinned.delete(digest);
      else this.pinned.set(digest, left);
    }
  }

  /** Remembers every checkpoint the view's claims announce; forgets workloads that no longer exist. */
  record(evaluation: ViewEvaluation, workloads: ReadonlySet<string>): void {
    for (const [workload, claims] of evaluation.claims) {
      for (const claim of claims) if (claim.snapshot !== null) this.history.record(workload, claim.snapshot);
    }
    this.history.retain(workloads);
  }

  /** Keeps a copy of the checkpoints of workloads held elsewhere when this node is one of their replicas. */
  pullReplicas(view: LocalView, evaluation: ViewEvaluation, specs: ReadonlyMap<string, WorkloadSpec>): void {
    const { nodeId, replicas: count } = this.options;
    if (count <= 0) return;
    const live = view.nodes.map((n) => n.nodeId).filter((id) => livenessOf(view.liveness, id) !== 'dead');
    const now = view.now;
    for (const [key, at] of this.retryAt) if (at <= now) this.retryAt.delete(key);
    for (const [name, holder] of evaluation.holders) {
      if (specs.get(name)?.scratchClass !== 'persistent') continue;
      if (holder.nodeId === nodeId || holder.stale || holder.snapshot === null) continue;
      const replicas = replicaNodes(name, holder.nodeId, live, count);
      if (!replicas.includes(nodeId) || this.pulls.has(name)) continue;
      const ref = holder.snapshot;
      const key = `${name}\0${ref.digest}`;
      if ((this.retryAt.get(key) ?? 0) > now) continue;
      const sources = [holder.nodeId, ...replicas.filter((id) => id !== nodeId)];
      const pull = this.pullOne(name, ref.digest, sources, key).finally(() => this.pulls.delete(name));
      this.pulls.set(name, pull);
    }
  }

  private async pullOne(name: string, digest: string, sources: string[], key: string): Promise<void> {
    const { snapshots, logger } = this.options;
    if (await snapshots.has(digest)) return;
    try {
      const from = await this.withPin(digest, () => snapshots.fetch(digest, sources));
      this.options.replicaPulls.inc({ result: 'ok' });
      logger.debug({ workload: name, digest, from }, 'checkpoint replica pulled');
      this.retryAt.delete(key);
    } catch (err) {
      this.options.replicaPulls.inc({ result: 'error' });
      this.retryAt.set(key, this.options.now() + REPLICA_RETRY_MS);
      logger.debug({ workload: name, digest, err: (err as Error).message }, 'replica pull failed');
    }
  }

  /** Resolves once every replica pull under way has ended (the loop stops after them). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.pulls.values()]);
  }

  /** Starts a garbage collection when gcIntervalMs has passed since the last one and none runs. */
  maybeCollect(now: number): void {
    const interval = this.options.gcIntervalMs;
    if (interval <= 0 || this.gcRunning) return;
    if (this.lastGcAt === 0) this.lastGcAt = now;
    if (now - this.lastGcAt < interval) return;
    this.lastGcAt = now;
    this.gcRunning = true;
    void this.collect()
      .catch((err: unknown) => this.options.logger.warn({ err }, 'snapshot garbage collection failed'))
      .finally(() => {
        this.gcRunning = false;
      });
  }

  /**
   * Deletes stored snapshots nobody references: kept are the pinned ones,
   * the recent checkpoints of every workload, every snapshot the observed
   * document names, and what the loop's slots hold. Returns how many went.
   */
  async collect(): Promise<number> {
    const keep = new Set<string>(this.pinned.keys());
    for (const digest of this.history.digests()) keep.add(digest);
    for (const statuses of this.options.observed.listAll().values()) {
      for (const status of statuses.values()) if (status.snapshot) keep.add(status.snapshot.digest);
    }
    for (const digest of this.options.heldDigests()) keep.add(digest);
    return this.options.snapshots.gc(keep);
  }
}
