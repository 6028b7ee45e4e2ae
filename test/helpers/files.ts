import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** The files (and names) under `dir`, recursively, whose bytes contain `needle` (what a stolen disk shows). */
export async function filesContaining(dir: string, needle: Buffer): Promise<string[]> {
  const hits: string[] = [];
  const walk = async (path: string): Promise<void> => {
    const info = await stat(path).catch(() => null);
    if (info === null) return;
    if (info.isDirectory()) {
      for (const name of await readdir(path)) {
        if (name.includes(needle.toString('utf8'))) hits.push(join(path, name));
        await walk(join(path, name));
      }
    } else if (info.isFile() && (await readFile(path)).includes(needle)) hits.push(path);
  };
  await walk(dir);
  return hits;
}
