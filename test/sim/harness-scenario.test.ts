import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadScenario } from '../../sim/scenario/load.js';
import { runScenario } from '../../sim/scenario/run-scenario.js';

const SMOKE = fileURLToPath(new URL('../../sim/scenarios/smoke.toml', import.meta.url));

test('a 5-agent scenario (partition, writes on both sides, heal, drain) holds every invariant', {
  timeout: 120_000,
}, async () => {
  const scenario = await loadScenario(SMOKE);
  let timeline = '';
  const summary = await runScenario(scenario, {
    out: (text) => {
      timeline += text;
    },
    progress: false,
  });
  const failed = Object.values(summary.invariants).filter((r) => !r.ok);
  assert.deepEqual(
    failed.map((r) => `${r.name}: ${r.summary} ${r.violations.join('; ')}`),
    [],
    `invariants failed; timeline:\n${timeline}`,
  );
  assert.equal(summary.ok, true);
  assert.deepEqual(Object.keys(summary.invariants).sort(), [
    'convergence',
    'liveness',
    'safety',
    'state',
    'writes',
  ]);
  // The scenario really did what it says: 100 writes, one planned move checked, the drained node emptied.
  assert.equal(summary.invariants.writes?.checked, 100);
  assert.ok(
    (summary.invariants.state?.checked ?? 0) >= 1,
    `the drain moved the workload with its state; timeline:\n${timeline}`,
  );
  assert.ok(
    (summary.invariants.safety?.checked ?? 0) >= 2,
    `the workload started twice (first placement, move); timeline:\n${timeline}`,
  );
  assert.match(timeline, /partition \[n1, n2\] \| \[n3\.\.n5\]/);
  assert.match(
    timeline,
    /process stopped on n\d+ at counter \d+ \(moving to n\d+: holder n\d+ is draining\)/,
  );
  // Load is reported beside timings.
  assert.match(timeline, /converged: 5 running agents equal after \d+ ms \(loop p99 \d+ ms/);
  assert.equal(typeof summary.metrics.load.cpuPct, 'number');
});
