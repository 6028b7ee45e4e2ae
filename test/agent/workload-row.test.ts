import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  quorumShortfall,
  type WitnessesView,
  withQuorumReason,
  workloadRow,
} from '../../src/agent/api/views.js';
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

  test('placed on a node that reported nothing yet: the row says where and what it waits for', () => {
    const row = workloadRow(spec, observed([]), null, 'n2');
    assert.deepEqual(
      [row.holder, row.phase, row.reason],
      [null, 'pending', 'placed on n2; no status from it yet'],
    );
    // Once n2 speaks, its status (and its reason) is what the row shows.
    const pulled = workloadRow(spec, observed([['n2', status('pulling', 'fetching image')]]), null, 'n2');
    assert.deepEqual([pulled.holder, pulled.reason], ['n2', 'fetching image']);
    // Placement's own "pending: <why>" still wins when nothing is placed.
    const stuck = workloadRow(spec, observed([]), null, 'pending: fits no node: cpus 4 > 1 free');
    assert.equal(stuck.reason, 'fits no node: cpus 4 > 1 free');
  });

  test('without a witness quorum an exclusive workload that is not running says so, naming the missing witnesses', () => {
    const view: WitnessesView = {
      config: { version: 3, witnesses: ['n1', 'n2', 'n3'], issuedAt: 1 },
      witnesses: [
        { nodeId: 'n1', enrolled: true, liveness: 'self' },
        { nodeId: 'n2', enrolled: true, liveness: 'dead' },
        { nodeId: 'n3', enrolled: true, liveness: 'unknown' },
      ],
    };
    const shortfall = quorumShortfall(view);
    assert.deepEqual(shortfall, { alive: 1, total: 3, quorum: 2, missing: ['n2', 'n3'] });
    const exclusive = { ...spec, scratchClass: 'persistent', onPartition: 'stop' } as WorkloadSpec;
    const stuck = workloadRow(
      exclusive,
      observed([['n2', status('stopping', 'agent stopping')]]),
      null,
      'n2',
      new Set(['n2']),
    );
    const row = withQuorumReason(stuck, shortfall, new Set(['n2']));
    assert.equal(
      row.reason,
      'n2 is dead; its last status was "stopping: agent stopping"; no witness quorum: 1 of 3 witnesses alive, ' +
        '2 needed (missing: n2, n3); it cannot start or be taken over until they return',
    );
    // Running on a live node: nothing to explain. A relaxed workload needs no quorum.
    const running = workloadRow(exclusive, observed([['n1', status('running')]]), null, 'n1');
    assert.equal(withQuorumReason(running, shortfall).reason, null);
    const relaxed = { ...spec, scratchClass: 'volatile', onPartition: 'keep' } as WorkloadSpec;
    assert.equal(
      withQuorumReason(workloadRow(relaxed, observed([]), null, 'pending: x'), shortfall).reason,
      'x',
    );
    // With a quorum, or a reason that already says so, the row is left alone.
    view.witnesses[1] = { nodeId: 'n2', enrolled: true, liveness: 'alive' };
    assert.equal(quorumShortfall(view), null);
    assert.equal(withQuorumReason(stuck, null), stuck);
    const said = workloadRow(exclusive, observed([]), null, 'pending: no witness quorum');
    assert.equal(withQuorumReason(said, shortfall).reason, 'no witness quorum');
  });

  test('a holder placement would move it from, with nowhere to go (a drain), says so while it keeps running', () => {
    const why =
      'pending: no alive, non-draining node matches constraints {} (1 match); holder n1 is draining';
    const row = workloadRow(spec, observed([['n1', status('running')]]), null, why);
    assert.deepEqual(
      [row.holder, row.phase, row.reason],
      [
        'n1',
        'running',
        'placement has no node for it (it stays on n1): no alive, non-draining node matches constraints {} (1 match); holder n1 is draining',
      ],
    );
    // Placed where it runs: nothing to say.
    assert.equal(workloadRow(spec, observed([['n1', status('running')]]), null, 'n1').reason, null);
  });
});
