import * as Y from 'yjs';
import type { ClusterState } from './cluster-state.js';
import { isTombstone, type LwwRecord, newerRecord } from './epochs/records.js';
import {
  decodeRecord,
  encodeRecord,
  LEGACY_OWNER,
  LEGACY_STAMP,
  parseSlotKey,
  SLOT_SEPARATOR,
  slotKey,
} from './epochs/slot-codec.js';
import type { DocName } from './names.js';
import { InvalidRecordError, type RecordChecker } from './record-check.js';

/** Each record key's winner and the owners of its slots, as computed from one document object. */
interface Resolved {
  doc: Y.Doc;
  /** This node's Yjs clock in `doc` when last brought up to date (see `fresh`). */
  clock: number;
  records: Map<string, LwwRecord<unknown>>;
  owners: Map<string, Set<string>>;
}

/**
 * One record kind of a document with epochs, as slotted last-writer-wins
 * records (docs/epochs.md, "Layout"), read and written like a map of plain
 * values: `get`, `entries` and friends return each key's winner (the newest
 * record over every node's slot; a deletion hides the key), `set` and
 * `delete` write this node's own slot with a stamp above the key's winner.
 *
 * Never holds on to a Y.Doc or Y.Map beyond its cache: after an epoch switch
 * the document is another object. The winners are computed once, then kept
 * up to date per changed slot (after each transaction, from its changed
 * keys; on this map's own writes, in place), so a read costs O(1) and a
 * write O(slots of its key) whatever the document's size. Malformed slots are
 * skipped and reported through the view's checker.
 */
export class SlottedMap {
  private cache: Resolved | null = null;

  /**
   * `accepts`: which records may win. By default every well-formed one (a
   * deletion too). A map of CA-signed records passes a check that refuses
   * what the CA did not sign (deletions included: nobody can sign one), so
   * that an enrolled node writing garbage with a later stamp cannot hide a
   * signed record; the newest acceptable record of a key wins.
   */
  constructor(
    private readonly state: ClusterState,
    private readonly doc: DocName,
    readonly name: string,
    private readonly check: RecordChecker,
    private readonly now: () => number = Date.now,
    private readonly accepts: (key: string, record: LwwRecord<unknown>) => boolean = () => true,
  ) {
    // The same rule where an epoch is started or adopted, so that a switch keeps what this map reads.
    state.acceptSlots(doc, name, accepts);
    state.onTransaction(doc, 'after', (tr) => this.afterTransaction(tr));
  }

  /** The Y.Map behind it now. */
  yMap(): Y.Map<unknown> {
    return this.state.doc(this.doc).getMap(this.name);
  }

  get(key: string): unknown {
    const record = this.resolved().records.get(key);
    return record === undefined || isTombstone(record) ? undefined : record.value;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** Every live key with its value (unchecked: the view parses it), in no particular order. */
  entries(): [string, unknown][] {
    const out: [string, unknown][] = [];
    for (const [key, record] of this.resolved().records)
      if (!isTombstone(record)) out.push([key, record.value]);
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
    const resolved = this.resolved();
    const current = resolved.records.get(key);
    // Above everything this node has seen of the key: a rewrite always wins over what it replaces.
    if (current !== undefined) this.state.clock.observe(current.stamp);
    const record = make(this.state.clock.next(this.now()));
    const map = this.yMap();
    map.set(slotKey(key, this.state.nodeId), encodeRecord(record));
    ownersOf(resolved, key).add(this.state.nodeId);
    // Not simply `record`: one `accepts` refuses (an unsigned record in a signed map) does not win here either.
    this.recompute(resolved, map, key);
    resolved.clock = ownClock(resolved.doc);
  }

  /** Brings the cache up to date with what a transaction changed (remote ones included). */
  private afterTransaction(tr: Y.Transaction | null): void {
    const cache = this.cache;
    if (cache === null) return;
    if (tr === null || cache.doc !== this.state.doc(this.doc)) {
      this.cache = null;
      return;
    }
    const map = this.yMap();
    const changed = [...tr.changed].find(([type]) => (type as unknown) === map)?.[1];
    if (changed === undefined) return;
    const keys = new Set<string>();
    for (const slot of changed) {
      if (slot === null) continue;
      const parts = slotParts(slot);
      if (parts === null) {
        const value = map.get(slot);
        if (value !== undefined)
          this.check.report(this.name, slot, value, 'key is not <key>\\n<owner>', 'invalid');
        continue;
      }
      if (map.has(slot)) ownersOf(cache, parts.key).add(parts.owner);
      else cache.owners.get(parts.key)?.delete(parts.owner);
      keys.add(parts.key);
    }
    for (const key of keys) this.recompute(cache, map, key);
    cache.clock = ownClock(cache.doc);
  }

  /** The winners, rebuilt from the whole map when the cache no longer describes the document. */
  private resolved(): Resolved {
    const doc = this.state.doc(this.doc);
    const cache = this.cache;
    // A raw write by other code moved this node's clock without passing through `write`.
    if (cache !== null && cache.doc === doc && cache.clock === ownClock(doc)) return cache;
    const map = this.yMap();
    const fresh: Resolved = { doc, clock: ownClock(doc), records: new Map(), owners: new Map() };
    for (const slot of map.keys()) {
      const parts = slotParts(slot);
      if (parts === null) {
        this.check.report(this.name, slot, map.get(slot), 'key is not <key>\\n<owner>', 'invalid');
        continue;
      }
      ownersOf(fresh, parts.key).add(parts.owner);
    }
    for (const key of fresh.owners.keys()) this.recompute(fresh, map, key);
    this.cache = fresh;
    return fresh;
  }

  /** Sets `key`'s winner from its slots (skipping and reporting malformed ones, skipping refused ones). */
  private recompute(resolved: Resolved, map: Y.Map<unknown>, key: string): void {
    let best: LwwRecord<unknown> | undefined;
    for (const owner of resolved.owners.get(key) ?? []) {
      const slot = owner === LEGACY_OWNER ? key : slotKey(key, owner);
      const value = map.get(slot);
      const record = owner === LEGACY_OWNER ? { stamp: LEGACY_STAMP, value } : decodeRecord(value);
      if (typeof record === 'string') {
        this.check.report(this.name, slot, value, record, 'invalid');
        continue;
      }
      if (!this.accepts(key, record)) continue;
      this.check.stampAhead(this.name, slot, record.stamp.writer, record.stamp.at, this.now());
      best = best === undefined ? record : newerRecord(best, record);
    }
    if (best === undefined) resolved.records.delete(key);
    else resolved.records.set(key, best);
  }
}

/** A slot key's record key and owner; a key without a separator is a legacy entry (slot-codec.ts). */
function slotParts(slot: string): { key: string; owner: string } | null {
  return slot.includes(SLOT_SEPARATOR) ? parseSlotKey(slot) : { key: slot, owner: LEGACY_OWNER };
}

function ownersOf(resolved: Resolved, key: string): Set<string> {
  let owners = resolved.owners.get(key);
  if (owners === undefined) {
    owners = new Set();
    resolved.owners.set(key, owners);
  }
  return owners;
}

/** How many structs this node's Yjs client wrote into `doc`: it moves with every local insertion. */
function ownClock(doc: Y.Doc): number {
  return Y.getState(doc.store, doc.clientID);
}
