import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { siloProcess } from './helpers.js';

async function demoDirs(): Promise<Set<string>> {
  return new Set((await readdir(tmpdir())).filter((name) => name.startsWith('silo-demo-')));
}

test('silo demo --nodes 3 --duration-s 8 --json: 3 agents alive and converged, cleaned up', async () => {
  const before = await demoDirs();
  const res = await siloProcess(['demo', '--nodes', '3', '--duration-s', '8', '--json'], {}, 240_000);
  assert.equal(res.code, 0, res.stderr);
  const lines = res.stdout.trim().split('\n');
  const summary = JSON.parse(lines[lines.length - 1] ?? '') as {
    nodes: number;
    alive: number;
    converged: boolean;
    workloads: Record<string, string>;
  };
  assert.equal(summary.nodes, 3);
  assert.equal(summary.alive, 3);
  assert.equal(summary.converged, true);
  assert.equal(typeof summary.workloads, 'object');
  // It says how to point the CLI at it, with a command that works from a checkout.
  assert.match(res.stderr, /try: SILO_SOCKET=\S+\/node-1\/silo\.sock node \S+\/bin\/silo\.js status/);
  const leftover = [...(await demoDirs())].filter((name) => !before.has(name));
  assert.deepEqual(leftover, [], 'the temp dir is removed');
});

test('silo demo rejects a bad --nodes value with exit 2', async () => {
  const res = await siloProcess(['demo', '--nodes', '0']);
  assert.equal(res.code, 2);
  assert.match(res.stderr, /--nodes <n>.*expected an integer from 1 to 16/);
});
