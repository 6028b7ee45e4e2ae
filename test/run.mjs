// Runs every test/**/*.test.ts with node's test runner, one file at a time
// (Node 20's --test does not expand globs, and agents under test share two
// cores, so files run serially for stable timings). `--unit` runs only the
// tests that start no cluster (no agent processes, no libp2p cluster, no
// simulator scenario, no namespaces): the quick loop while developing; those
// files time nothing, so they run one per core at once.
// Other arguments are passed to node --test (e.g. --test-name-pattern).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

/** Files that run clusters, real processes or scenarios (matched against the path). */
const CLUSTER = [
  /^test\/(cli|e2e|gossip|agent)\//,
  /^test\/overlay\/overlay-netns/,
  /^test\/reconciler\/(loop-|orphans|sandbox|example-counter|scratch|supervisor|image)/,
  /^test\/sim\/(scenarios-|harness-|sim-)/,
  /^test\/state\/crash/,
  /\.property\.test\.ts$/,
];

function findTests(dir) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...findTests(path));
    else if (entry.name.endsWith('.test.ts')) found.push(path);
  }
  return found.sort();
}

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const files = findTests('test').filter((file) => !unitOnly || !CLUSTER.some((re) => re.test(file)));
const result = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    `--test-concurrency=${unitOnly ? availableParallelism() : 1}`,
    '--test-timeout=600000',
    ...args.filter((arg) => arg !== '--unit'),
    ...files,
  ],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
