import type { Logger } from 'pino';
import type { WorkloadSpec } from '../state/schemas.js';
import type { ServiceRunner } from './service-runner.js';
import type { SlotActions } from './slot-actions.js';
import type { SlotBook } from './slot-book.js';
import { RUNNING_PHASES } from './slot-status.js';
import type { StateSnapshots } from './snapshots.js';

/**
 * A graceful stop's hand-over (reconcile-loop.ts `stop('release')`): every
 * service here is stopped and released, persistent ones with a snapshot,
 * and the loop waits a while for a replica to pull each snapshot, so the
 * workloads can move if this node does not come back.
 */

export interface HandoverOptions {
  book: SlotBook;
  runner: ServiceRunner;
  actions: SlotActions;
  snapshots: StateSnapshots;
  specOf: (name: string) => WorkloadSpec | undefined;
  /** How long to wait for the pulls (0: not at all). */
  handoffMs: number;
  /** Nodes that keep a copy of each checkpoint (0: nobody pulls, so nobody is waited for). */
  replicas: number;
  logger: Logger;
}

/** Releases everything, stops the runner, waits for the pulls; returns how many snapshots were handed over. */
export async function handOver(options: HandoverOptions): Promise<number> {
  const { book, runner, actions } = options;
  const handedOver: string[] = [];
  await Promise.allSettled(
    [...book.all()].map(async (slot) => {
      if (slot.authored?.phase === 'pulling') {
        book.drop(slot);
        return;
      }
      const running = runner.status(slot.name);
      if (!running || !RUNNING_PHASES.has(running.phase)) return;
      const spec = options.specOf(slot.name);
      const persistent = spec?.scratchClass === 'persistent' || slot.checkpoint !== null;
      slot.release = { reason: 'agent stopping', snapshot: persistent };
      await actions.release(slot);
      const digest = slot.authored?.snapshot?.digest;
      if (digest) handedOver.push(digest);
    }),
  );
  await runner.stopAll({ reason: 'agent stopping' });
  const { handoffMs } = options;
  if (handedOver.length > 0 && handoffMs > 0 && options.replicas > 0) {
    const pulled = await options.snapshots.waitServed(handedOver, handoffMs);
    if (!pulled) {
      options.logger.warn(
        { snapshots: handedOver.length, waitedMs: handoffMs },
        'stopping before every released snapshot was pulled by a peer; they move only if this node returns',
      );
    }
  }
  return handedOver.length;
}
