import { clock, el, prependCapped } from './dom.js';
import type { Snapshot } from './types.js';

/**
 * Holder changes between two refreshes: a move when the old holder was
 * alive (a drain, a rebalance), a takeover when it was not (suspect, dead,
 * revoked) and another node took the workload over. The API keeps no such
 * history, so the page only knows what it saw while open.
 */
export class MoveTracker {
  private holders = new Map<string, string | null>();
  private first = true;

  constructor(private readonly list: HTMLElement) {}

  update(snap: Snapshot): void {
    const liveness = new Map(snap.nodes.map((n) => [n.nodeId, n.revoked ? 'revoked' : n.liveness]));
    const next = new Map(snap.workloads.map((w) => [w.name, w.holder]));
    if (!this.first) {
      for (const w of snap.workloads) {
        const before = this.holders.get(w.name) ?? null;
        if (w.holder === null || before === null || before === w.holder) continue;
        const was = liveness.get(before) ?? 'unknown';
        const takeover = was !== 'alive';
        const text = takeover
          ? `takeover: ${w.name} ${before} (${was}) → ${w.holder}`
          : `move: ${w.name} ${before} → ${w.holder}`;
        const epoch = w.epoch === null ? '' : ` epoch ${w.epoch}`;
        prependCapped(
          this.list,
          el(
            'li',
            { 'data-move': w.name, 'data-from': before, 'data-to': w.holder },
            el('span', { class: 'time' }, clock(snap.status.now)),
            el('span', { class: takeover ? 'takeover' : 'move' }, text),
            epoch,
          ),
          50,
        );
      }
    }
    // A workload with no holder for a moment (stopped, then started elsewhere) keeps its last holder.
    for (const [name, holder] of next)
      if (holder !== null || !this.holders.has(name)) this.holders.set(name, holder);
    for (const name of [...this.holders.keys()]) if (!next.has(name)) this.holders.delete(name);
    this.first = false;
  }
}
