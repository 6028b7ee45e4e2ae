import { compareStamps, type Stamp } from './stamp.js';

/**
 * A last-writer-wins record: a value or a deletion (tombstone), with the
 * stamp of the write that made it (docs/epochs.md, "Records").
 */
export type LwwRecord<V> =
  | { readonly stamp: Stamp; readonly value: V }
  | { readonly stamp: Stamp; readonly deleted: true };

export function isTombstone<V>(record: LwwRecord<V>): record is Extract<LwwRecord<V>, { deleted: true }> {
  return 'deleted' in record;
}

/** The newer of two records (the first when both carry one stamp). */
export function newerRecord<V>(a: LwwRecord<V>, b: LwwRecord<V>): LwwRecord<V> {
  return compareStamps(b.stamp, a.stamp) > 0 ? b : a;
}

/**
 * What one epoch's document holds: key → slot → record. A slot belongs to the
 * node that writes it (its node id); only that node writes it, so a slot
 * never sees concurrent writes and the replicated document never has to pick
 * between two records: every candidate stays until its owner replaces it or
 * the next epoch drops it. Readers take the newest candidate of a key.
 */
export type Slots<V> = ReadonlyMap<string, ReadonlyMap<string, LwwRecord<V>>>;

/** The newest candidate of one key (a tombstone included), or undefined when it has none. */
export function winner<V>(slots: ReadonlyMap<string, LwwRecord<V>> | undefined): LwwRecord<V> | undefined {
  let best: LwwRecord<V> | undefined;
  if (slots === undefined) return undefined;
  for (const record of slots.values()) best = best === undefined ? record : newerRecord(best, record);
  return best;
}

/** Every key's winner (tombstones included): what the document says. */
export function winners<V>(slots: Slots<V>): Map<string, LwwRecord<V>> {
  const out = new Map<string, LwwRecord<V>>();
  for (const [key, candidates] of slots) {
    const best = winner(candidates);
    if (best !== undefined) out.set(key, best);
  }
  return out;
}

/** The live values (tombstones removed), key → value. */
export function liveValues<V>(slots: Slots<V>): Map<string, V> {
  const out = new Map<string, V>();
  for (const [key, record] of winners(slots)) if (!isTombstone(record)) out.set(key, record.value);
  return out;
}
