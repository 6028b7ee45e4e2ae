/**
 * The scenario file format (docs/sim.md, "Scenario format"), as zod schemas
 * of the TOML as written: snake_case keys, durations as strings ("2s",
 * "500ms"). load.ts validates the top level and then each step on its own,
 * so an error names the step it is in, and turns everything into the
 * normalized `Scenario` (milliseconds, camelCase).
 */
import { z } from 'zod';
import { parseDuration } from '../../src/config/duration.js';
import { INVARIANT_NAMES } from '../harness/invariants/types.js';

/** "500ms", "2s", "1.5m", or a bare number of ms. */
export const Duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  try {
    return parseDuration(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** A clock offset: "+2s", "-500ms", "3s" or a number of ms. */
const SignedDuration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  if (typeof value === 'number') {
    if (Number.isFinite(value)) return value;
  } else {
    const match = /^([+-]?)(.+)$/.exec(value.trim());
    try {
      const ms = parseDuration(match?.[2]);
      return match?.[1] === '-' ? -ms : ms;
    } catch {
      // reported below
    }
  }
  ctx.addIssue({
    code: 'custom',
    message: `expected a signed duration like "+2s" or "-500ms", got ${JSON.stringify(value)}`,
  });
  return z.NEVER;
});

/** Node selector(s): see selectors.ts. A list means the union. */
const Selector = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

const Percent = z.number().min(0).lt(100);
const Count = z.number().int().positive();

const TimingSchema = z.strictObject({
  heartbeat: Duration.optional(),
  suspect_after: Duration.optional(),
  dead_after: Duration.optional(),
  sync_grace: Duration.optional(),
  sync_interval: Duration.optional(),
  sync_timeout: Duration.optional(),
  gossip_heartbeat: Duration.optional(),
  batch: Duration.optional(),
  redial_interval: Duration.optional(),
  redial_backoff_max: Duration.optional(),
  mesh_check_interval: Duration.optional(),
  target_connections: Count.optional(),
  fence_after: Duration.optional(),
  claim_settle: Duration.optional(),
  fence_slack: Duration.optional(),
  max_stop_timeout: Duration.optional(),
  clock_drift_ppm: z.number().int().min(0).max(100_000).optional(),
  tick: Duration.optional(),
  debounce: Duration.optional(),
  checkpoint_interval: Duration.optional(),
  handoff: Duration.optional(),
  replicas: z.number().int().min(0).optional(),
  max_parallel: Count.optional(),
});

const NetworkSchema = z.strictObject({
  latency: Duration.optional(),
  jitter: Duration.optional(),
  loss: Percent.optional(),
  bootstrap_peers: Count.optional(),
});

const RunnerSchema = z.strictObject({
  start: Duration.optional(),
  stop: Duration.optional(),
  state_write: Duration.optional(),
});

/**
 * SWIM membership in the agents (docs/membership.md; off unless given):
 * `liveness = "swim"` also makes placement read it and heartbeats go
 * without acks (services.lease = "swim" of a real agent).
 */
const MembershipSchema = z.strictObject({
  swim: z.boolean().default(true),
  liveness: z.enum(['acked-heartbeats', 'swim']).default('acked-heartbeats'),
  probe_interval: Duration.optional(),
  probe_timeout: Duration.optional(),
  /** With liveness = "swim": heartbeats this often instead of timing.heartbeat (default 10 s). */
  heartbeat_interval: Duration.optional(),
});

const CapacitySchema = z.strictObject({
  cpus: z.number().positive(),
  memory_mb: z.number().int().positive(),
  scratch_mb: z.number().int().nonnegative(),
});

const WorkloadSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,50}$/, 'workload name: lowercase letters, digits, "-", "_"'),
  scratch_class: z.enum(['persistent', 'volatile']).default('persistent'),
  on_partition: z.enum(['stop', 'keep']).default('stop'),
  cpus: z.number().positive().default(0.25),
  memory_mb: z.number().int().positive().default(128),
  scratch_mb: z.number().int().positive().default(16),
  stop_timeout: Duration.default(1000),
  /** How long a takeover waits for unreachable state before an older checkpoint or empty. */
  restore_wait: Duration.optional(),
  constraints: z.record(z.string().min(1).max(63), z.string().max(253)).default({}),
});

/**
 * When a step runs: "2s" = 2 s after the scenario began; "+2s" = 2 s after
 * the previous step finished (blocking steps like `wait` make that later).
 */
const StepTime = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const relative = typeof value === 'string' && value.trim().startsWith('+');
  try {
    const ms = parseDuration(relative ? (value as string).trim().slice(1) : value);
    return { ms, relative };
  } catch (err) {
    ctx.addIssue({
      code: 'custom',
      message: `${(err as Error).message} (or "+<duration>" after the previous step)`,
    });
    return z.NEVER;
  }
});

const at = { at: StepTime };

