import type { LeaseWant } from '../ownership/index.js';
import type { ObservedView } from '../state/observed-view.js';
import type { Phase, WorkloadSpec } from '../state/schemas.js';
import type { WorkloadLeases } from './loop-options.js';
import { describeLease, type LeaseSummary } from './loop-status.js';
import { type LeaseView, type OwnershipTiming, ownershipClass } from './placement/index.js';
import type { ServiceRunner } from './service-runner.js';
import { RUNNING_PHASES } from './slot-status.js';

/** Phases of this node's entry for which it keeps its witness lease. */
const LEASED_PHASES = new Set<Phase>(['pulling', 'starting', 'running', 'stopping']);

export interface SlotLeasesOptions {
  nodeId: string;
  leases: WorkloadLeases;
  observed: Pick<ObservedView, 'listForNode'>;
  runner: Pick<ServiceRunner, 'status'>;
  timing: OwnershipTiming;
  /** A task runs for the workload (its lease is kept while it does). */
  busy: (workload: string) => boolean;
}

/**
 * The reconcile loop's side of the witness leases (docs/placement.md,
 * "Witness leases"): which exclusive workloads this node asks a lease for,
 * for how long, and what placement and `silo status` see of them.
 */
export class SlotLeases {
  private readonly options: SlotLeasesOptions;

  constructor(options: SlotLeasesOptions) {
    this.options = options;
  }

  /**
   * Keep asking for the lease of every exclusive workload this node pulls,
   * starts, runs or is stopping (renewals keep it while a stop takes its
   * time), and release it once nothing of the workload runs here any more.
   */
  sync(specs: ReadonlyMap<string, WorkloadSpec>): void {
    const { leases, runner } = this.options;
    const mine = this.options.observed.listForNode(this.options.nodeId);
    const keep = new Set<string>();
    for (const [name, status] of mine) {
      const spec = specs.get(name);
      if (!spec || ownershipClass(spec) !== 'exclusive') continue;
      if (!LEASED_PHASES.has(status.phase)) continue;
      keep.add(name);
      leases.want(name, this.want(spec));
    }
    for (const name of leases.wanted()) {
      if (keep.has(name)) continue;
      const running = runner.status(name);
      // Never release while a process may still run: the lease is what keeps others off.
      if (running && RUNNING_PHASES.has(running.phase)) continue;
      if (this.options.busy(name)) continue;
      leases.unwant(name);
    }
  }

  /** The lease a workload needs: the run window (fence_after) plus its stop budget (rule O2). */
  want(spec: WorkloadSpec): LeaseWant {
    const stopBudgetMs = spec.stopTimeoutMs + this.options.timing.fenceSlackMs;
    const windowMs =
      this.options.leases.windowFor?.(this.options.timing.fenceAfterMs) ?? this.options.timing.fenceAfterMs;
    return { durationMs: windowMs + stopBudgetMs, stopBudgetMs };
  }

  /** This node's lease of the workload for `silo status`, or null when it does not ask for one. */
  summary(workload: string): LeaseSummary | null {
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

  /** What placement needs of the leases this node asks for (LocalView.leases). */
  views(specs: readonly WorkloadSpec[]): Map<string, LeaseView> {
    const views = new Map<string, LeaseView>();
    const wanted = new Set(this.options.leases.wanted());
    for (const spec of specs) {
      if (ownershipClass(spec) !== 'exclusive' || !wanted.has(spec.name)) continue;
      const status = this.options.leases.status(spec.name);
      views.set(spec.name, { mayRun: status.mayRun, why: describeLease(status) });
    }
    return views;
  }
}
