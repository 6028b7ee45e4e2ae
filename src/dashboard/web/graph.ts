import { svg } from './dom.js';
import type { Snapshot } from './types.js';

const WIDTH = 400;
const HEIGHT = 250;
/** The other nodes sit on an ellipse around this one: wide rather than tall, like the card. */
const RX = 150;
const RY = 90;

/**
 * This agent in the middle, every enrolled node around it, an edge for each
 * of this agent's open libp2p connections. Only this agent's: the API does
 * not say whom the other nodes are connected to, and the page draws nothing
 * it was not told.
 */
export function renderGraph(host: HTMLElement, snap: Snapshot): void {
  const byPeer = new Map(snap.nodes.map((n) => [n.peerId, n.nodeId]));
  const connected = new Set(
    snap.status.connections.filter((c) => c.status === 'open').map((c) => byPeer.get(c.peerId) ?? c.peerId),
  );
  const others = snap.nodes.filter((n) => !n.self);
  const cx = WIDTH / 2;
  const cy = HEIGHT / 2;
  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: 'img',
    'aria-label': 'connection graph',
  });
  const positions = new Map<string, { x: number; y: number }>();
  positions.set(snap.status.nodeId, { x: cx, y: cy });
  others.forEach((n, i) => {
    // Start left of centre so that two or three peers spread sideways.
    const angle = Math.PI + (2 * Math.PI * i) / Math.max(1, others.length) + Math.PI / 6;
    positions.set(n.nodeId, { x: cx + RX * Math.cos(angle), y: cy + RY * Math.sin(angle) });
  });
  for (const nodeId of connected) {
    const to = positions.get(nodeId);
    if (to === undefined) continue; // a peer that is not an enrolled node (a tool's connection)
    root.append(svg('line', { x1: cx, y1: cy, x2: to.x, y2: to.y, 'data-edge': nodeId }));
  }
  for (const n of snap.nodes) {
    const at = positions.get(n.nodeId);
    if (at === undefined) continue;
    const cls = `${n.liveness}${n.self ? ' self' : ''}`;
    root.append(svg('circle', { cx: at.x, cy: at.y, r: 26, class: cls, 'data-graph-node': n.nodeId }));
    root.append(svg('text', { x: at.x, y: at.y + 4 }, n.nodeId));
  }
  const extra = [...connected].filter((id) => !positions.has(id)).length;
  if (extra > 0) root.append(svg('text', { x: cx, y: HEIGHT - 6 }, `+${extra} other connections`));
  host.replaceChildren(root);
}
