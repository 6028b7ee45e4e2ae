import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import {
  ScratchKeyError,
  ScratchKeyring,
  type SealedScratchSecret,
  unsealScratchSecret,
} from './scratch-keys.js';

/**
 * `<identity_dir>/scratch-keys.json`: the org scratch secrets sealed to this
 * node (docs/security.md, "Encrypted scratch"), a JSON array of envelopes,
 * one per generation. Ciphertext at rest; opened into memory at agent start
 * with the node's X25519 (WireGuard) private key. Absent file: this node
 * has no scratch keys (encrypted scratch stays off).
 */
export const SCRATCH_KEYS_FILE = 'scratch-keys.json';

const B64 = z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/);
const SealedSchema = z.array(
  z.strictObject({
    v: z.literal(1),
    nodeId: z.string().min(1),
    generation: z.number().int().positive(),
    epk: B64,
    iv: B64,
    ct: B64,
  }),
);

export async function loadScratchKeyring(
  path: string,
  self: { nodeId: string; privateKey: string },
): Promise<ScratchKeyring | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ScratchKeyError(`${path}: cannot read: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ScratchKeyError(`${path}: not JSON`);
  }
  const parsed = SealedSchema.safeParse(json);
  if (!parsed.success) throw new ScratchKeyError(`${path}: ${z.prettifyError(parsed.error)}`);
  const ring = new ScratchKeyring();
  for (const sealed of parsed.data as SealedScratchSecret[]) {
    try {
      ring.add(sealed.generation, unsealScratchSecret(sealed, self));
    } catch (err) {
      throw new ScratchKeyError(`${path}: ${(err as Error).message}`);
    }
  }
  return ring;
}
