import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { PhaseSchema } from '../state/schemas.js';

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
    const registers = [registry];
    new Gauge({
      name: 'silo_reconcile_workloads',
      help: "This node's workloads by phase (its entries in the observed document)",
      labelNames: ['phase'],
      registers,
      collect() {
        for (const phase of PhaseSchema.options) this.set({ phase }, 0);
        for (const phase of sources.phases()) this.inc({ phase });
      },
    });
    new Gauge({
      name: 'silo_checkpoint_age_seconds',
      help: 'Age of the newest checkpoint of each running persistent workload on this node',
      labelNames: ['workload'],
      registers,
      collect() {
        this.reset();
        for (const [workload, age] of sources.checkpointAges()) this.set({ workload }, age);
      },
    });
    this.actions = new Counter({
      name: 'silo_reconcile_actions_total',
      help: 'Placement actions executed, by kind and result (ok, error, aborted, refused)',
      labelNames: ['kind', 'result'],
      registers,
    });
    this.restores = new Counter({
      name: 'silo_reconcile_restores_total',
      help: 'Where a claimed workload state came from: none (volatile), local, snapshot (planned move), checkpoint or empty (takeover)',
      labelNames: ['source'],
      registers,
    });
    this.dataLossWindow = new Histogram({
      name: 'silo_reconcile_data_loss_window_seconds',
      help: 'Takeovers from a checkpoint: time between the checkpoint and the last heartbeat of the dead holder (writes lost)',
      buckets: [1, 5, 15, 30, 60, 120, 300, 900, 3600],
      registers,
    });
    this.checkpoints = new Counter({
      name: 'silo_checkpoints_total',
      help: 'Periodic checkpoints of running persistent workloads, by result (new, unchanged, error)',
      labelNames: ['result'],
      registers,
    });
    this.replicaPulls = new Counter({
      name: 'silo_checkpoint_replica_pulls_total',
      help: "Checkpoints of other nodes' workloads pulled to keep a copy here, by result",
      labelNames: ['result'],
      registers,
    });
    this.leaseFences = new Counter({
      name: 'silo_lease_fences_total',
      help: 'Exclusive workloads stopped here because their witness lease could not be renewed',
      registers,
    });
    this.passes = new Counter({
      name: 'silo_reconcile_passes_total',
      help: 'Reconcile passes (ticks and document changes)',
      registers,
    });
  }
}
