import type { Logger } from 'pino';
import { peerServiceRoutes, type ServiceHolder, serviceHolders } from '../overlay/service-routes.js';
import type { ObservedView } from '../state/observed-view.js';
import type { WorkloadsView } from '../state/workloads-view.js';

export interface ServiceNetworkOptions {
  selfId: string;
  workloads: WorkloadsView;
  observed: ObservedView;
  /** Node ids of the active enrolled members (clients hold no workloads). */
  members: () => ReadonlySet<string>;
  logger: Logger;
  /** Defers the address repair out of the document's change event (default setImmediate). */
  defer?: (task: () => void) => void;
}

/**
 * The agent's view of service addresses (docs/services.md, "Service
 * addresses"): keeps the claims repaired (every node repairs; the plan is
 * deterministic, so they write the same keys) and tells the overlay which
 * peer holds which address. The decisions themselves are the pure functions
 * of src/state/service-addresses.ts and src/overlay/service-routes.ts.
 */
export class ServiceNetwork {
  readonly #options: ServiceNetworkOptions;
  readonly #logger: Logger;
  readonly #defer: (task: () => void) => void;
  #repairQueued = false;
  #unsubscribe: (() => void) | null = null;
  #reportedExhausted = '';

  constructor(options: ServiceNetworkOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'service-network' });
    this.#defer = options.defer ?? ((task) => setImmediate(task));
  }

  start(): void {
    if (this.#unsubscribe) return;
    this.#unsubscribe = this.#options.workloads.onChange(() => this.#queueRepair());
    this.#queueRepair();
  }

  stop(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  /** Address → holder, as every node computes it from the converged documents. */
  holders(): Map<string, ServiceHolder> {
    return serviceHolders({
      addresses: this.#options.workloads.serviceAddresses(),
      observed: this.#options.observed.listAll(),
      members: this.#options.members(),
    });
  }

  /** node id → the service /32s routed to that peer (never this node). */
  peerRoutes(): Map<string, string[]> {
    return peerServiceRoutes(this.holders(), this.#options.selfId);
  }

  /** Calls `listener` whenever the routes may have changed (either document). */
  onChange(listener: () => void): () => void {
    const offWorkloads = this.#options.workloads.onChange(listener);
    const offObserved = this.#options.observed.onChange(listener);
    return () => {
      offWorkloads();
      offObserved();
    };
  }

  #queueRepair(): void {
    if (this.#repairQueued) return;
    this.#repairQueued = true;
    // Out of the change event: writing inside another transaction's observer is not allowed.
    this.#defer(() => {
      this.#repairQueued = false;
      if (!this.#unsubscribe) return;
      try {
        const plan = this.#options.workloads.repairAddresses();
        if (plan.claim.length + plan.remove.length > 0) {
          this.#logger.info(
            { claimed: plan.claim.map((c) => `${c.workload}=${c.address}`), removed: plan.remove },
            'service address claims repaired',
          );
        }
        const exhausted = plan.exhausted.join(',');
        if (exhausted !== '' && exhausted !== this.#reportedExhausted) {
          this.#logger.error({ workloads: plan.exhausted }, 'no free service address for these workloads');
        }
        this.#reportedExhausted = exhausted;
      } catch (err) {
        this.#logger.error({ err }, 'repairing service address claims failed');
      }
    });
  }
}
