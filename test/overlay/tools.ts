import type { TestContext } from 'node:test';
import { commandExists } from '../../src/overlay/exec.js';

/**
 * Why a test that needs system tools (or root) cannot run here, or null when
 * it can. Under CI a missing requirement is a failure, not a skip: the CI
 * image is supposed to provide them (.ci/run installs the apt packages).
 */
export async function missingRequirements(options: {
  root?: boolean;
  tools: string[];
}): Promise<string | null> {
  const missing: string[] = [];
  if (options.root === true && process.getuid?.() !== 0) missing.push('root');
  for (const tool of options.tools) if (!(await commandExists(tool))) missing.push(tool);
  return missing.length > 0 ? `needs ${missing.join(', ')}` : null;
}

/** Skip `t` with a visible reason (fail under CI=true) when requirements are missing; true = go ahead. */
export async function requireOrSkip(
  t: TestContext,
  options: { root?: boolean; tools: string[] },
): Promise<boolean> {
  const reason = await missingRequirements(options);
  if (reason === null) return true;
  if (process.env.CI === 'true') throw new Error(`${reason} (required under CI)`);
  t.diagnostic(`SKIPPED: ${reason}`);
  t.skip(reason);
  return false;
}
