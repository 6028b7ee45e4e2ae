import type { ObservedStatus, WorkloadSpec } from '../state/schemas.js';
import type { ServiceRuntime, ServiceStatus } from './service-runtime.js';

/**
 * What the reconcile loop drives on its node: start a spec, stop a
 * service, read statuses. Level-triggered and idempotent, with no process
 * details (pids, cgroups, sandboxes are the runner's business), so the
 * simulator can stand in a runner of its own.
 *
 * Contract:
 * - `ensureRunning(spec)` makes that revision run; calling it again with the
 *   same revision changes nothing; a new revision replaces the running one
 *   (STATE_DIRECTORY kept); after `stop` it starts the service again. A
 *   service that failed at a revision stays failed until the revision
 *   changes (or it was stopped in between). It rejects only for an invalid
 *   spec: every other problem is a status (`failed`, `pulling`) with a reason.
 * - `stop` ends in `released`, keeps STATE_DIRECTORY, and resolves once
 *   the process is gone.
 * - statuses carry everything of ObservedStatus but `snapshot`, which is the
 *   loop's; `since` is the runner's own clock and only informative.
 */

export type RunnerStatus = Omit<ObservedStatus, 'snapshot'> & { name: string };

export interface EnsureOptions {
  /** Why (logged by runners that log); e.g. "claimed", "spec revision 2 → 3". */
  reason?: string;
}

export interface ServiceRunner {
  /** Clean up what a previous agent left behind (kill orphaned copies) before anything runs. */
  init(): Promise<void>;
  ensureRunning(spec: WorkloadSpec, options?: EnsureOptions): Promise<RunnerStatus>;
  stop(name: string, options: { reason: string }): Promise<RunnerStatus | null>;
  status(name: string): RunnerStatus | null;
  list(): RunnerStatus[];
  /** Every status change of every service; returns the unsubscribe function. */
  onStatus(listener: (status: RunnerStatus) => void): () => void;
  stopAll(options: { reason: string }): Promise<void>;
}

function toRunnerStatus(status: ServiceStatus): RunnerStatus {
  return {
    name: status.name,
    phase: status.phase,
    since: status.since,
    revision: status.revision,
    restarts: status.restarts,
    lastExit: status.lastExit,
    reason: status.reason,
    sandbox: status.sandbox,
    scratchUsedMb: status.scratchUsedMb,
  };
}

/** The real runner: the single-node ServiceRuntime (processes, sandbox, scratch, images). */
export class RuntimeRunner implements ServiceRunner {
  constructor(private readonly runtime: ServiceRuntime) {}

  async init(): Promise<void> {
    await this.runtime.init();
  }

  async ensureRunning(spec: WorkloadSpec, _options: EnsureOptions = {}): Promise<RunnerStatus> {
    return toRunnerStatus(await this.runtime.ensureRunning(spec));
  }

  async stop(name: string, options: { reason: string }): Promise<RunnerStatus | null> {
    const status = await this.runtime.stop(name, options.reason);
    return status === null ? null : toRunnerStatus(status);
  }

  status(name: string): RunnerStatus | null {
    const status = this.runtime.status(name);
    return status === null ? null : toRunnerStatus(status);
  }

  list(): RunnerStatus[] {
    return this.runtime.list().map(toRunnerStatus);
  }

  onStatus(listener: (status: RunnerStatus) => void): () => void {
    return this.runtime.onStatus((status) => listener(toRunnerStatus(status)));
  }

  stopAll(options: { reason: string }): Promise<void> {
    return this.runtime.stopAll(options.reason);
  }
}
