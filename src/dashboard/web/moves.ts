import { clock, el, prependCapped } from './dom.js';
import type { Snapshot } from './types.js';

/** One holder change between two refreshes. */
export interface HolderChange {
  workload: string;
  from: string;
  to: string;
  /** The old holder was not alive (suspect, dead, unknown, revoked) when another node took over. */
  takeover: boolean;
  /** What the old holder was when the change was seen. */
  fromState: string;
  epoch: number | null;
}

/**
 * Holder changes between refreshes: a move when the old holder was alive (a
 * drain, a rebalance), a takeover when it was not. The API keeps no such
 * history, so the page only knows what it saw while open. Pure (no DOM):
 * test/dashboard/moves.test.ts runs it under node.
 */
export class HolderChanges {
  private holders = new Map<string, string | null>();
  private first = true;

  update(snap: Pick<Snapshot, 'nodes' | 'workloads'>): HolderChange[] {
    const state = new Map(snap.nodes.map((n) => [n.nodeId, n.revoked ? 'revoked' : n.liveness]));
    const changes: HolderChange[] = [];
    if (!this.first) {
      for (const w of snap.workloads) {
        const from = this.holders.get(w.name) ?? null;
        if (w.holder === null || from === null || from === w.holder) continue;
        const fromState = state.get(from) ?? 'unknown';
        changes.push({
          workload: w.name,
          from,
          to: w.holder,
          takeover: fromState !== 'alive',
          fromState,
          epoch: w.epoch,
        });
      }
    }
    // A workload with no holder for a moment (stopped here, not yet started there) keeps its last holder.
    const names = new Set(snap.workloads.map((w) => w.name));
    for (const w of snap.workloads) {
      if (w.holder !== null || !this.holders.has(w.name)) this.holders.set(w.name, w.holder);
    }
    for (const name of [...this.holders.keys()]) if (!names.has(name)) this.holders.delete(name);
    this.first = false;
    return changes;
  }
}

/** Writes each holder change at the top of the "Moves and takeovers" list. */
export class MoveTracker {
  private readonly changes = new HolderChanges();

  constructor(private readonly list: HTMLElement) {}

  update(snap: Snapshot): void {
    for (const c of this.changes.update(snap)) {
      const text = c.takeover
        ? `takeover: ${c.workload} ${c.from} (${c.fromState}) → ${c.to}`
        : `move: ${c.workload} ${c.from} → ${c.to}`;
      prependCapped(
        this.list,
        el(
          'li',
          {
            'data-move': c.workload,
            'data-from': c.from,
            'data-to': c.to,
            'data-kind': c.takeover ? 'takeover' : 'move',
          },
          el('span', { class: 'time' }, clock(snap.status.now)),
          el('span', { class: c.takeover ? 'takeover' : 'move' }, text),
          c.epoch === null ? '' : ` epoch ${c.epoch}`,
        ),
        50,
      );
    }
  }
}
