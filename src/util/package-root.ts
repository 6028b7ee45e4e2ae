import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | null = null;

/**
 * The directory of silo's package.json: where bin/, config/, sim/ and bench/
 * are. Found by walking up from this module, so it is the same whether the
 * code runs from src/ through tsx or from the CLI bundle
 * (node_modules/.cache/silo, docs/cli.md "Start-up").
 */
export function packageRoot(): string {
  if (cached !== null) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bin', 'silo.js'))) {
      cached = dir;
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error(`silo's package root not found above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}
