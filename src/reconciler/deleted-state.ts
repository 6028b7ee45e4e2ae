import type { Logger } from 'pino';
import type { WorkloadSpec } from '../state/schemas.js';
import type { ServiceRunner } from './service-runner.js';
import { RUNNING_PHASES } from './slot-status.js';
import type { StateSnapshots } from './snapshots.js';

export interface DeletedStateOptions {
  runner: Pick<ServiceRunner, 'status'>;
  snapshots: Pick<StateSnapshots, 'discardState'>;
  logger: Logger;
  /** A task runs for the workload (its state is left alone while it does). */
  busy: (workload: string) => boolean;
}

/** Empties the STATE_DIRECTORY of deleted workloads on this node, once nothing of them runs here. */
export class DeletedState {
  private readonly options: DeletedStateOptions;
  /** Spec names of the previous sweep: null before the first (nothing was deleted yet). */
  private knownSpecs: Set<string> | null = null;
  /** Deleted workloads whose state is still to be emptied. */
  private readonly pendingWipes = new Set<string>();

  constructor(options: DeletedStateOptions) {
    this.options = options;
  }

  /**
   * `silo delete` removes a workload's state on every node (docs/reconciler.md,
   * "Deleting"): each node that sees a spec disappear empties its
   * STATE_DIRECTORY once nothing of the workload runs here, so a later apply
   * of the same name starts empty wherever it is placed, not from whatever
   * an earlier holder left behind.
   */
  sweep(specs: ReadonlyMap<string, WorkloadSpec>): void {
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
      if (this.options.busy(name) || (running && RUNNING_PHASES.has(running.phase))) continue;
      this.pendingWipes.delete(name);
      this.options.snapshots.discardState(name).then(
        (had) => {
          if (had)
            this.options.logger.info(
              { workload: name },
              'workload deleted: its STATE_DIRECTORY on this node emptied',
            );
        },
        (err: unknown) => {
          this.options.logger.warn(
            { workload: name, err: (err as Error).message },
            'emptying a deleted workload failed; retrying',
          );
          this.pendingWipes.add(name);
        },
      );
    }
  }
}
