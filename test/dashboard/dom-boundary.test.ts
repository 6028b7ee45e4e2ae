import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

/**
 * The dashboard's files reference the DOM lib (src/dashboard/web/types.ts),
 * which tsc then applies to the whole program: node code could name browser
 * globals and still type-check, then fail at run time. This keeps them where
 * they belong.
 */
const BROWSER_ONLY =
  /\bdocument\.(getElementById|querySelector|createElement|body)|\bwindow\.(location|addEventListener)|\b(sessionStorage|localStorage|HTML[A-Za-z]*Element|TextDecoderStream)\b/;

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(path)));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

test('browser globals appear in src/dashboard/web/ only', async () => {
  const offenders: string[] = [];
  for (const file of await sources('src')) {
    if (file.startsWith(join('src', 'dashboard', 'web'))) continue;
    const lines = (await readFile(file, 'utf8')).split('\n');
    lines.forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, '').replace(/^\s*\/?\*.*$/, '');
      if (BROWSER_ONLY.test(code)) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(offenders, []);
});
