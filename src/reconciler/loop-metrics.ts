import type { Counter, Histogram, Registry } from 'prom-client';
import { PhaseSchema } from '../state/schemas.js';
import { counterIn, gaugeIn, histogramIn } from '../util/metrics.js';

/** Metrics of one reconcile loop (one agent), on the agent's registry. */
export class LoopMetrics {
  readonly actions: Counter<'kind' | 'result'>;
  readonly restores: Counter<'source'>;
  readonly dataLossWindow: Histogram;
  readonly checkpoints: Counter<'result'>;
  readonly replicaPulls: Counter<'result'>;
  readonly leaseFences: Counter;
  readonly passes: Counter;

  constructor(
    registry: Registry,
    sources: {
      /** This node's observed entries, by phase. */
      phases: () => Iterable<string>;
      /** workload → checkpoint age in seconds, for running persistent workloads. */
      checkpointAges: () => Iterable<[string, number]>;
    },
  ) {
    gaugeIn(registry, {
      name: 'silo_reconcile_workloads',
      help: "This node's workloads by phase (its entries in the observed document)",
      labelNames: ['phase'],
      collect() {
        for (const phase of PhaseSchema.options) this.set({ phase }, 0);
        for (const phase of sources.phases()) this.inc({ phase });
      },
    });
    gaugeIn(registry, {
      name: 'silo_checkpoint_age_seconds',
      help: 'Age of the newest checkpoint of each running persistent workload on this node',
      labelNames: ['workload'],
      collect() {
        this.reset();
        for (const [workload, age] of sources.checkpointAges()) this.set({ workload }, age);
      },
    });
    this.actions = counterIn(registry, {
      name: 'silo_reconcile_actions_total',
      help: 'Placement actions executed, by kind and result (ok, error, aborted, refused)',
      labelNames: ['kind', 'result'],
    });
    this.restores = counterIn(registry, {
      name: 'silo_reconcile_restores_total',
      help: 'Where a claimed workload state came from: none (volatile), local, snapshot (planned move), checkpoint or empty (takeover)',
      labelNames: ['source'],
    });
    this.dataLossWindow = histogramIn(registry, {
      name: 'silo_reconcile_data_loss_window_seconds',
      help: 'Takeovers from a checkpoint: time between the checkpoint and the last heartbeat of the dead holder (writes lost)',
      buckets: [1, 5, 15, 30, 60, 120, 300, 900, 3600],
    });
    this.checkpoints = counterIn(registry, {
      name: 'silo_checkpoints_total',
      help: 'Periodic checkpoints of running persistent workloads, by result (new, unchanged, error)',
      labelNames: ['result'],
    });
    this.replicaPulls = counterIn(registry, {
      name: 'silo_checkpoint_replica_pulls_total',
      help: "Checkpoints of other nodes' workloads pulled to keep a copy here, by result",
      labelNames: ['result'],
    });
    this.leaseFences = counterIn(registry, {
      name: 'silo_lease_fences_total',
      help: 'Exclusive workloads stopped here because their witness lease could not be renewed',
    });
    this.passes = counterIn(registry, {
      name: 'silo_reconcile_passes_total',
      help: 'Reconcile passes (ticks and document changes)',
    });
  }
}
