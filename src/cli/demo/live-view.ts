import { table } from '../format.js';
import type { ClusterSnapshot } from './cluster.js';

export interface DemoSummary {
  nodes: number;
  alive: number;
  converged: boolean;
  workloads: Record<string, string>;
}

export function summarize(snapshot: ClusterSnapshot): DemoSummary {
  const workloads: Record<string, string> = {};
  for (const w of snapshot.workloads ?? []) workloads[w.name] = w.phase;
  return { nodes: snapshot.nodes.length, alive: snapshot.alive, converged: snapshot.converged, workloads };
}

/** The demo's status screen: nodes with liveness and digests, workloads with holder and phase. */
export function renderSnapshot(snapshot: ClusterSnapshot, header: string): string {
  const nodes = table(
    ['NODE', 'API', 'CONNECTIONS', 'SEEN ALIVE BY', 'ENROLLMENT', 'WORKLOADS', 'OBSERVED', 'IN SYNC'],
    snapshot.nodes.map((n) => {
      const s = n.status;
      const c = s?.convergence;
      return [
        n.nodeId,
        n.up ? 'up' : 'down',
        s ? String(s.peers) : '-',
        n.up ? `${n.seenAliveBy}/${n.observers}` : '-',
        s?.digests.enrollment ?? '-',
        s?.digests.workloads ?? '-',
        s?.digests.observed ?? '-',
        c ? (c.converged ? 'yes' : `no, ${Math.round(c.lagMs)}ms`) : '-',
      ];
    }),
  );
  const workloads =
    snapshot.workloads === null
      ? 'workloads: no node answered'
      : snapshot.workloads.length === 0
        ? 'no workloads'
        : table(
            ['WORKLOAD', 'REV', 'PHASE', 'HOLDER', 'RESTARTS', 'REASON'],
            snapshot.workloads.map((w) => [
              w.name,
              String(w.spec.revision),
              w.phase,
              w.holder ?? '-',
              String(w.restarts),
              w.reason ?? '',
            ]),
          );
  const state = snapshot.converged
    ? `converged: all ${snapshot.nodes.length} nodes hold the same documents`
    : 'not converged: digests differ or a node does not answer';
  return [
    header,
    '',
    nodes,
    '',
    `${state}; ${snapshot.alive}/${snapshot.nodes.length} alive`,
    '',
    workloads,
  ].join('\n');
}
