import { z } from 'zod';

/**
 * Validated record shapes of the three documents (docs/protocol.md,
 * "Documents"). Records are stored as plain JSON values inside Y.Maps: a
 * record is signed or written as a whole, so nested Y types would only add
 * merge points that no writer wants.
 */

/** The one pattern of each kind of name (docs/protocol.md, "Names"): every reader and writer uses these. */
export const NODE_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const ORG_NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const WORKLOAD_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/**
 * Sane bounds of one workload's resources: far above any machine, low
 * enough that an absurd value (cpus = 1e308) is refused at the boundary
 * instead of replicated to every node and never placed.
 */
export const MAX_WORKLOAD_CPUS = 4096;
export const MAX_WORKLOAD_MEMORY_MB = 64 * 1024 * 1024;
export const MAX_WORKLOAD_SCRATCH_MB = 1024 * 1024 * 1024;

/** At most this many exposed ports per service (manifest `ports`). */
export const MAX_SERVICE_PORTS = 64;

/** How long a takeover waits for a workload's newest state by default (spec `restoreWaitMs`). */
export const DEFAULT_RESTORE_WAIT_MS = 60_000;

export const NodeIdSchema = z
  .string()
  .regex(NODE_ID_PATTERN, 'node id: lowercase letters, digits and "-", 1-63 chars');
export const WorkloadNameSchema = z
  .string()
  .regex(WORKLOAD_NAME_PATTERN, 'workload name: lowercase letters, digits, "-" and "_", 1-63 chars');
const Base64 = z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, 'base64');
const Ipv4 = z.ipv4();
const Labels = z.record(z.string().min(1).max(63), z.string().max(253));

export const CapacitySchema = z.object({
  cpus: z.number().positive(),
  memoryMb: z.number().int().positive(),
  scratchMb: z.number().int().nonnegative(),
});
export type Capacity = z.infer<typeof CapacitySchema>;

/**
 * What an enrolled identity is for (docs/protocol.md, "Enrollment roles"):
 * a `node` runs workloads and counts for ownership; a `client` (a tool, an
 * operator's agent) may connect, sync and write through the rules, but is
 * never placed, never a SWIM member, witness or quorum member. Absent = node.
 */
export const EnrollmentRoleSchema = z.enum(['node', 'client']);
export type EnrollmentRole = z.infer<typeof EnrollmentRoleSchema>;

/** What the org CA signs when it enrolls a node (everything but `cert`). */
export const EnrollmentRecordSchema = z.object({
  nodeId: NodeIdSchema,
  peerId: z.string().min(1),
  wgPublicKey: Base64.length(44),
  overlayIp: Ipv4,
  endpoints: z.array(z.string().min(1)).max(16),
  capacity: CapacitySchema,
  labels: Labels,
  issuedAt: z.number().int().nonnegative(),
  /** Signed only when present, so records from before roles keep their signatures. */
  role: EnrollmentRoleSchema.optional(),
});
export type EnrollmentRecord = z.infer<typeof EnrollmentRecordSchema>;

/** An enrollment record with the CA's Ed25519 signature over its canonical encoding. */
export const SignedEnrollmentSchema = EnrollmentRecordSchema.extend({ cert: Base64 });
export type SignedEnrollment = z.infer<typeof SignedEnrollmentSchema>;

export const RevocationBodySchema = z.object({
  nodeId: NodeIdSchema,
  revokedAt: z.number().int().nonnegative(),
  reason: z.string().max(500),
});
export type RevocationBody = z.infer<typeof RevocationBodySchema>;
export const RevocationSchema = RevocationBodySchema.extend({ cert: Base64 });
export type Revocation = z.infer<typeof RevocationSchema>;

/**
 * An org scratch secret sealed to one node's WireGuard (X25519) key and
 * signed by the CA (docs/protocol.md, "Scratch key envelopes"): only the
 * addressed node can open it, and only the CA can hand one out.
 */
