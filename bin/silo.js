#!/usr/bin/env node
// The `silo` command (docs/cli.md, "Start-up"). silo ships as TypeScript.
// `npm ci` / `npm install` build a bundle of the CLI (`npm run build:cli`,
// esbuild) into node_modules/.cache/silo/cli.mjs; it starts in a fraction of
// the time tsx's loader needs, so it is used whenever it is newer than every
// file under src/. Otherwise (no bundle, or src/ changed since the build)
// the sources run through tsx, as they always did.
import { readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
const bundle = new URL('node_modules/.cache/silo/cli.mjs', root);

function newestUnder(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = `${dir}/${entry.name}`;
    newest = Math.max(newest, entry.isDirectory() ? newestUnder(path) : statSync(path).mtimeMs);
  }
  return newest;
}

function bundleIsFresh() {
  if (process.env.SILO_CLI_FROM_SOURCE === '1') return false;
  try {
    return statSync(bundle).mtimeMs >= newestUnder(fileURLToPath(new URL('src', root)));
  } catch {
    return false;
  }
}

let main;
if (bundleIsFresh()) {
  ({ main } = await import(bundle.href));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/util/polyfill.ts');
  ({ main } = await import('../src/cli/main.ts'));
}
process.exitCode = await main(process.argv);
