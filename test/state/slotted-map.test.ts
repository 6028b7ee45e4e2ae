import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import * as Y from 'yjs';
import { ClusterState } from '../../src/state/cluster-state.js';
import { encodeRecord, slotKey } from '../../src/state/epochs/slot-codec.js';
import { Origin } from '../../src/state/names.js';
import {
  type InvalidRecord,
  InvalidRecordError,
  onMapsChange,
  RecordChecker,
} from '../../src/state/record-check.js';
import { SlottedMap } from '../../src/state/slotted-map.js';
import { quietLogger } from '../fixtures/state-store.js';

/* Slotted last-writer-wins records read and written like a map (docs/epochs.md, "Layout"). */

function node(nodeId: string, now: () => number = Date.now) {
  const state = new ClusterState({ logger: quietLogger, nodeId });
  const invalid: InvalidRecord[] = [];
  const check = new RecordChecker('workloads', {
    state,
    logger: quietLogger,
    registry: new Registry(),
    onInvalid: (r) => invalid.push(r),
  });
  const map = new SlottedMap(state, 'workloads', 'specs', check, now);
  const write = (fn: () => void) => state.transactLocal('workloads', fn);
  return { state, map, write, invalid };
}

/** Everything `from` has that `to` lacks. */
function send(from: ClusterState, to: ClusterState): void {
  to.applyRemote('workloads', from.encodeDiff('workloads', to.encodeStateVector('workloads')), Origin.sync);
}

describe('SlottedMap', () => {
  test('concurrent writes of one key converge to the newer stamp, whatever the delivery order', () => {
    for (const order of ['a-first', 'b-first'] as const) {
      const a = node('node-a', () => 1000);
      const b = node('node-b', () => 2000);
      a.write(() => a.map.set('web', 'from-a'));
      b.write(() => b.map.set('web', 'from-b'));
      if (order === 'a-first') {
        send(a.state, b.state);
        send(b.state, a.state);
      } else {
        send(b.state, a.state);
        send(a.state, b.state);
      }
      assert.equal(a.map.get('web'), 'from-b', order);
      assert.equal(b.map.get('web'), 'from-b', order);
      // Both candidates stay in the document; a rewrite by a outranks what it saw.
      a.write(() => a.map.set('web', 'a-again'));
      send(a.state, b.state);
      assert.equal(b.map.get('web'), 'a-again', `${order}: a write after seeing b's wins`);
    }
  });

  test('a deletion beats an older value; an older value does not bring the key back', () => {
    const a = node('node-a', () => 1000);
    const b = node('node-b', () => 5000);
    a.write(() => a.map.set('db', 1));
    send(a.state, b.state);
    assert.equal(
      b.write(() => b.map.delete('db')),
      true,
    );
    assert.equal(
      b.write(() => b.map.delete('db')),
      false,
      'nothing left to delete',
    );
    // a writes again without having seen the deletion: its clock is behind, its stamp older.
    a.write(() => a.map.set('db', 2));
    send(a.state, b.state);
    send(b.state, a.state);
    assert.equal(a.map.get('db'), undefined);
    assert.equal(b.map.has('db'), false);
    assert.deepEqual(a.map.keys(), []);
  });

  test('malformed slots are skipped and reported; the others stay readable', () => {
    const a = node('node-a');
    a.write(() => a.map.set('good', { ok: true }));
    const doc = a.state.doc('workloads');
    a.state.transactLocal('workloads', () => {
      const raw = doc.getMap('specs');
      raw.set('bad-key\n', encodeRecord({ stamp: { at: 1, seq: 0, writer: 'x' }, value: 1 }));
      raw.set(slotKey('no-stamp', 'x'), { v: 1 });
      raw.set(slotKey('both', 'x'), { s: [1, 0, 'x'], v: 1, d: true });
      raw.set(slotKey('negative', 'x'), { s: [-1, 0, 'x'], v: 1 });
      raw.set(slotKey('nested', 'x'), new Y.Map());
    });
    assert.deepEqual(a.map.entries(), [['good', { ok: true }]]);
    assert.deepEqual(a.invalid.map((r) => r.key).sort(), [
      'bad-key\n',
      'both\nx',
      'negative\nx',
      'nested\nx',
      'no-stamp\nx',
    ]);
    // Reported once, not on every read.
    a.map.entries();
    assert.equal(a.invalid.length, 5);
  });

  test('a plain entry of an older agent reads as the oldest record of its key', () => {
    const a = node('node-a');
    a.state.transactLocal('workloads', (doc) => doc.getMap('specs').set('legacy', 'old'));
    assert.equal(a.map.get('legacy'), 'old');
    a.write(() => a.map.set('legacy', 'new'));
    assert.equal(a.map.get('legacy'), 'new');
  });

  test('keys holding a newline are refused', () => {
    const a = node('node-a');
    assert.throws(() => a.write(() => a.map.set('a\nb', 1)), InvalidRecordError);
    assert.deepEqual(a.map.keys(), []);
  });

  test('reads inside a transaction see its writes; an epoch switch is seen without a stale cache', () => {
    const a = node('node-a');
    const inside = a.state.transactLocal('workloads', () => {
      a.map.set('x', 1);
      const first = a.map.get('x');
      a.map.set('x', 2);
      return [first, a.map.get('x')];
    });
    assert.deepEqual(inside, [1, 2]);
    assert.equal(a.map.get('x'), 2);
    a.state.startEpoch('workloads');
    assert.equal(a.map.get('x'), 2);
    a.write(() => a.map.set('x', 3));
    assert.equal(a.map.get('x'), 3);
  });

  test('the remote update that first creates a map reaches view listeners and readers', () => {
    const a = node('node-a');
    const b = new ClusterState({ logger: quietLogger, nodeId: 'node-b' });
    const origins: unknown[] = [];
    // Subscribed before anything on b touched the map, as an agent's components do at start.
    onMapsChange(b, 'workloads', ['specs'], quietLogger, (origin) => origins.push(origin));
    a.write(() => a.map.set('web', 1));
    send(a.state, b);
    assert.deepEqual(origins, [Origin.sync]);
  });
});
