import { createHash } from 'node:crypto';
import { type LwwRecord, type Slots, winner, winners } from './records.js';
import { compareStamps, type Stamp } from './stamp.js';

/**
 * An epoch of a document (docs/epochs.md): a fresh document without history,
 * started by one node from its view. `number` orders epochs; `id` tells apart
 * epochs two nodes started with the same number, so every node prefers the
 * same one.
 */
export interface EpochInfo {
  readonly number: number;
  readonly id: string;
}

/** The epoch every document starts in. */
export const GENESIS_EPOCH: EpochInfo = Object.freeze({ number: 0, id: '' });

export function compareEpochs(a: EpochInfo, b: EpochInfo): number {
  if (a.number !== b.number) return a.number < b.number ? -1 : 1;
  if (a.id === b.id) return 0;
  return a.id < b.id ? -1 : 1;
}

/**
 * What a node does with state of epoch `remote` while it is in `local`:
 * merge it (same epoch), adopt it (a later epoch: move there, carrying its
 * own state over), or answer with its own state (an earlier epoch: the
 * sender is behind and carries its writes over itself once it adopts ours).
 */
export function judgeEpoch(local: EpochInfo, remote: EpochInfo): 'merge' | 'adopt' | 'answer' {
  const order = compareEpochs(remote, local);
  if (order === 0) return 'merge';
  return order > 0 ? 'adopt' : 'answer';
}

/**
 * Starts the epoch after `current` from the starter's view `slots`: one
 * record per key, its winner (stamp kept, tombstones included), in the
 * starter's slot. `stamp` is a fresh stamp of the starter's clock; it makes
 * the epoch id unique.
 *
 * Tombstones are kept: a node that missed a deletion may still hold the
 * older value, and without the tombstone nothing would tell it apart from a
 * value the starter never saw (docs/epochs.md, "Tombstones"; the property
 * test shows the resurrection a starter that drops them causes).
 */
export function startEpoch<V>(
  current: EpochInfo,
  slots: Slots<V>,
  options: { starter: string; stamp: Stamp },
): { epoch: EpochInfo; slots: Slots<V> } {
  const number = current.number + 1;
  const id = createHash('sha256')
    .update(`${number}\0${options.starter}\0${options.stamp.at}\0${options.stamp.seq}`)
    .digest('hex')
    .slice(0, 16);
  const next = new Map<string, ReadonlyMap<string, LwwRecord<V>>>();
  for (const [key, record] of winners(slots)) next.set(key, new Map([[options.starter, record]]));
  return { epoch: { number, id }, slots: next };
}

/**
 * What a node moving from its state `old` to the adopted epoch's state must
 * write, stamps kept, into its own slot of the new epoch so that nothing it
 * held is lost: every key whose winner in `old` is newer than the key's
 * winner in `adopted`, or that `adopted` lacks (a write the epoch's starter
 * had not seen, made before or during the switch). A join: doing it again,
 * or after more of the new epoch arrived, writes nothing new.
 */
export function carryOver<V>(old: Slots<V>, adopted: Slots<V>): { key: string; record: LwwRecord<V> }[] {
  const carry: { key: string; record: LwwRecord<V> }[] = [];
  for (const [key, record] of winners(old)) {
    const current = winner(adopted.get(key));
    if (current === undefined || compareStamps(record.stamp, current.stamp) > 0) carry.push({ key, record });
  }
  return carry;
}
