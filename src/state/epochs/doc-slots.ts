import type * as Y from 'yjs';
import type { LwwRecord, Slots } from './records.js';
import { encodeRecord, readSlots, slotKey } from './slot-codec.js';

/**
 * A document's slotted maps seen as one set of records: key
 * `<map>\0<record key>` → owner → record, the shape the epoch core works on
 * (src/state/epochs/epoch.ts). Malformed slots are left out: readers skip
 * them too, so they carry no record across a switch.
 */
const MAP_SEPARATOR = '\u0000';

/** Which records of a map count (see SlottedMap's `accepts`); the others are left out like malformed slots. */
export type SlotFilter = (map: string, key: string, record: LwwRecord<unknown>) => boolean;

export function readDocSlots(doc: Y.Doc, maps: readonly string[], accepts?: SlotFilter): Slots<unknown> {
  const out = new Map<string, ReadonlyMap<string, LwwRecord<unknown>>>();
  for (const map of maps) {
    for (const [key, owners] of readSlots(doc.getMap(map)).slots) {
      const kept =
        accepts === undefined
          ? owners
          : new Map([...owners].filter(([, record]) => accepts(map, key, record)));
      if (kept.size > 0) out.set(`${map}${MAP_SEPARATOR}${key}`, kept);
    }
  }
  return out;
}

/** Writes `record` into `owner`'s slot of the composite `key` (as readDocSlots names it). */
export function writeDocSlot(doc: Y.Doc, key: string, owner: string, record: LwwRecord<unknown>): void {
  const at = key.indexOf(MAP_SEPARATOR);
  doc.getMap(key.slice(0, at)).set(slotKey(key.slice(at + 1), owner), encodeRecord(record));
}
