import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { LmdbUpdateLog } from '../../src/state/lmdb-log.js';
import type { DocName } from '../../src/state/names.js';
import { DelegatingLog } from '../fixtures/delegating-log.js';
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
class ForgetfulCompaction extends DelegatingLog {
  private readonly snapshots = new Map<DocName, Uint8Array>();
  override load(doc: DocName): Uint8Array[] {
    const snapshot = this.snapshots.get(doc);
    return snapshot === undefined ? super.load(doc) : [snapshot, ...super.load(doc)];
  }
  override snapshotBytes(doc: DocName): number {
    return this.snapshots.get(doc)?.byteLength ?? 0;
  }
  override compact(doc: DocName, snapshot: Uint8Array): void {
    this.snapshots.set(doc, snapshot);
  }
}

test('the contract fails a log whose compaction keeps the covered tail', async () => {
  const broken: OpenLog = (path) => new ForgetfulCompaction(lmdb('nosync')(path));
  await assert.rejects(() => checkCompactDropsCoveredTail(broken), assert.AssertionError);
});
