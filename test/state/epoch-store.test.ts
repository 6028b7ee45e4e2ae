import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import * as Y from 'yjs';
import { ClusterState } from '../../src/state/cluster-state.js';
import { EpochStarter } from '../../src/state/epoch-starter.js';
import { LmdbUpdateLog } from '../../src/state/lmdb-log.js';
import { Origin } from '../../src/state/names.js';
import { slottedValues, writeSlotted } from '../fixtures/slotted-writes.js';
import { enrollmentRecord, workloadSpec } from '../fixtures/state-records.js';
import { metricValue, openState, quietLogger, tempDir } from '../fixtures/state-store.js';

/* Epochs in the durable store and the starter's rule (docs/epochs.md, docs/protocol.md "Durable storage"). */

describe('epochs in the store', () => {
  test('a started epoch survives a restart with its content, and the log holds the live size only', async () => {
    const { dir, cleanup } = await tempDir('epoch-store');
    try {
      const first = openState(dir);
      for (let r = 0; r < 200; r++) for (let i = 0; i < 10; i++) writeSlotted(first.state, `k${i}`, r);
      const grown = Y.encodeStateAsUpdate(first.state.doc('workloads')).byteLength;
      const epoch = first.state.startEpoch('workloads');
      writeSlotted(first.state, 'after', 'switch');
      const fresh = Y.encodeStateAsUpdate(first.state.doc('workloads')).byteLength;
      assert.ok(fresh * 4 < grown, `fresh ${fresh} bytes against ${grown} before`);
      await first.state.close();

      const second = openState(dir);
      assert.deepEqual(second.state.epoch('workloads'), epoch);
      const seen = slottedValues(second.state);
      assert.equal(seen.get('k7'), 199);
      assert.equal(seen.get('after'), 'switch');
      assert.equal(seen.size, 11);
      assert.equal(second.log.tailLength('workloads'), 1, 'the switch dropped the tail; one write since');
      assert.equal(second.state.digest('workloads'), second.state.digest('workloads'));
      await second.state.close();
    } finally {
      await cleanup();
    }
  });

  test('an unreadable epoch record is taken as the genesis epoch (safe: the node then adopts and carries over)', async () => {
    const { dir, cleanup } = await tempDir('epoch-corrupt');
    try {
      const first = openState(dir);
      writeSlotted(first.state, 'a', 1);
      first.state.startEpoch('workloads');
      await first.state.close();
      // Damage the record by hand.
      const registry = new Registry();
      const log = new LmdbUpdateLog({ path: dir, logger: quietLogger, registry });
      const { open } = await import('lmdb');
      await log.close();
      const root = open({ path: dir, keyEncoding: 'binary', encoding: 'binary' });
      const meta = root.openDB({ name: 'meta', keyEncoding: 'binary', encoding: 'binary' });
      await meta.put(new TextEncoder().encode('epoch:workloads'), new TextEncoder().encode('{"number":"x"}'));
      await root.close();

      const second = openState(dir);
      assert.equal(second.state.epoch('workloads').number, 0);
      assert.equal(slottedValues(second.state).get('a'), 1, 'the content is still there');
      assert.equal(
        await metricValue(second.registry, 'silo_state_log_corrupt_entries_total', { kind: 'epoch' }),
        1,
      );
      await second.state.close();
    } finally {
      await cleanup();
    }
  });

  test('the starter starts an epoch only when history outweighs content, and only when it is the starter', () => {
    const state = new ClusterState({ logger: quietLogger, nodeId: 'n1' });
    let starter = false;
    const epochs = new EpochStarter({
      state,
      logger: quietLogger,
      registry: new Registry(),
      intervalMs: 0,
      isStarter: () => starter,
      minSavingsBytes: 1024,
    });
    epochs.start();
    writeSlotted(state, 'small', 1);
    assert.deepEqual(epochs.check(), [], 'nothing written worth a look');
    for (let r = 0; r < 300; r++) for (let i = 0; i < 5; i++) writeSlotted(state, `k${i}`, r);
    assert.deepEqual(epochs.check(), [], 'not the starter');
    starter = true;
    assert.deepEqual(epochs.check(), ['workloads']);
    assert.equal(state.epoch('workloads').number, 1);
    assert.equal(slottedValues(state).get('k3'), 299);
    // Right after a start there is no history to drop.
    for (let i = 0; i < 200; i++) writeSlotted(state, `fresh${i}`, i);
    assert.deepEqual(epochs.check(), [], 'new content, not history');
    epochs.stop();
  });

  test('enrollment and workloads views read through a switch, caches included, and a revocation is carried over', async () => {
    const { dir, cleanup } = await tempDir('epoch-views');
    const { dir: otherDir, cleanup: otherCleanup } = await tempDir('epoch-views-b');
    try {
      const a = openState(dir, { nodeId: 'node-a' });
      const b = openState(otherDir, { nodeId: 'node-b' });
      a.enrollment.put(enrollmentRecord('node-a', 1));
      a.enrollment.put(enrollmentRecord('node-b', 2));
      a.workloads.put(workloadSpec('web'));
      b.state.applyRemote('enrollment', a.state.encodeDiff('enrollment'));
      b.state.applyRemote('workloads', a.state.encodeDiff('workloads'));
      assert.equal(b.enrollment.list().length, 2, 'cached on b before the switch');

      // b revokes node-a while a starts a new epoch without it.
      b.enrollment.revoke({ nodeId: 'node-a', revokedAt: 5, reason: 'lost', cert: 'c2ln' });
      const epoch = a.state.startEpoch('enrollment');
      a.state.startEpoch('workloads');
      assert.deepEqual(
        a.enrollment.list().map((r) => r.nodeId),
        ['node-a', 'node-b'],
      );
      assert.equal(a.workloads.get('web')?.revision, 1);

      // b adopts a's epoch (as a sync brings it) and carries the revocation over.
      let carried: Uint8Array | undefined;
      const off = b.state.onChange((doc, update, origin) => {
        if (doc === 'enrollment' && origin === Origin.local) carried = update;
      });
      b.state.adoptEpoch('enrollment', epoch, a.state.encodeDiff('enrollment'));
      off();
      assert.equal(b.enrollment.isRevoked('node-a'), true, 'the view sees the carried revocation at once');
      assert.deepEqual(b.state.epoch('enrollment'), epoch);
      assert.ok(carried !== undefined, 'the carried records go out as a local update');
      a.state.applyRemote('enrollment', carried);
      assert.equal(a.enrollment.isRevoked('node-a'), true);
      assert.equal(a.state.digest('enrollment'), b.state.digest('enrollment'));
      await a.state.close();
      await b.state.close();
    } finally {
      await cleanup();
      await otherCleanup();
    }
  });
});
