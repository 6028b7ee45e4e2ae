import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { newScratchSecret, SCRATCH_SECRET_BYTES, sealScratchSecret } from '../reconciler/scratch-keys.js';
import type { SignedScratchSecret } from '../state/schemas.js';
import { formatIssues } from './issues.js';
import { KeyFileError, writeFileAtomic } from './key-files.js';
import { signScratchSecret } from './scratch-secret-signing.js';

/**
 * The org's scratch secrets (docs/security.md, "Encrypted scratch"): one
 * random 32-byte secret per generation, kept beside the CA key in
 * `<orgdir>/scratch-secrets.json` (0600, as secret as ca.key). Generation 1
 * is made the first time a node is enrolled (or at `silo org init`); every
 * revocation adds the next (`silo ca revoke`). Old generations are kept: a
 * service's scratch written under one stays readable with it.
 *
 *   {"v": 1, "generations": [{"generation": 1, "secret": "<base64>", "createdAt": <ms>}, …]}
 */
export const SCRATCH_SECRETS_FILE = 'scratch-secrets.json';

const FileSchema = z.strictObject({
  v: z.literal(1),
  generations: z
    .array(
      z.strictObject({
        generation: z.number().int().positive(),
        secret: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, '32 bytes of base64'),
        createdAt: z.number().int().nonnegative(),
      }),
    )
    .max(10_000),
});
type SecretsFile = z.infer<typeof FileSchema>;

/** Generation → secret, in memory. */
export type ScratchSecrets = Map<number, Buffer>;

async function readSecretsFile(path: string): Promise<SecretsFile | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new KeyFileError(
      path,
      `cannot read the org scratch secrets (${(err as NodeJS.ErrnoException).code})`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KeyFileError(path, 'org scratch secrets: not JSON');
  }
  const parsed = FileSchema.safeParse(json);
  if (!parsed.success)
    throw new KeyFileError(path, `org scratch secrets: ${formatIssues(parsed.error.issues)}`);
  const seen = new Set<number>();
  for (const entry of parsed.data.generations) {
    if (seen.has(entry.generation))
      throw new KeyFileError(path, `org scratch secrets: generation ${entry.generation} twice`);
    seen.add(entry.generation);
  }
  return parsed.data;
}

function toSecrets(file: SecretsFile): ScratchSecrets {
  const out: ScratchSecrets = new Map();
  for (const entry of [...file.generations].sort((a, b) => a.generation - b.generation)) {
    const secret = Buffer.from(entry.secret, 'base64');
    if (secret.length !== SCRATCH_SECRET_BYTES) throw new Error('unreachable: schema checks the length');
    out.set(entry.generation, secret);
  }
  return out;
}

async function writeSecretsFile(path: string, file: SecretsFile): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`);
}

function append(file: SecretsFile | null, now: number): { file: SecretsFile; generation: number } {
  const generations = file?.generations ?? [];
  const generation = Math.max(0, ...generations.map((g) => g.generation)) + 1;
  const entry = { generation, secret: newScratchSecret().toString('base64'), createdAt: now };
  return { file: { v: 1, generations: [...generations, entry] }, generation };
}

/** The org's scratch secrets; with `create`, generation 1 is made when the org has none yet. */
export async function loadScratchSecrets(
  orgDir: string,
  options: { create?: boolean; now?: number } = {},
): Promise<ScratchSecrets> {
  const path = join(orgDir, SCRATCH_SECRETS_FILE);
  const file = await readSecretsFile(path);
  if (file !== null && file.generations.length > 0) return toSecrets(file);
  if (options.create !== true) return new Map();
  const made = append(file, options.now ?? Date.now());
  await writeSecretsFile(path, made.file);
  return toSecrets(made.file);
}

/**
 * After a revocation at `revokedAt`: the org's newest generation is one
 * made after it (made now unless an earlier run already did, so a retried
 * `silo ca revoke` does not rotate twice). Returns its number and all secrets.
 */
export async function generationAfter(
  orgDir: string,
  revokedAt: number,
  now = Date.now(),
): Promise<{ generation: number; secrets: ScratchSecrets; rotated: boolean }> {
  const path = join(orgDir, SCRATCH_SECRETS_FILE);
  const file = await readSecretsFile(path);
  const newest = file?.generations.reduce<SecretsFile['generations'][number] | null>(
    (best, g) => (best === null || g.generation > best.generation ? g : best),
    null,
  );
  if (file !== null && newest != null && newest.createdAt > revokedAt)
    return { generation: newest.generation, secrets: toSecrets(file), rotated: false };
  const made = append(file, Math.max(now, revokedAt + 1));
  await writeSecretsFile(path, made.file);
  return { generation: made.generation, secrets: toSecrets(made.file), rotated: true };
}

/**
 * `secrets` (every generation, or the ones listed) sealed to one node's
 * WireGuard key and signed by the CA: what its bundle or the enrollment
 * document carries for it.
 */
export function sealScratchSecretsFor(
  caPrivateKey: KeyObject,
  secrets: ScratchSecrets,
  node: { nodeId: string; wgPublicKey: string },
  generations: readonly number[] = [...secrets.keys()],
): SignedScratchSecret[] {
  return [...generations]
    .sort((a, b) => a - b)
    .map((generation) => {
      const secret = secrets.get(generation);
      if (secret === undefined) throw new Error(`the org has no scratch secret generation ${generation}`);
      const sealed = sealScratchSecret(
        secret,
        { nodeId: node.nodeId, publicKey: node.wgPublicKey },
        generation,
      );
      return signScratchSecret(caPrivateKey, sealed);
    });
}
