import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Writes a benchmark's report as `<dir>/<name>.json` (everything) and
 * `<dir>/<name>.md` (the table docs/benchmarks.md quotes), creating `dir`.
 */
export async function writeReport(
  dir: string,
  name: string,
  report: unknown,
  markdown: string,
): Promise<{ json: string; markdown: string }> {
  await mkdir(dir, { recursive: true });
  const files = { json: join(dir, `${name}.json`), markdown: join(dir, `${name}.md`) };
  await writeFile(files.json, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(files.markdown, markdown);
  return files;
}
