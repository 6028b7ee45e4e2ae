import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { workloadRow } from '../../src/agent/api/views.js';
import type { ObservedStatus, Phase, WorkloadSpec } from '../../src/state/schemas.js';

/** What `silo workloads` and the API say of a workload, from the observed statuses and this agent's liveness view. */

const spec = { name: 'db', revision: 1 } as WorkloadSpec;
const status = (phase: Phase, reason: string | null = null): ObservedStatus => ({
  phase,
  since: 1,
  revision: 1,
  restarts: 0,
  lastExit: null,
  reason,
  sandbox: null,
  scratchUsedMb: null,
  snapshot: null,
});
const observed = (entries: [string, ObservedStatus][]) =>
  new Map(entries.map(([node, s]) => [node, new Map([['db', s]])]));

describe('workload row', () => {
  test("a dead node's status is its last word: the row says so, with placement's reason", () => {
    const row = workloadRow(
      spec,
      observed([['n2', status('stopping', 'agent stopping')]]),
      null,
      'pending: no witness quorum',
      new Set(['n2']),
    );
    assert.equal(row.phase, 'stopping');
    assert.equal(row.reason, 'n2 is dead; its last status was "stopping: agent stopping"; no witness quorum');
  });

  test("a live node's status speaks before a dead node's, whatever the phases", () => {
    const entries: [string, ObservedStatus][] = [
      ['n1', status('running')],
      ['n3', status('starting', 'state: n1 checkpoint')],
    ];
    const row = workloadRow(spec, observed(entries), null, null, new Set(['n1']));
    assert.deepEqual([row.holder, row.phase, row.reason], ['n3', 'starting', 'state: n1 checkpoint']);
    const alive = workloadRow(spec, observed(entries));
    assert.deepEqual([alive.holder, alive.phase], ['n1', 'running'], 'without a dead node: by phase');
  });
});
