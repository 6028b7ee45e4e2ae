import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GENESIS_EPOCH } from '../../src/state/epochs/epoch.js';
import { DOC_NAMES, type DocName } from '../../src/state/names.js';
import type { UpdateLog } from '../../src/state/update-log.js';
import { tempDir } from '../fixtures/state-store.js';

/**
 * What every UpdateLog must do (src/state/update-log.ts): ClusterState
 * acknowledges a write once `append` returns and restarts from `load`, so
 * these are the durability rules silo's "no acknowledged write lost" rests
 * on. Run against each implementation (update-log-contract.test.ts).
 *
 * A store is opened by path: `open(path)` twice on the same path (the first
 * closed) is a restart.
 */
export type OpenLog = (path: string) => UpdateLog;

const bytes = (...values: number[]) => Uint8Array.from(values);
const plain = (updates: Uint8Array[]) => updates.map((u) => [...u]);

/** Runs `body` with a store path of its own; removes it afterwards. */
async function withStore(body: (path: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = await tempDir('log-contract');
  try {
    await body(dir);
  } finally {
    await cleanup();
  }
}

/** A fresh store holds nothing: no updates, no snapshot, the genesis epoch. */
export async function checkEmpty(open: OpenLog): Promise<void> {
  await withStore(async (path) => {
    const log = open(path);
    for (const doc of DOC_NAMES) {
      assert.deepEqual(log.load(doc), [], `${doc} of a fresh store`);
      assert.equal(log.tailLength(doc), 0);
      assert.equal(log.tailBytes(doc), 0);
      assert.equal(log.snapshotBytes(doc), 0);
      assert.deepEqual(log.epoch(doc), GENESIS_EPOCH);
    }
    await log.close();
  });
}

/** Appended updates come back in order, byte for byte, before and after a restart; counts agree. */
export async function checkAppendsSurviveRestart(open: OpenLog): Promise<void> {
  await withStore(async (path) => {
    const first = open(path);
    const written = Array.from({ length: 40 }, (_, i) => bytes(i, 255 - i, ...Array(i % 7).fill(i)));
    for (const update of written) first.append('workloads', update);
    first.append('enrollment', bytes(9, 9));
    assert.deepEqual(plain(first.load('workloads')), plain(written));
    assert.equal(first.tailLength('workloads'), written.length);
    assert.equal(
      first.tailBytes('workloads'),
      written.reduce((sum, u) => sum + u.byteLength, 0),
    );
    await first.close();
    const second = open(path);
    assert.deepEqual(plain(second.load('workloads')), plain(written), 'after a restart');
    assert.equal(second.tailLength('workloads'), written.length);
    // Documents are independent.
    assert.deepEqual(plain(second.load('enrollment')), [[9, 9]]);
    assert.deepEqual(second.load('observed'), []);
    await second.close();
  });
}

/** A compaction replaces the snapshot and drops the covered tail at once; later appends follow it. */
export async function checkCompactDropsCoveredTail(open: OpenLog): Promise<void> {
  await withStore(async (path) => {
    const log = open(path);
    log.append('workloads', bytes(1));
    log.append('workloads', bytes(2));
    log.append('observed', bytes(7));
    log.compact('workloads', bytes(1, 2, 3));
    assert.deepEqual(plain(log.load('workloads')), [[1, 2, 3]], 'the snapshot alone');
    assert.equal(log.tailLength('workloads'), 0);
    assert.equal(log.tailBytes('workloads'), 0);
    assert.equal(log.snapshotBytes('workloads'), 3);
    log.append('workloads', bytes(4));
    log.compact('workloads', bytes(1, 2, 3, 4));
    log.append('workloads', bytes(5));
    assert.deepEqual(plain(log.load('workloads')), [[1, 2, 3, 4], [5]]);
    assert.deepEqual(plain(log.load('observed')), [[7]], 'another document keeps its tail');
    await log.close();
    const again = open(path);
    assert.deepEqual(plain(again.load('workloads')), [[1, 2, 3, 4], [5]], 'after a restart');
    assert.equal(again.snapshotBytes('workloads'), 4);
    assert.equal(again.tailLength('workloads'), 1);
    await again.close();
  });
}

/** An epoch switch writes the epoch and the snapshot and removes the whole tail, durably. */
export async function checkEpochSwitch(open: OpenLog): Promise<void> {
  await withStore(async (path) => {
    const log = open(path);
    log.append('enrollment', bytes(1));
    log.compact('enrollment', bytes(1));
    log.append('enrollment', bytes(2));
    const epoch = { number: 3, id: 'abc' };
    log.switchEpoch('enrollment', epoch, bytes(8, 8));
    assert.deepEqual(log.epoch('enrollment'), epoch);
    assert.deepEqual(log.epoch('workloads'), GENESIS_EPOCH, 'only that document switched');
    assert.deepEqual(plain(log.load('enrollment')), [[8, 8]]);
    assert.equal(log.tailLength('enrollment'), 0);
    log.append('enrollment', bytes(9));
    await log.close();
    const again = open(path);
    assert.deepEqual(again.epoch('enrollment'), epoch, 'after a restart');
    assert.deepEqual(plain(again.load('enrollment')), [[8, 8], [9]]);
    await again.close();
  });
}

/**
 * Bad arguments and use after close throw an error that says what was wrong,
 * and write nothing: not a thing that is no bytes, nor zero bytes (no Yjs
 * update is empty, and one would only fail the next load), nor a document
 * silo does not have.
 */
export async function checkMisuse(open: OpenLog): Promise<void> {
  await withStore(async (path) => {
    const log = open(path);
    log.append('workloads', bytes(1));
    for (const bad of [undefined, 'text', [1, 2], null, new Uint8Array(0)]) {
      const named = (what: string) => (err: unknown) =>
        err instanceof Error && err.message.includes(what) && /Uint8Array/.test(err.message);
      assert.throws(() => log.append('workloads', bad as Uint8Array), named('append to workloads'));
      assert.throws(() => log.compact('workloads', bad as Uint8Array), named('compact workloads'));
      assert.throws(
        () => log.switchEpoch('workloads', { number: 1, id: 'x' }, bad as Uint8Array),
        named('switchEpoch workloads'),
      );
    }
    const unknown = 'users' as DocName;
    const namesIt = (err: unknown) => err instanceof Error && err.message.includes('"users"');
    assert.throws(() => log.append(unknown, bytes(2)), namesIt);
    assert.throws(() => log.load(unknown), namesIt);
    assert.throws(() => log.tailLength(unknown), namesIt);
    assert.throws(() => log.epoch(unknown), namesIt);
    assert.deepEqual(plain(log.load('workloads')), [[1]], 'nothing written by the bad calls');
    assert.equal(log.tailLength('workloads'), 1);
    assert.deepEqual(log.epoch('workloads'), GENESIS_EPOCH);
    await log.close();
    const closed = (err: unknown) => err instanceof Error && /closed/.test(err.message);
    assert.throws(() => log.append('workloads', bytes(2)), closed);
    assert.throws(() => log.load('workloads'), closed);
    assert.throws(() => log.tailLength('workloads'), closed, 'counters too: they would be stale');
    assert.throws(() => log.snapshotBytes('workloads'), closed);
    const again = open(path);
    assert.deepEqual(plain(again.load('workloads')), [[1]]);
    await again.close();
  });
}

export function updateLogContract(name: string, open: OpenLog): void {
  describe(`UpdateLog contract: ${name}`, () => {
    test('a fresh store is empty, in the genesis epoch', () => checkEmpty(open));
    test('appends come back in order, also after a restart; documents are independent', () =>
      checkAppendsSurviveRestart(open));
    test('a compaction replaces the snapshot and drops the covered tail; later appends follow it', () =>
      checkCompactDropsCoveredTail(open));
    test('an epoch switch replaces the document and removes the tail, durably', () => checkEpochSwitch(open));
    test('bad arguments and use after close throw and write nothing', () => checkMisuse(open));
  });
}