export const StepSchemas = {
  partition: z.strictObject({
    ...at,
    action: z.literal('partition'),
    groups: z.array(Selector).min(2),
    mode: z.enum(['abort', 'stall']).default('abort'),
  }),
  heal: z.strictObject({ ...at, action: z.literal('heal') }),
  cut: z.strictObject({
    ...at,
    action: z.literal('cut'),
    from: Selector,
    to: Selector,
    abort_after: Duration.optional(),
  }),
  link: z.strictObject({
    ...at,
    action: z.literal('link'),
    a: Selector.optional(),
    b: Selector.optional(),
    latency: Duration.optional(),
    jitter: Duration.optional(),
    loss: Percent.optional(),
  }),
  loss: z.strictObject({ ...at, action: z.literal('loss'), pct: Percent, nodes: Selector.optional() }),
  crash: z.strictObject({ ...at, action: z.literal('crash'), nodes: Selector }),
  restart: z.strictObject({
    ...at,
    action: z.literal('restart'),
    nodes: Selector.default('down'),
    /** Restart on the copy a `copy-data` step took under this name (everything written since is lost). */
    from_copy: z.string().min(1).max(64).optional(),
  }),
  /** Copy the data dirs of down nodes aside under `name` (a backup, a VM snapshot). */
  'copy-data': z.strictObject({
    ...at,
    action: z.literal('copy-data'),
    nodes: Selector,
    name: z.string().min(1).max(64),
  }),
  join: z.strictObject({ ...at, action: z.literal('join'), count: Count.default(1) }),
  skew: z.strictObject({ ...at, action: z.literal('skew'), nodes: Selector, by: SignedDuration }),
  /** Issue the next witness configuration (one witness added or removed), written through `via`. */
  witnesses: z.strictObject({
    ...at,
    action: z.literal('witnesses'),
    set: z.array(z.string().min(1)).min(1).max(7),
    via: Selector.optional(),
  }),
  /** Each selected node starts the next epoch of `doc` from its own view (docs/epochs.md). */
  epoch: z.strictObject({
    ...at,
    action: z.literal('epoch'),
    nodes: Selector,
    doc: z.enum(['workloads', 'enrollment']).default('workloads'),
  }),
  write: z.strictObject({
    ...at,
    action: z.literal('write'),
    nodes: Selector.default('random:1'),
    count: Count.default(1),
  }),
  writes: z.strictObject({
    ...at,
    action: z.literal('writes'),
    n: Count,
    /** Writes per second, spread over the selected nodes. */
    rate: z.number().positive().max(100_000),
    nodes: Selector.default('live'),
    /** Block later steps until the last write (default: writes run in the background). */
    wait: z.boolean().default(false),
  }),
  apply: z.strictObject({
    ...at,
    action: z.literal('apply'),
    workload: WorkloadSchema,
    /** Apply `count` copies named <name>-1 .. <name>-<count>. */
    count: Count.optional(),
    via: z.string().optional(),
  }),
  drain: z.strictObject({
    ...at,
    action: z.literal('drain'),
    nodes: Selector,
    undrain: z.boolean().default(false),
  }),
  /** The workload's process dies on its own (SIGKILL) wherever it runs now; its node and agent live on. */
  'kill-service': z.strictObject({
    ...at,
    action: z.literal('kill-service'),
    workload: z.string().min(1),
  }),
  wait: z.strictObject({
    ...at,
    action: z.literal('wait'),
    until: z.enum(['converged', 'placed', 'writes-done']),
    timeout: Duration.default(30_000),
  }),
  flap: z.strictObject({
    ...at,
    action: z.literal('flap'),
    nodes: Selector,
    mode: z.enum(['partition', 'crash']).default('partition'),
    down: Duration,
    up: Duration,
    times: Count,
  }),
} as const;

export type StepAction = keyof typeof StepSchemas;
export const STEP_ACTIONS = Object.keys(StepSchemas) as StepAction[];

export type Step = { [K in StepAction]: z.output<(typeof StepSchemas)[K]> }[StepAction];
export type WorkloadInput = z.output<typeof WorkloadSchema>;

export const ExpectSchema = z.strictObject({
  invariants: z.array(z.enum(INVARIANT_NAMES)).default([...INVARIANT_NAMES]),
  /** Bound for the final convergence (after the last step and the writers). */
  converge_within: Duration.default(30_000),
  /** Slack beyond dead_after + takeover wait + claim_settle for liveness deadlines. */
  liveness_bound: Duration.default(5000),
});

export const ScenarioFileSchema = z.strictObject({
  name: z.string().min(1).max(100).optional(),
  description: z.string().max(2000).optional(),
  seed: z.union([z.number().int(), z.string().min(1)]).default(1),
  nodes: z.number().int().min(1).max(500),
  /** Witnesses at start: a count (n1..nk) or names; default the first min(nodes, 3). */
  witnesses: z.union([z.number().int().min(1).max(7), z.array(z.string().min(1)).min(1).max(7)]).optional(),
  /** Rates of the nodes' monotonic clocks (lease timing), e.g. { n1 = 0.99, n2 = 1.01 }. */
  clock_rates: z.record(z.string(), z.number().gt(0.5).lt(1.5)).optional(),
  timing: TimingSchema.default({}),
  network: NetworkSchema.default({}),
  runner: RunnerSchema.default({}),
  membership: MembershipSchema.optional(),
  /** Nodes that have the workload image at start (default: all); the others fetch it from them. */
  image_on: z.array(z.string().min(1)).min(1).optional(),
  capacity: CapacitySchema.optional(),
  /** Validated one by one in load.ts, so that errors name the step. */
  steps: z.array(z.unknown()).default([]),
  expect: ExpectSchema.default({
    invariants: [...INVARIANT_NAMES],
    converge_within: 30_000,
    liveness_bound: 5000,
  }),
});

export type ScenarioFile = z.output<typeof ScenarioFileSchema>;
