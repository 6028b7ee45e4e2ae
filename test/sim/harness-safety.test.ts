import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SafetyChecker } from '../../sim/harness/invariants/safety.js';
import { SimCluster } from '../../sim/harness/sim-cluster.js';
import { DEFAULT_WORKLOAD } from '../../sim/harness/workload.js';
import { FAST_SIM_TIMING } from '../helpers/fast-timings.js';
import { waitFor } from '../helpers/wait.js';

const FAST = FAST_SIM_TIMING;

/**
 * Proof that the safety checker can fail: every simulated process ignores
 * its stop (the runner reports `released`, the process keeps running), so
 * draining the holder starts the workload on a second node while the first
 * copy still runs.
 */
test('the safety checker reports a persistent workload running on two nodes', {
  timeout: 120_000,
}, async (t) => {
  const cluster = await SimCluster.start({ seed: 3, nodes: 3, timing: FAST, network: { latencyMs: 2 } });
  t.after(() => cluster.close());
  const safety = new SafetyChecker(cluster.registry);
  t.after(() => safety.stop());

  cluster.apply({ ...DEFAULT_WORKLOAD, name: 'db', stopTimeoutMs: 300 });
  await waitFor('db running', () => cluster.registry.runningOn('db').some((p) => p.ready));
  assert.equal(safety.result().ok, true, 'one copy is no violation');

  for (const name of cluster.names()) cluster.runnerFaults(name).leakOnStop = true;
  const holder = cluster.registry.runningOn('db')[0]?.node as string;
  cluster.drain(holder);
  await waitFor('a second copy of db', () => cluster.registry.runningOn('db').length > 1);

  const result = safety.result();
  assert.equal(result.ok, false);
  assert.equal(result.name, 'safety');
  assert.match(result.violations[0] ?? '', /db running on n\d and n\d/);
  assert.match(result.violations[0] ?? '', new RegExp(holder));
  assert.deepEqual(cluster.runner(holder)?.leakedProcesses(), ['db']);
  assert.equal(safety.violations()[0]?.workload, 'db');
});
