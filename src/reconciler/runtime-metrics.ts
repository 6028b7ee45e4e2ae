import type { Counter, Gauge, Registry } from 'prom-client';
import { type Phase, PhaseSchema } from '../state/schemas.js';
import { counterIn, gaugeIn } from '../util/metrics.js';

/** The service runtime's metrics: exits, restarts and scratch usage by service, services by phase. */
export class RuntimeMetrics {
  readonly exits: Counter<'service'>;
  readonly restarts: Counter<'service'>;
  readonly scratchBytes: Gauge<'service'>;

  /** `phases`: the phase of each service, read at scrape time. */
  constructor(registry: Registry, phases: () => Iterable<Phase>) {
    this.exits = counterIn(registry, {
      name: 'silo_service_exits_total',
      help: 'Service process exits, by service',
      labelNames: ['service'],
    });
    this.restarts = counterIn(registry, {
      name: 'silo_service_restarts_total',
      help: 'Service restarts by the supervisor, by service',
      labelNames: ['service'],
    });
    this.scratchBytes = gaugeIn(registry, {
      name: 'silo_service_scratch_used_bytes',
      help: 'Scratch usage (RUNTIME+STATE+CACHE) by service',
      labelNames: ['service'],
    });
    // Computed at scrape time from the first runtime made on this registry (one per agent).
    gaugeIn(registry, {
      name: 'silo_services',
      help: 'Services supervised by this runtime, by phase',
      labelNames: ['phase'],
      collect() {
        for (const phase of PhaseSchema.options) this.set({ phase }, 0);
        for (const phase of phases()) this.inc({ phase });
      },
    });
  }
}
