import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import type { Slot, Task } from './slot.js';

/** The back-off after `failures` consecutive failures of a slot's actions: 0.5 s doubling, at most 30 s. */
export function retryBackoffMs(failures: number): number {
  if (failures <= 0) return 0;
  return Math.min(30_000, 500 * 2 ** Math.min(failures - 1, 6));
}

export interface SlotTasksOptions {
  logger: Logger;
  /** Actions executed, by kind and result (LoopMetrics.actions). */
  actions: Counter<'kind' | 'result'>;
  /** The reconcile loop's clock. */
  now: () => number;
  /** Called once a task ended, whatever its outcome (the loop writes the slot's status and schedules a pass). */
  settled: (slot: Slot) => void;
}

/**
 * Runs the one task a slot may have in flight (docs/reconciler.md): counts
 * its outcome, keeps the slot's last error for its reason, and on a failure
 * pushes the slot's next attempt out by the back-off. An aborted task (an
 * urgent action preempted it) is neither an error nor a failure. A
 * checkpoint runs beside the placement actions' retry schedule: its failure
 * shows in the reason but delays nothing else.
 */
export class SlotTasks {
  private readonly options: SlotTasksOptions;

  constructor(options: SlotTasksOptions) {
    this.options = options;
  }

  run(slot: Slot, kind: string, urgent: boolean, work: (signal: AbortSignal) => Promise<void>): Task {
    const { actions, logger, now, settled } = this.options;
    const controller = new AbortController();
    const task: Task = { kind, urgent, controller, done: Promise.resolve() };
    const background = kind === 'checkpoint';
    slot.task = task;
    task.done = (async () => {
      try {
        await work(controller.signal);
        actions.inc({ kind, result: 'ok' });
        if (!background || slot.error?.what === kind) slot.error = null;
        if (!background) {
          slot.failures = 0;
          slot.retryAt = 0;
        }
      } catch (err) {
        if (controller.signal.aborted) {
          actions.inc({ kind, result: 'aborted' });
          logger.info({ workload: slot.name, kind, why: String(controller.signal.reason) }, 'action aborted');
        } else {
          const message = (err as Error).message ?? String(err);
          actions.inc({ kind, result: 'error' });
          slot.error = { what: kind, message };
          let backoff = 0;
          if (!background) {
            slot.failures++;
            backoff = retryBackoffMs(slot.failures);
            slot.retryAt = now() + backoff;
          }
          logger.warn({ workload: slot.name, kind, err: message, retryInMs: backoff }, 'action failed');
        }
      } finally {
        slot.task = null;
        settled(slot);
      }
    })();
    return task;
  }
}