export const SignedScratchSecretSchema = z.object({
  v: z.literal(1),
  nodeId: NodeIdSchema,
  generation: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  /** Ephemeral X25519 public key (raw 32 bytes). */
  epk: Base64,
  iv: Base64,
  /** AES-256-GCM ciphertext of the 32-byte secret followed by the tag. */
  ct: Base64,
  /** The CA's Ed25519 signature of the envelope (src/identity/scratch-secret-signing.ts). */
  cert: Base64,
});
export type SignedScratchSecret = z.infer<typeof SignedScratchSecretSchema>;

/**
 * The witness configuration (enrollment document, map `witnesses`, key
 * `v<version>`): which nodes grant workload leases (docs/placement.md,
 * "Witnesses"). CA-signed; the newest valid version is the one in force.
 */
export const WitnessConfigBodySchema = z.object({
  version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  witnesses: z.array(NodeIdSchema).min(1).max(7),
  issuedAt: z.number().int().nonnegative(),
});
export type WitnessConfigBody = z.infer<typeof WitnessConfigBodySchema>;
export const WitnessConfigRecordSchema = WitnessConfigBodySchema.extend({ cert: Base64 });
export type WitnessConfigRecord = z.infer<typeof WitnessConfigRecordSchema>;

/** Operator drain flag for a node (enrollment document, map `draining`). */
export const DrainFlagSchema = z.object({
  draining: z.boolean(),
  at: z.number().int().nonnegative(),
  by: z.string().max(200),
});
export type DrainFlag = z.infer<typeof DrainFlagSchema>;

export const RestartPolicySchema = z.enum(['always', 'on-failure', 'never']);
export const ScratchClassSchema = z.enum(['persistent', 'volatile']);
export const PartitionPolicySchema = z.enum(['stop', 'keep']);

/** A workload as the reconciler reads it (workloads document, map `specs`). */
export const WorkloadSpecSchema = z.object({
  name: WorkloadNameSchema,
  tier: z.string().min(1).max(63),
  image: z.string().min(1).max(253),
  imageDigest: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'image digest: sha256:<64 hex>'),
  imageSignature: Base64,
  /** Path of the program inside the image to run. */
  command: z.string().min(1),
  args: z.array(z.string()),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()),
  scratchMb: z.number().int().positive().max(MAX_WORKLOAD_SCRATCH_MB),
  scratchClass: ScratchClassSchema,
  network: z.enum(['overlay', 'host', 'none']),
  /**
   * `network = "overlay"`: the ports (TCP and UDP) org members may reach at
   * the service address; every other port is dropped (docs/services.md,
   * "Service addresses"). Absent: none.
   */
  ports: z.array(z.number().int().min(1).max(65535)).max(MAX_SERVICE_PORTS).optional(),
  cpus: z.number().positive().max(MAX_WORKLOAD_CPUS),
  memoryMb: z.number().int().positive().max(MAX_WORKLOAD_MEMORY_MB),
  restart: RestartPolicySchema,
  notificationFd: z.number().int().min(3).max(255).optional(),
  /** false: a persistent workload's STATE opts out of encrypted scratch (docs/security.md); absent = encrypted. */
  encrypted: z.boolean().optional(),
  stopSignal: z.string().regex(/^SIG[A-Z0-9]+$/),
  stopTimeoutMs: z.number().int().positive(),
  startTimeoutMs: z.number().int().positive(),
  /**
   * Persistent workloads taken over or moved: how long to wait for the
   * state they should start from (a released snapshot, the newest
   * checkpoint) when no reachable node has it, before starting from the
   * newest older checkpoint that can be had, else empty, and saying so.
   * Absent: DEFAULT_RESTORE_WAIT_MS.
   */
  restoreWaitMs: z.number().int().positive().optional(),
  /** Program inside the image run before every start (MetalOS-style generator). */
  generator: z.string().min(1).optional(),
  constraints: Labels,
  onPartition: PartitionPolicySchema,
  /** Bumped on every change of the spec; a change restarts the service. */
  revision: z.number().int().positive(),
});
export type WorkloadSpec = z.infer<typeof WorkloadSpecSchema>;

