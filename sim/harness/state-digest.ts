import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A digest of a directory's content: relative paths and file bytes, nothing
 * else (no modes, no times), so a snapshot restored elsewhere compares equal
 * to the directory it was taken from. A missing directory digests like an
 * empty one.
 */
export async function digestTree(root: string): Promise<string> {
  const hash = createHash('sha256');
  const files = await listFiles(root, '');
  files.sort();
  for (const rel of files) {
    const bytes = await readFile(join(root, rel)).catch(() => null);
    if (bytes === null) continue;
    hash.update(rel).update('\0').update(String(bytes.byteLength)).update('\0').update(bytes);
  }
  return `sha256:${hash.digest('hex')}`;
}

async function listFiles(root: string, prefix: string): Promise<string[]> {
  const entries = await readdir(join(root, prefix), { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  for (const entry of entries) {
    const rel = prefix === '' ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) out.push(...(await listFiles(root, rel)));
    else if (entry.isFile()) out.push(rel);
  }
  return out;
}
