import { svg } from './dom.js';
import type { Snapshot } from './types.js';

const WIDTH = 400;
const HEIGHT = 250;
/** The nodes sit on an ellipse: wide rather than tall, like the card. */
const RX = 150;
const RY = 90;

/** The key of an undirected edge: its two node ids in order. */
export function edgeKey(a: string, b: string): string {
  return a < b ? `${a}--${b}` : `${b}--${a}`;
}

/**
 * The cluster's connections as undirected edges (keys from `edgeKey`):
 * this agent's own open connections, and every other node's recorded
 * `peers` (GET /v1/nodes, from its observed report). One side saying so is
 * enough: the two records are written seconds apart. Peers that are not
 * enrolled nodes (a tool's connection) are counted apart, not drawn.
 */
export function clusterEdges(snap: Snapshot): { edges: Set<string>; extra: number } {
  const self = snap.status.nodeId;
  const byPeer = new Map(snap.nodes.map((n) => [n.peerId, n.nodeId]));
  const enrolled = new Set(snap.nodes.map((n) => n.nodeId));
  const edges = new Set<string>();
  const strangers = new Set<string>();
  for (const c of snap.status.connections) {
    if (c.status !== 'open') continue;
    const nodeId = byPeer.get(c.peerId);
    if (nodeId === undefined) strangers.add(c.peerId);
    else if (nodeId !== self) edges.add(edgeKey(self, nodeId));
  }
  for (const n of snap.nodes) {
    // Our own edges come from the live connections above, not from our (older) record.
    if (n.self || n.peers === null || n.peers === undefined) continue;
    for (const peer of n.peers) {
      if (peer !== n.nodeId && enrolled.has(peer)) edges.add(edgeKey(n.nodeId, peer));
    }
  }
  return { edges, extra: strangers.size };
}

/**
 * Every enrolled node on a ring (this agent outlined), an edge for each
 * connection in the cluster: this agent's own, and those the other nodes
 * recorded in their observed reports (older agents record none: their
 * edges to nodes other than this one are missing, never invented).
 */
export function renderGraph(host: HTMLElement, snap: Snapshot): void {
  const { edges, extra } = clusterEdges(snap);
  const cx = WIDTH / 2;
  const cy = HEIGHT / 2;
  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: 'img',
    'aria-label': 'connection graph',
  });
  // Every node on one ellipse, this agent first: a chord between two nodes never runs through a third,
  // as an edge between two peers did through a centred agent.
  const ring = [...snap.nodes.filter((n) => n.self), ...snap.nodes.filter((n) => !n.self)];
  const positions = new Map<string, { x: number; y: number }>();
  ring.forEach((n, i) => {
    const angle = Math.PI + (2 * Math.PI * i) / Math.max(1, ring.length);
    positions.set(n.nodeId, { x: cx + RX * Math.cos(angle), y: cy + RY * Math.sin(angle) });
  });
  for (const key of [...edges].sort()) {
    const [a, b] = key.split('--') as [string, string];
    const from = positions.get(a);
    const to = positions.get(b);
    if (from === undefined || to === undefined) continue;
    const own = a === snap.status.nodeId || b === snap.status.nodeId;
    root.append(
      svg('line', {
        x1: from.x,
        y1: from.y,
        x2: to.x,
        y2: to.y,
        'data-edge': key,
        class: own ? 'own' : 'reported',
      }),
    );
  }
  for (const n of snap.nodes) {
    const at = positions.get(n.nodeId);
    if (at === undefined) continue;
    const cls = `${n.liveness}${n.self ? ' self' : ''}`;
    root.append(svg('circle', { cx: at.x, cy: at.y, r: 26, class: cls, 'data-graph-node': n.nodeId }));
    root.append(svg('text', { x: at.x, y: at.y + 4 }, n.nodeId));
  }
  if (extra > 0) root.append(svg('text', { x: cx, y: HEIGHT - 6 }, `+${extra} other connections`));
  host.replaceChildren(root);
}
