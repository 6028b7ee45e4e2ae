import { z } from 'zod';
import { DEFAULT_SWIM_HEARTBEAT_INTERVAL_MS } from '../agent/heartbeat-schedule.js';
import { DEFAULT_MAX_STOP_TIMEOUT_MS, WINDOW_STRETCH } from '../ownership/lease-bounds.js';
import { MAX_LEASE_MS } from '../ownership/lease-messages.js';
import { NodeIdSchema, ORG_NAME_PATTERN } from '../state/schemas.js';
import { parseDuration } from './duration.js';

/** A duration option: "1s", "500ms", "2m" or a number of milliseconds. */
const Duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  try {
    return parseDuration(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

const NodeSection = z
  .object({
    id: NodeIdSchema,
    data_dir: z.string().min(1).default('/var/lib/silo'),
    /** The node's identity and enrollment bundle (written by `silo node init` / `silo ca sign`). */
    identity_dir: z.string().min(1).optional(),
  })
  .strict();

const GossipSection = z
  .object({
    transport: z.enum(['tcp', 'memory']).default('tcp'),
    listen: z.array(z.string().min(1)).default(['/ip4/0.0.0.0/tcp/7946']),
    bootstrap: z.array(z.string().min(1)).default([]),
    batch: Duration.default(5),
    heartbeat: Duration.default(1000),
    suspect_after: Duration.default(3000),
    dead_after: Duration.default(10_000),
    sync_interval: Duration.default(10_000),
    sync_grace: Duration.default(2000),
    max_update_bytes: z
      .number()
      .int()
      .positive()
      .default(4 * 1024 * 1024),
    max_sync_update_bytes: z
      .number()
      .int()
      .positive()
      .default(64 * 1024 * 1024),
  })
  .strict();

const OverlaySection = z
  .object({
    mode: z.enum(['none', 'wireguard']).default('none'),
    interface: z
      .string()
      .regex(/^[a-zA-Z0-9_.-]{1,15}$/, 'interface name: up to 15 chars [a-zA-Z0-9_.-]')
      .optional(),
    listen_port: z.number().int().min(1).max(65535).default(51820),
  })
  .strict();

const StorageSection = z
  .object({
    compact_every: z.number().int().positive().default(1000),
    durability: z.enum(['sync', 'nosync']).default('sync'),
  })
  .strict();

const ApiSection = z
  .object({
    /** Unix socket of the control API (mode 0600). Default: <data_dir>/silo.sock. */
    socket: z.string().min(1).optional(),
    /** Optional loopback TCP listener "127.0.0.1:7947"; requires token_file. */
    tcp: z.string().optional(),
    token_file: z.string().optional(),
    /**
     * Serve the web dashboard under /dashboard/ on the TCP listener (docs/api.md,
     * "Dashboard"); needs api.tcp. Its data calls carry the same bearer token.
     */
    dashboard: z.boolean().default(false),
  })
  .strict();

const ServicesSection = z
  .object({
    sandbox: z.enum(['auto', 'bubblewrap', 'none']).default('auto'),
    fence_after: Duration.default(6000),
    /**
     * The longest stop_timeout an exclusive workload may have. It bounds
     * lease lengths (4 × fence_after + this + fence_slack), which is also
     * how long a witness grants nothing after a restart (docs/placement.md,
     * rule W6).
     */
    max_stop_timeout: Duration.default(DEFAULT_MAX_STOP_TIMEOUT_MS),
    /**
     * The liveness source placement reads (docs/reconciler.md, "The liveness
     * source"): "acked-heartbeats", "local-detector" or "swim" (needs
     * membership.swim). Ownership comes from the witness leases either way.
     * Unset: "swim" when membership.swim is on (the default), whose cost per
     * node does not grow with the cluster, else "acked-heartbeats".
     */
    lease: z.enum(['acked-heartbeats', 'local-detector', 'swim']).optional(),
    checkpoint_interval: Duration.default(30_000),
    replicas: z.number().int().min(0).default(1),
    max_parallel: z.number().int().positive().default(1),
  })
  .strict();

const MembershipSection = z
  .object({
    /**
     * Run SWIM + Lifeguard membership (`/silo/swim/1`, docs/membership.md)
     * beside the heartbeat detector. Placement reads it when
     * services.lease = "swim"; otherwise `silo nodes` and the silo_swim_*
     * metrics show what it sees.
     */
    swim: z.boolean().default(true),
    probe_interval: Duration.default(1000),
    probe_timeout: Duration.default(500),
    /**
     * With services.lease = "swim": how often heartbeats go out instead of
     * gossip.heartbeat, × max(1, nodes / 10) (src/agent/heartbeat-schedule.ts).
     * They then only introduce a node and its addresses; SWIM vouches for
     * live members in the heartbeat detector and its probes carry the
     * digests, so a node receives at most 10 heartbeats per interval
     * whatever the cluster's size (docs/membership.md).
     */
    heartbeat_interval: Duration.default(DEFAULT_SWIM_HEARTBEAT_INTERVAL_MS),
  })
  .strict();

const ProvisionerSection = z
  .object({
    /**
     * The org dir (org.json, ca.key, tokens/) this agent signs joins with;
     * setting it turns the join provisioner on (docs/operations.md,
     * "Adding a node"). Off by default: only the CA holder's agent has one.
     */
    org_dir: z.string().min(1).optional(),
    /** host:port of the provisioner's HTTP listener (not the control API). */
    listen: z
      .string()
      .regex(/^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected "host:port"')
      .default('0.0.0.0:7948'),
    /** Seed peers put into joiners' bundles (multiaddrs with /p2p/); default: this agent's own addresses. */
    seeds: z.array(z.string().min(1)).default([]),
  })
  .strict();

const LogSection = z
  .object({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    pretty: z.enum(['auto', 'always', 'never']).default('auto'),
  })
  .strict();

export const AgentConfigSchema = z
  .object({
    org: z.string().regex(ORG_NAME_PATTERN, 'org name: lowercase letters, digits and "-"'),
    node: NodeSection,
    gossip: GossipSection.prefault({}),
    overlay: OverlaySection.prefault({}),
    storage: StorageSection.prefault({}),
    api: ApiSection.prefault({}),
    services: ServicesSection.prefault({}),
    membership: MembershipSection.prefault({}),
    provisioner: ProvisionerSection.prefault({}),
    log: LogSection.prefault({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    const g = config.gossip;
    if (!(g.suspect_after < g.dead_after)) {
      ctx.addIssue({
        code: 'custom',
        path: ['gossip', 'suspect_after'],
        message: 'must be less than gossip.dead_after',
      });
    }
    if (config.services.lease === 'swim' && !config.membership.swim) {
      ctx.addIssue({
        code: 'custom',
        path: ['services', 'lease'],
        message: '"swim" reads SWIM membership: set membership.swim = true, or choose "acked-heartbeats"',
      });
    }
    if (!(config.membership.probe_timeout < config.membership.probe_interval)) {
      ctx.addIssue({
        code: 'custom',
        path: ['membership', 'probe_timeout'],
        message:
          'must be less than membership.probe_interval (the indirect probes need the rest of the period)',
      });
    }
    if (!(config.membership.heartbeat_interval >= g.heartbeat)) {
      ctx.addIssue({
        code: 'custom',
        path: ['membership', 'heartbeat_interval'],
        message: 'must be at least gossip.heartbeat',
      });
    }
    if (!(g.heartbeat < g.suspect_after)) {
      ctx.addIssue({
        code: 'custom',
        path: ['gossip', 'heartbeat'],
        message: 'must be less than gossip.suspect_after',
      });
    }
    const s = config.services;
    if (!(s.max_stop_timeout >= 1000)) {
      ctx.addIssue({
        code: 'custom',
        path: ['services', 'max_stop_timeout'],
        message: 'must be at least 1s',
      });
    } else if (WINDOW_STRETCH * s.fence_after + s.max_stop_timeout + 2000 > MAX_LEASE_MS) {
      ctx.addIssue({
        code: 'custom',
        path: ['services', 'max_stop_timeout'],
        message: `with fence_after it makes leases longer than ${MAX_LEASE_MS / 60_000} minutes (${WINDOW_STRETCH} × fence_after + max_stop_timeout + 2 s)`,
      });
    }
    if (!(config.services.fence_after < g.dead_after)) {
      ctx.addIssue({
        code: 'custom',
        path: ['services', 'fence_after'],
        message:
          'must be less than gossip.dead_after (a cut-off holder must fence itself before others take over)',
      });
    }
    if (config.api.tcp && !config.api.token_file) {
      ctx.addIssue({ code: 'custom', path: ['api', 'token_file'], message: 'required when api.tcp is set' });
    }
    if (config.api.dashboard && !config.api.tcp) {
      // The dashboard is a browser page: it needs the loopback TCP listener, the socket is no use to it.
      ctx.addIssue({
        code: 'custom',
        path: ['api', 'dashboard'],
        message: 'needs api.tcp (and api.token_file): the dashboard is served on the loopback TCP listener',
      });
    }
    if (config.overlay.mode === 'wireguard' && !config.overlay.interface) {
      ctx.addIssue({
        code: 'custom',
        path: ['overlay', 'interface'],
        message: 'required when overlay.mode = "wireguard"',
      });
    }
  })
  .transform((config) => ({
    ...config,
    services: {
      ...config.services,
      lease:
        config.services.lease ?? (config.membership.swim ? ('swim' as const) : ('acked-heartbeats' as const)),
    },
  }));

export type AgentConfig = z.output<typeof AgentConfigSchema>;
export type AgentConfigInput = z.input<typeof AgentConfigSchema>;
