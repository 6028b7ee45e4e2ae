import type * as Y from 'yjs';
import type { LwwRecord, Slots } from './records.js';
import type { Stamp } from './stamp.js';

/**
 * How slotted records sit in a Y.Map (docs/epochs.md, "Layout"): key
 * `<record key>\n<owner node id>`, value `{s: [at, seq, writer], v: value}`
 * or `{s: [at, seq, writer], d: true}` for a deletion. Record keys never hold
 * a newline (every view validates its keys), so the split is unambiguous.
 */
export const SLOT_SEPARATOR = '\n';

/**
 * The stamp of a record written before slots existed (a plain `key → value`
 * entry of an older agent): older than any stamped write, so the first
 * slotted write of its key replaces it, and an epoch start turns it into a
 * slotted record (docs/epochs.md, "Upgrade").
 */
export const LEGACY_STAMP: Stamp = Object.freeze({ at: 0, seq: 0, writer: '' });
/** The owner a legacy entry is read under. */
export const LEGACY_OWNER = '';

export interface EncodedRecord {
  s: [number, number, string];
  v?: unknown;
  d?: true;
}

export function slotKey(key: string, owner: string): string {
  return `${key}${SLOT_SEPARATOR}${owner}`;
}

export function parseSlotKey(slot: string): { key: string; owner: string } | null {
  const at = slot.lastIndexOf(SLOT_SEPARATOR);
  if (at <= 0 || at === slot.length - 1) return null;
  return { key: slot.slice(0, at), owner: slot.slice(at + 1) };
}

export function encodeRecord<V>(record: LwwRecord<V>): EncodedRecord {
  const s: [number, number, string] = [record.stamp.at, record.stamp.seq, record.stamp.writer];
  return 'deleted' in record ? { s, d: true } : { s, v: record.value };
}

/** The record a slot holds, or the reason it is not one (a reader skips it). */
export function decodeRecord(value: unknown): LwwRecord<unknown> | string {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'not an object';
  const { s, v, d } = value as Record<string, unknown>;
  if (!Array.isArray(s) || s.length !== 3) return 'stamp is not [at, seq, writer]';
  const [at, seq, writer] = s as unknown[];
  if (typeof at !== 'number' || !Number.isSafeInteger(at) || at < 0) return 'stamp at is not a time';
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return 'stamp seq is not a count';
  if (typeof writer !== 'string') return 'stamp writer is not a node id';
  // Only the legacy stamp has no writer (an epoch start copies legacy records into slots).
  if (writer.length === 0 && (at !== 0 || seq !== 0)) return 'stamp writer is not a node id';
  const stamp: Stamp = { at, seq, writer };
  if (d === true) return v === undefined ? { stamp, deleted: true } : 'a deletion with a value';
  if (d !== undefined) return 'd is not true';
  if (v === undefined) return 'no value';
  return { stamp, value: v };
}

export interface SlotProblem {
  slot: string;
  reason: string;
}

/**
 * Every well-formed slot of `map` as record key → owner → record, with what
 * was skipped. An entry whose key has no separator is a legacy entry (an
 * older agent's plain `key → value`): read as a record with LEGACY_STAMP
 * under LEGACY_OWNER.
 */
export function readSlots(map: Y.Map<unknown>): { slots: Slots<unknown>; problems: SlotProblem[] } {
  const slots = new Map<string, Map<string, LwwRecord<unknown>>>();
  const problems: SlotProblem[] = [];
  for (const [slot, value] of map.entries()) {
    const parts = slot.includes(SLOT_SEPARATOR) ? parseSlotKey(slot) : { key: slot, owner: LEGACY_OWNER };
    if (parts === null) {
      problems.push({ slot, reason: 'key is not <key>\\n<owner>' });
      continue;
    }
    const record = parts.owner === LEGACY_OWNER ? { stamp: LEGACY_STAMP, value } : decodeRecord(value);
    if (typeof record === 'string') {
      problems.push({ slot, reason: record });
      continue;
    }
    let owners = slots.get(parts.key);
    if (owners === undefined) {
      owners = new Map();
      slots.set(parts.key, owners);
    }
    owners.set(parts.owner, record);
  }
  return { slots, problems };
}
