import { z } from 'zod';
import { formatIssues } from '../../identity/issues.js';
import { NodeIdSchema, WorkloadNameSchema, WorkloadSpecSchema } from '../../state/schemas.js';
import { badRequest } from './errors.js';

/** Parses `value` with `schema` or fails the request with 400 naming every problem. */
export function parseInput<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (!result.success) throw badRequest(`invalid ${what}: ${formatIssues(result.error.issues)}`);
  return result.data;
}

export const WorkloadNameParams = z.strictObject({ name: WorkloadNameSchema });
export const NodeIdParams = z.strictObject({ id: NodeIdSchema });
export const WorkloadParams = z.strictObject({ workload: WorkloadNameSchema });
export const DigestParams = z.strictObject({
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'image digest: sha256:<64 lowercase hex>'),
});

/**
 * A workload spec as a client writes it: every field of the document's spec
 * but the revision (the view assigns it; a given one is ignored). Unknown
 * fields are refused so a typo is an error, not a silently dropped setting.
 */
export const WorkloadSpecInputSchema = WorkloadSpecSchema.omit({ revision: true })
  .extend({ revision: z.number().optional() })
  .strict();

export const DrainBodySchema = z
  .strictObject({ by: z.string().min(1).max(200).optional() })
  .optional()
  .transform((body) => body ?? {});

const Flag = z
  .enum(['1', '0', 'true', 'false'])
  .optional()
  .transform((v) => v === '1' || v === 'true');

export const LogsQuerySchema = z.strictObject({
  lines: z.coerce.number().int().min(0).max(100_000).default(100),
  follow: Flag,
  /** Read this node's log instead of the holder's. */
  node: NodeIdSchema.optional(),
});
