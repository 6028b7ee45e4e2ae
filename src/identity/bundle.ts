import { z } from 'zod';
import { multiaddrProblem } from '../gossip/addresses.js';
import {
  CapacitySchema,
  EnrollmentRecordSchema,
  SignedEnrollmentSchema,
  SignedScratchSecretSchema,
  WitnessConfigRecordSchema,
} from '../state/schemas.js';
import { InputError } from '../util/input-error.js';
import { formatIssues } from './issues.js';
import { DnsSuffixSchema, OrgNameSchema, OverlayCidrSchema } from './org.js';

/**
 * The two JSON documents exchanged at enrollment (docs/protocol.md,
 * "Enrollment records, certificates and revocations"):
 * - the request a node produces for the operator: its ids and public keys,
 * - the bundle the org CA hands back: the signed record plus what the node
 *   needs to join (CA public key, org name, overlay CIDR, seed peers, the
 *   witness configuration).
 */

export const MultiaddrStringSchema = z.string().superRefine((value, ctx) => {
  const problem = multiaddrProblem(value);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: `not a multiaddr: ${problem}` });
});

export const EnrollmentRequestBodySchema = z.strictObject({
  nodeId: EnrollmentRecordSchema.shape.nodeId,
  peerId: EnrollmentRecordSchema.shape.peerId,
  wgPublicKey: EnrollmentRecordSchema.shape.wgPublicKey,
  endpoints: EnrollmentRecordSchema.shape.endpoints,
  capacity: CapacitySchema,
  labels: EnrollmentRecordSchema.shape.labels,
});
/** What the node asserts in its request; `proof` signs exactly this (src/identity/request-proof.ts). */
export type EnrollmentRequestBody = z.infer<typeof EnrollmentRequestBodySchema>;

export const EnrollmentRequestSchema = z.strictObject({
  ...EnrollmentRequestBodySchema.shape,
  /** Proof of possession: the node key's (peerId's) Ed25519 signature of the body. */
  proof: z
    .string({
      error: (issue) =>
        issue.input === undefined
          ? 'missing: the request carries no proof of possession of its node key (written by an older silo? run `silo node init` again)'
          : undefined,
    })
    .regex(/^[A-Za-z0-9+/]{86}==$/, 'Ed25519 signature: 88 chars of base64'),
});
export type EnrollmentRequest = z.infer<typeof EnrollmentRequestSchema>;

export const EnrollmentBundleSchema = z.strictObject({
  v: z.literal(1),
  org: OrgNameSchema,
  overlayCidr: OverlayCidrSchema,
  /** The org's configured service range (a CIDR inside overlayCidr); absent = the upper half. */
  serviceRange: z.string().optional(),
  /** The org's DNS suffix for service names; absent = "silo". */
  dnsSuffix: DnsSuffixSchema.optional(),
  caPublicKey: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'Ed25519 public key: 44 chars of base64'),
  seedPeers: z.array(MultiaddrStringSchema).max(64),
  /**
   * The CA-signed records of the seed nodes. The new node puts them into its
   * enrollment document at start, so its gate admits the seeds and its
   * WireGuard overlay has them as peers before the first sync (which, with
   * overlay.mode = "wireguard", can only run over the overlay).
   */
  seedRecords: z.array(z.strictObject(SignedEnrollmentSchema.shape)).max(64).default([]),
  record: z.strictObject(SignedEnrollmentSchema.shape),
  /**
   * The CA-signed witness configuration in force when the bundle was signed
   * (`silo ca sign` grows it while the org has fewer than
   * DEFAULT_WITNESS_COUNT witnesses). The node puts it into its enrollment
   * document at start when the document has none or an older version.
   * Optional: bundles signed before witness configurations have none.
   */
  witnessConfig: z.strictObject(WitnessConfigRecordSchema.shape).optional(),
  /**
   * Every org scratch secret generation, sealed to this node's WireGuard key
   * and signed by the CA (docs/security.md, "Encrypted scratch"): the agent
   * opens them into memory at start. Absent for clients and for bundles
   * signed before encrypted scratch; later generations arrive through the
   * enrollment document.
   */
  scratchKeys: z.array(z.strictObject(SignedScratchSecretSchema.shape)).max(1024).optional(),
});
export type EnrollmentBundle = z.infer<typeof EnrollmentBundleSchema>;

export class EnrollmentFormatError extends InputError {
  constructor(what: string, detail: string) {
    super(`malformed ${what}: ${detail}`);
    this.name = 'EnrollmentFormatError';
  }
}

/** Validate an enrollment request (parsed JSON or JSON text). */
export function parseEnrollmentRequest(input: unknown): EnrollmentRequest {
  return parseWith(EnrollmentRequestSchema, input, 'enrollment request');
}

/**
 * Validate the shape of an enrollment bundle (parsed JSON or JSON text).
 * Shape only: `verifyEnrollmentBundle` (ca.ts) checks the signature.
 */
export function parseEnrollmentBundle(input: unknown): EnrollmentBundle {
  return parseWith(EnrollmentBundleSchema, input, 'enrollment bundle');
}

function parseWith<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  let value = input;
  if (typeof input === 'string') {
    try {
      value = JSON.parse(input) as unknown;
    } catch (err) {
      throw new EnrollmentFormatError(what, `not JSON (${(err as Error).message})`);
    }
  }
  const result = schema.safeParse(value);
  if (!result.success) throw new EnrollmentFormatError(what, formatIssues(result.error.issues));
  return result.data;
}