/**
 * A service address claim (workloads document, map `addresses`, key
 * `<address>/<workload>`): when it was written. The older claim keeps a
 * contested address (src/state/service-addresses.ts).
 */
export const AddressClaimValueSchema = z.object({ at: z.number().int().nonnegative() });
export type AddressClaimValue = z.infer<typeof AddressClaimValueSchema>;

export const PhaseSchema = z.enum([
  'pending',
  'pulling',
  'starting',
  'running',
  'stopping',
  'released',
  'failed',
]);
export type Phase = z.infer<typeof PhaseSchema>;

export const SnapshotRefSchema = z.object({
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
  at: z.number().int().nonnegative(),
});
export type SnapshotRef = z.infer<typeof SnapshotRefSchema>;

/** Image digests one node's store holds, at most this many (a node with more lists the newest). */
export const MAX_IMAGES_HELD = 256;

/**
 * The images a node can serve (observed document, `reports/<nodeId>`, `images`), so
 * that a node placing a workload finds a copy of its image on any node, not
 * only on the peers it happens to be connected to (docs/protocol.md).
 */
export const ImagesHeldSchema = z.object({
  digests: z
    .array(z.string().regex(/^sha256:[0-9a-f]{64}$/, 'image digest: sha256:<64 hex>'))
    .max(MAX_IMAGES_HELD),
  at: z.number().int().nonnegative(),
});
export type ImagesHeld = z.infer<typeof ImagesHeldSchema>;

/**
 * A node's report (observed document, `reports/<nodeId>`): its statuses by
 * workload name and the images it holds, written whole by that node. The
 * envelope only: every status and the images entry are checked on their own,
 * so one bad entry hides itself and not the rest of the report.
 */
export const NodeReportEnvelopeSchema = z.object({
  statuses: z.record(z.string(), z.unknown()),
  images: z.unknown().optional(),
  peers: z.unknown().optional(),
});

export const MAX_PEERS_HELD = 256;

/**
 * The enrolled nodes a node has an open libp2p connection to (observed
 * document, `reports/<nodeId>`, `peers`; optional, absent from older
 * agents), so that any node's API can draw the cluster's connection graph
 * (docs/protocol.md, "observed"). Sorted, no duplicates.
 */
export const PeersHeldSchema = z.object({
  nodes: z
    .array(NodeIdSchema)
    .max(MAX_PEERS_HELD)
    .refine(
      (ids) => ids.every((id, i) => i === 0 || (ids[i - 1] as string) < id),
      'peers: sorted, no duplicates',
    ),
  at: z.number().int().nonnegative(),
});
export type PeersHeld = z.infer<typeof PeersHeldSchema>;

/** One workload's status on one node (observed document, `reports/<nodeId>`, `statuses/<workload>`). */
export const ObservedStatusSchema = z.object({
  phase: PhaseSchema,
  since: z.number().int().nonnegative(),
  revision: z.number().int().nonnegative(),
  restarts: z.number().int().nonnegative(),
  lastExit: z
    .object({ code: z.number().int().nullable(), signal: z.string().nullable(), at: z.number().int() })
    .nullable(),
  reason: z.string().max(2000).nullable(),
  sandbox: z.enum(['bubblewrap', 'none']).nullable(),
  scratchUsedMb: z.number().nonnegative().nullable(),
  snapshot: SnapshotRefSchema.nullable(),
  /**
   * Exclusive workloads: the ballot of the witness lease the node runs it
   * under (docs/placement.md, "Witness leases"), a fencing token: between
   * two entries that both claim to run it, the higher epoch is the newer
   * owner. Absent for relaxed workloads and in records of older agents.
   */
  epoch: z.number().int().positive().nullable().optional(),
});
export type ObservedStatus = z.infer<typeof ObservedStatusSchema>;
