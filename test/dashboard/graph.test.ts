import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { NodeRow } from '../../src/agent/api/views.js';
import { clusterEdges } from '../../src/dashboard/web/graph.js';
import type { Snapshot, StatusBody } from '../../src/dashboard/web/types.js';

/** The dashboard's connection graph edges, without a browser (test/cli/dashboard.test.ts draws them). */

function node(nodeId: string, peers: string[] | null, self = false): NodeRow {
  return { nodeId, peerId: `peer-${nodeId}`, self, peers } as NodeRow;
}

function snapshot(nodes: NodeRow[], open: string[]): Snapshot {
  const connections = open.map((peerId) => ({
    peerId,
    remoteAddr: '',
    direction: 'outbound',
    status: 'open',
  }));
  connections.push({ peerId: 'peer-n3', remoteAddr: '', direction: 'inbound', status: 'closed' });
  return { status: { nodeId: 'n1', connections } as unknown as StatusBody, nodes, workloads: [] };
}

describe('dashboard connection graph', () => {
  test("this agent's open connections and every other node's recorded peers, undirected and once", () => {
    const snap = snapshot(
      [node('n1', ['n4'], true), node('n2', ['n1', 'n3']), node('n3', ['n2', 'ghost']), node('n4', null)],
      ['peer-n2', 'peer-tool', 'peer-tool'],
    );
    const { edges, extra } = clusterEdges(snap);
    // n1--n4 is only in n1's own (stale) record: our live connections speak for us. n3's closed connection
    // is no edge; n2 says it is connected to n1 and that counts too.
    assert.deepEqual([...edges].sort(), ['n1--n2', 'n2--n3']);
    assert.equal(extra, 1, 'one peer that is not an enrolled node');
  });

  test('nodes that recorded nothing (older agents) add no edges', () => {
    const { edges } = clusterEdges(
      snapshot([node('n1', null, true), node('n2', null), node('n3', null)], []),
    );
    assert.deepEqual([...edges], []);
  });
});
