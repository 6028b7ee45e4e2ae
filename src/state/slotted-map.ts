import type * as Y from 'yjs';
import type { ClusterState } from './cluster-state.js';
import { isTombstone, type LwwRecord, winner } from './epochs/records.js';
import { encodeRecord, readSlots, SLOT_SEPARATOR, slotKey } from './epochs/slot-codec.js';
import type { DocName } from './names.js';
import { InvalidRecordError, type RecordChecker } from './record-check.js';

/**
 * One record kind of a document with epochs, as slotted last-writer-wins
 * records (docs/epochs.md, "Layout"), read and written like a map of plain
 * values: `get`, `entries` and friends return each key's winner (the newest
 * record over every node's slot; a deletion hides the key), `set` and
 * `delete` write this node's own slot with a stamp above the key's winner.
 *
 * Never holds on to a Y.Doc or Y.Map: after an epoch switch the document is
 * another object. The winners are computed once per change of the document
 * (every transaction start and end, and every write here, drops them).
 * Malformed slots are skipped and reported through the view's checker.
 */
export class SlottedMap {
  private winners: Map<string, LwwRecord<unknown>> | null = null;

  constructor(
    private readonly state: ClusterState,
    private readonly doc: DocName,
    readonly name: string,
    private readonly check: RecordChecker,
    private readonly now: () => number = Date.now,
  ) {
    const drop = (): void => {
      this.winners = null;
    };
    state.onTransaction(doc, 'before', drop);
    state.onTransaction(doc, 'after', drop);
  }

  /** The Y.Map behind it now (for change detection: `Y.Transaction.changed`). */
  yMap(): Y.Map<unknown> {
    return this.state.doc(this.doc).getMap(this.name);
  }

  get(key: string): unknown {
    const record = this.resolved().get(key);
    return record === undefined || isTombstone(record) ? undefined : record.value;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** Every live key with its value (unchecked: the view parses it), in no particular order. */
  entries(): [string, unknown][] {
    const out: [string, unknown][] = [];
    for (const [key, record] of this.resolved()) if (!isTombstone(record)) out.push([key, record.value]);
    return out;
  }

  keys(): string[] {
    return this.entries().map(([key]) => key);
  }

  /** Writes `value` as `key`'s newest record, in this node's slot. Call inside the view's transaction. */
  set(key: string, value: unknown): void {
    this.write(key, (stamp) => ({ stamp, value }));
  }

  /** Writes a deletion of `key` when it has a live value; true if it did. */
  delete(key: string): boolean {
    if (!this.has(key)) return false;
    this.write(key, (stamp) => ({ stamp, deleted: true }));
    return true;
  }

  private write(key: string, make: (stamp: LwwRecord<unknown>['stamp']) => LwwRecord<unknown>): void {
    if (key.includes(SLOT_SEPARATOR)) {
      throw new InvalidRecordError(this.doc, this.name, key, 'a record key must not hold a newline');
    }
    const current = this.resolved().get(key);
    // Above everything this node has seen of the key: a rewrite always wins over what it replaces.
    if (current !== undefined) this.state.clock.observe(current.stamp);
    const record = make(this.state.clock.next(this.now()));
    this.yMap().set(slotKey(key, this.state.nodeId), encodeRecord(record));
    this.winners = null;
  }

  private resolved(): Map<string, LwwRecord<unknown>> {
    if (this.winners !== null) return this.winners;
    const map = this.yMap();
    const { slots, problems } = readSlots(map);
    for (const { slot, reason } of problems)
      this.check.report(this.name, slot, map.get(slot), reason, 'invalid');
    const out = new Map<string, LwwRecord<unknown>>();
    for (const [key, owners] of slots) {
      const best = winner(owners);
      if (best !== undefined) out.set(key, best);
    }
    // Not cached inside a transaction: the map may change again before it ends.
    if (this.state.doc(this.doc)._transaction === null) this.winners = out;
    return out;
  }
}
