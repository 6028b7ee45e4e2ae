import type { EpochInfo } from './epochs/epoch.js';
import type { DocName } from './names.js';

/**
 * Durable storage of a document's updates: a snapshot plus an append-only
 * tail. `append` is synchronous and returns only once the update is on disk,
 * so that the caller may acknowledge or publish right after it.
 */
export interface UpdateLog {
  /** The snapshot (if any) followed by every update appended after it, in order. */
  load(doc: DocName): Uint8Array[];
  /** Durably appends one update. Throws if the write did not reach the store. */
  append(doc: DocName, update: Uint8Array): void;
  /** Number of tail entries written since the last snapshot. */
  tailLength(doc: DocName): number;
  /** Bytes of the updates in the tail (what a compaction would drop). */
  tailBytes(doc: DocName): number;
  /** Bytes of the current snapshot, 0 without one. */
  snapshotBytes(doc: DocName): number;
  /** Replaces the snapshot with `snapshot` and drops the tail it covers, atomically. */
  compact(doc: DocName, snapshot: Uint8Array): void;
  /** The epoch the stored document is in (docs/epochs.md); the genesis epoch when none was stored. */
  epoch(doc: DocName): EpochInfo;
  /**
   * Replaces the document with `snapshot`, the whole state of epoch `epoch`:
   * the snapshot and the epoch are written and the whole tail removed in one
   * transaction, so a restart sees either the old epoch or the new one.
   */
  switchEpoch(doc: DocName, epoch: EpochInfo, snapshot: Uint8Array): void;
  close(): Promise<void>;
}
