import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { LmdbUpdateLog } from '../../src/state/lmdb-log.js';
import type { DocName } from '../../src/state/names.js';
import type { UpdateLog } from '../../src/state/update-log.js';
import { quietLogger } from '../fixtures/state-store.js';
import { checkCompactDropsCoveredTail, type OpenLog, updateLogContract } from './update-log-contract.js';

const lmdb =
  (durability: 'sync' | 'nosync'): OpenLog =>
  (path) =>
    new LmdbUpdateLog({ path, logger: quietLogger, registry: new Registry(), durability });

/** The agent's store, fsync'd on every append (the default). */
updateLogContract('LmdbUpdateLog, durability sync', lmdb('sync'));
/** The store as the simulator runs it: no fsync, still durable across a clean close. */
updateLogContract('LmdbUpdateLog, durability nosync', lmdb('nosync'));

/** A log whose compaction writes the snapshot but forgets to drop the tail it covers. */
class ForgetfulCompaction implements UpdateLog {
  private readonly snapshots = new Map<DocName, Uint8Array>();
  constructor(private readonly inner: UpdateLog) {}
  load(doc: DocName): Uint8Array[] {
    const snapshot = this.snapshots.get(doc);
    return snapshot === undefined ? this.inner.load(doc) : [snapshot, ...this.inner.load(doc)];
  }
  append(doc: DocName, update: Uint8Array): void {
    this.inner.append(doc, update);
  }
  tailLength(doc: DocName): number {
    return this.inner.tailLength(doc);
  }
  tailBytes(doc: DocName): number {
    return this.inner.tailBytes(doc);
  }
  snapshotBytes(doc: DocName): number {
    return this.snapshots.get(doc)?.byteLength ?? 0;
  }
  compact(doc: DocName, snapshot: Uint8Array): void {
    this.snapshots.set(doc, snapshot);
  }
  epoch(doc: DocName) {
    return this.inner.epoch(doc);
  }
  switchEpoch(...args: Parameters<UpdateLog['switchEpoch']>): void {
    this.inner.switchEpoch(...args);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

test('the contract fails a log whose compaction keeps the covered tail', async () => {
  const broken: OpenLog = (path) => new ForgetfulCompaction(lmdb('nosync')(path));
  await assert.rejects(() => checkCompactDropsCoveredTail(broken), assert.AssertionError);
});
