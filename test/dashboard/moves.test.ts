import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { NodeRow, WorkloadRow } from '../../src/agent/api/views.js';
import { HolderChanges } from '../../src/dashboard/web/moves.js';

/** The dashboard's "Moves and takeovers" classification, without a browser. */

function node(nodeId: string, liveness: NodeRow['liveness'], revoked = false): NodeRow {
  return { nodeId, liveness, revoked: revoked ? { revokedAt: 1, reason: 'gone' } : null } as NodeRow;
}

function wl(name: string, holder: string | null, epoch: number | null = null): WorkloadRow {
  return { name, holder, epoch } as WorkloadRow;
}

const alive = [node('n1', 'alive'), node('n2', 'alive'), node('n3', 'alive')];

describe('dashboard holder changes', () => {
  test('the first refresh is a baseline; a change of holder to a live old holder is a move', () => {
    const changes = new HolderChanges();
    assert.deepEqual(changes.update({ nodes: alive, workloads: [wl('web', 'n1')] }), []);
    assert.deepEqual(changes.update({ nodes: alive, workloads: [wl('web', 'n1')] }), []);
    assert.deepEqual(changes.update({ nodes: alive, workloads: [wl('web', 'n2', 3)] }), [
      { workload: 'web', from: 'n1', to: 'n2', takeover: false, fromState: 'alive', epoch: 3 },
    ]);
  });

  test('an old holder that is not alive (or revoked) makes it a takeover', () => {
    const changes = new HolderChanges();
    changes.update({ nodes: alive, workloads: [wl('a', 'n1'), wl('b', 'n2')] });
    const seen = changes.update({
      nodes: [node('n1', 'dead'), node('n2', 'alive', true), node('n3', 'alive')],
      workloads: [wl('a', 'n3'), wl('b', 'n3')],
    });
    assert.deepEqual(
      seen.map((c) => [c.workload, c.takeover, c.fromState]),
      [
        ['a', true, 'dead'],
        ['b', true, 'revoked'],
      ],
    );
  });

  test('a moment without a holder does not hide the move; a new or deleted workload is no move', () => {
    const changes = new HolderChanges();
    changes.update({ nodes: alive, workloads: [wl('web', 'n1')] });
    assert.deepEqual(changes.update({ nodes: alive, workloads: [wl('web', null), wl('new', 'n2')] }), []);
    const seen = changes.update({ nodes: alive, workloads: [wl('web', 'n3'), wl('new', 'n2')] });
    assert.deepEqual(
      seen.map((c) => `${c.workload} ${c.from}→${c.to}`),
      ['web n1→n3'],
    );
    assert.deepEqual(changes.update({ nodes: alive, workloads: [] }), []);
    assert.deepEqual(changes.update({ nodes: alive, workloads: [wl('web', 'n2')] }), []);
  });
});
