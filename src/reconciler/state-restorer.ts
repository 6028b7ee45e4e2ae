import type { Logger } from 'pino';
import { DEFAULT_RESTORE_WAIT_MS, type SnapshotRef, type WorkloadSpec } from '../state/schemas.js';
import type { LoopMetrics } from './loop-metrics.js';
import { shortDigest } from './peer-fetch.js';
import type { Restore } from './placement/index.js';
import type { Slot } from './slot.js';
import type { SnapshotKeeper } from './snapshot-keeper.js';
import type { StateSnapshots } from './snapshots.js';

export interface StateRestorerOptions {
  snapshots: StateSnapshots;
  /** Pins a snapshot while it is fetched; knows the older checkpoints of each workload. */
  keeper: Pick<SnapshotKeeper, 'withPin' | 'history'>;
  metrics: Pick<LoopMetrics, 'restores' | 'dataLossWindow'>;
  logger: Logger;
  /** The reconcile loop's clock. */
  now: () => number;
  /** When `nodeId` was last heard, on the loop's clock (the lease source's lastHeard). */
  lastHeard: (nodeId: string) => number | undefined;
  /** Nodes to ask for a snapshot of `holderId`'s, in order. */
  sources: (workload: string, holderId: string) => string[];
}

/**
 * Puts a claimed workload's STATE_DIRECTORY in place before it starts
 * (docs/reconciler.md, "Checkpoints and takeovers"): nothing for a volatile
 * one or one that stays here, the released snapshot of a planned move, the
 * newest fetchable checkpoint after a takeover. While the workload's
 * restore_wait lasts, a state out of reach fails the pull (retried, the
 * wait shown as the reason); after it, an older checkpoint or an empty
 * directory, the loss always reported (slot note, log, metrics).
 */
export class StateRestorer {
  private readonly options: StateRestorerOptions;

  constructor(options: StateRestorerOptions) {
    this.options = options;
  }

  async restore(slot: Slot, spec: WorkloadSpec, restore: Restore, signal: AbortSignal): Promise<void> {
    const { snapshots, keeper } = this.options;
    const name = spec.name;
    switch (restore.from) {
      case 'none':
      case 'local':
        this.options.metrics.restores.inc({ source: restore.from });
        return;
      case 'snapshot': {
        let from: string | null;
        try {
          from = await keeper.withPin(restore.snapshot.digest, () =>
            snapshots.fetch(restore.snapshot.digest, this.options.sources(name, restore.nodeId), {
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
            keeper.history.olderThan(name, restore.snapshot),
            signal,
          );
          return;
        }
        signal.throwIfAborted();
        await snapshots.restore(name, restore.snapshot);
        slot.note = `state restored from ${restore.nodeId}'s snapshot ${shortDigest(restore.snapshot.digest)}${from === null ? '' : ` (fetched from ${from})`}`;
        this.options.metrics.restores.inc({ source: 'snapshot' });
        return;
      }
      case 'checkpoint': {
        const candidates = [restore.snapshot, ...keeper.history.olderThan(name, restore.snapshot)];
        const sources = this.options.sources(name, restore.nodeId);
        const failures: string[] = [];
        for (const ref of candidates) {
          signal.throwIfAborted();
          try {
            const from = await keeper.withPin(ref.digest, () =>
              snapshots.fetch(ref.digest, sources, { anyPeer: true, signal }),
            );
            signal.throwIfAborted();
            await snapshots.restore(name, ref);
            const lastHeard = this.options.lastHeard(restore.nodeId) ?? this.options.now();
            const windowS = Math.max(0, Math.round((lastHeard - ref.at) / 1000));
            const older =
              ref.digest === restore.snapshot.digest ? '' : ' (an older one: the newest was not replicated)';
            slot.note = `took over from ${restore.nodeId}: restored its checkpoint of ${new Date(ref.at).toISOString()}${older}${from === null ? '' : ` fetched from ${from}`}; writes after it are lost (about ${windowS} s)`;
            this.options.metrics.restores.inc({ source: 'checkpoint' });
            this.options.metrics.dataLossWindow.observe(windowS);
            this.options.logger.warn(
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
        this.options.metrics.restores.inc({ source: 'empty' });
        this.options.logger.error({ workload: name, lostStateOf: restore.lostStateOf }, slot.note);
        return;
      }
    }
  }

  /** The workload's restore wait (spec `restoreWaitMs`) has passed since this claim began. */
  private restoreWaitOver(slot: Slot, spec: WorkloadSpec): boolean {
    const since = slot.authored?.phase === 'pulling' ? slot.authored.since : this.options.now();
    return this.options.now() - since >= (spec.restoreWaitMs ?? DEFAULT_RESTORE_WAIT_MS);
  }

  /** A restore failure while the wait lasts: says how long is left (shown as the reason). */
  private waiting(err: unknown, slot: Slot, spec: WorkloadSpec): Error {
    const since = slot.authored?.phase === 'pulling' ? slot.authored.since : this.options.now();
    const leftS = Math.max(
      0,
      Math.ceil(((spec.restoreWaitMs ?? DEFAULT_RESTORE_WAIT_MS) - (this.options.now() - since)) / 1000),
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
    const { snapshots, keeper } = this.options;
    const name = spec.name;
    for (const ref of older) {
      signal.throwIfAborted();
      try {
        await keeper.withPin(ref.digest, () =>
          snapshots.fetch(ref.digest, this.options.sources(name, from), { anyPeer: true, signal }),
        );
        signal.throwIfAborted();
        await snapshots.restore(name, ref);
        slot.note = `${what}; after restore_wait started from an older checkpoint of ${new Date(ref.at).toISOString()}: writes after it are lost`;
        this.options.metrics.restores.inc({ source: 'checkpoint' });
        this.options.logger.error({ workload: name, from, digest: ref.digest }, slot.note);
        return;
      } catch (err) {
        if (signal.aborted) throw err;
      }
    }
    await snapshots.restoreEmpty(name);
    slot.note = `${what}; after restore_wait started with an empty STATE_DIRECTORY: ${from}'s state is lost`;
    this.options.metrics.restores.inc({ source: 'empty' });
    this.options.logger.error({ workload: name, from }, slot.note);
  }
}
