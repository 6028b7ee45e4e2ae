import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseScenario } from '../../sim/scenario/load.js';
import { runScenario } from '../../sim/scenario/run-scenario.js';

/**
 * Proof that the safety checker can fail: every simulated process ignores
 * its stop (the runner reports `released`, the process keeps running), so
 * a drain starts the workload on a second node while the first copy lives.
 */
const DOUBLE_RUN = `
name = "double-run"
seed = 3
nodes = 3

[timing]
heartbeat = "200ms"
suspect_after = "600ms"
dead_after = "1500ms"
sync_grace = "400ms"
gossip_heartbeat = "300ms"
fence_after = "1s"
claim_settle = "200ms"
fence_slack = "200ms"
tick = "150ms"
checkpoint_interval = "500ms"
handoff = "300ms"

[[steps]]
at = "0s"
action = "apply"
workload = { name = "db", scratch_class = "persistent", stop_timeout = "300ms" }

[[steps]]
at = "+0s"
action = "wait"
until = "placed"
timeout = "30s"

[[steps]]
at = "+0s"
action = "drain"
nodes = "holder:db"

[[steps]]
at = "+0s"
action = "wait"
until = "placed"
timeout = "4s"

[expect]
invariants = ["safety"]
converge_within = "10s"
liveness_bound = "10s"
`;

test('the safety checker reports a persistent workload running on two nodes', {
  timeout: 120_000,
}, async () => {
  const scenario = parseScenario(DOUBLE_RUN, 'double-run.toml');
  let timeline = '';
  const summary = await runScenario(scenario, {
    out: (text) => {
      timeline += text;
    },
    progress: false,
    onCluster: (cluster) => {
      for (const name of cluster.names()) cluster.runnerFaults(name).leakOnStop = true;
    },
  });
  assert.equal(summary.ok, false, `the double run went unnoticed; timeline:\n${timeline}`);
  const safety = summary.invariants.safety;
  assert.ok(safety !== undefined);
  assert.equal(safety.ok, false);
  assert.match(safety.violations[0] ?? '', /db running on n\d and n\d/);
  assert.match(timeline, /SAFETY VIOLATION: db runs on n\d and n\d/);
});
