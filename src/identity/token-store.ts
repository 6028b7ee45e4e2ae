import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { EnrollmentRecordSchema } from '../state/schemas.js';
import { formatIssues } from './issues.js';
import { TOKEN_ID_PATTERN } from './join-token.js';
import { KeyFileError, writeFileAtomic } from './key-files.js';

/**
 * The org dir's join tokens, one file each: `<orgdir>/tokens/<id>.json`
 * (mode 0600, written by atomic rename). A file holds the token's derived
 * join key (join-token.ts, `joinKeyOf`), never its secret, so the token
 * string cannot be rebuilt from the org dir (docs/security.md, "Join tokens").
 */

export const TOKENS_DIR = 'tokens';

export const StoredTokenSchema = z.strictObject({
  v: z.literal(1),
  id: z.string().regex(TOKEN_ID_PATTERN),
  /** base64url of HKDF(secret): what the provisioner derives the MAC and bundle keys from. */
  joinKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
  provisioner: z.string(),
  createdAt: z.number().int().nonnegative(),
  expiresAt: z.number().int().nonnegative(),
  uses: z.number().int().positive(),
  usesLeft: z.number().int().nonnegative(),
  labels: EnrollmentRecordSchema.shape.labels,
  revoked: z.boolean(),
  revokedAt: z.number().int().nonnegative().optional(),
  /** Node ids enrolled with this token, in order. */
  joined: z.array(z.string()).default([]),
});
export type StoredToken = z.infer<typeof StoredTokenSchema>;

export function tokenPath(orgDir: string, id: string): string {
  return join(orgDir, TOKENS_DIR, `${id}.json`);
}

export async function saveToken(orgDir: string, token: StoredToken): Promise<void> {
  await writeFileAtomic(tokenPath(orgDir, token.id), `${JSON.stringify(token, null, 2)}\n`);
}

/** The stored token `id`, or null when there is none (an id that is not 16 hex digits never is). */
export async function loadToken(orgDir: string, id: string): Promise<StoredToken | null> {
  if (!TOKEN_ID_PATTERN.test(id)) return null;
  const path = tokenPath(orgDir, id);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new KeyFileError(path, `cannot read join token: ${(err as Error).message}`);
  }
  return parseStored(path, text);
}

export async function listTokens(orgDir: string): Promise<StoredToken[]> {
  const dir = join(orgDir, TOKENS_DIR);
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: StoredToken[] = [];
  for (const name of names.filter((n) => /^[0-9a-f]{16}\.json$/.test(n))) {
    const path = join(dir, name);
    out.push(parseStored(path, await readFile(path, 'utf8')));
  }
  return out.sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
}

function parseStored(path: string, text: string): StoredToken {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new KeyFileError(path, `join token is not JSON: ${(err as Error).message}`);
  }
  const result = StoredTokenSchema.safeParse(value);
  if (!result.success) throw new KeyFileError(path, `not a join token: ${formatIssues(result.error.issues)}`);
  return result.data;
}

export type TokenState = 'active' | 'expired' | 'used-up' | 'revoked';

/** Why a token can no longer be used, revocation first (it is the operator's explicit word). */
export function tokenState(token: StoredToken, now: number): TokenState {
  if (token.revoked) return 'revoked';
  if (token.usesLeft <= 0) return 'used-up';
  if (now >= token.expiresAt) return 'expired';
  return 'active';
}
