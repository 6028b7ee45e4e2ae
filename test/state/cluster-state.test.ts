import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import * as Y from 'yjs';
import { ClusterState, InvalidUpdateError } from '../../src/state/cluster-state.js';
import { quietLogger } from '../fixtures/state-store.js';

/** Updates from three independent writers, with overwrites and deletes, in causal order per writer. */
function writerUpdates(): Uint8Array[] {
  const updates: Uint8Array[] = [];
  const writers = [1, 2, 3].map((n) => {
    const doc = new Y.Doc();
    doc.clientID = n;
    doc.on('update', (u: Uint8Array) => updates.push(u));
    return doc;
  });
  for (let round = 0; round < 6; round++) {
    for (const [i, doc] of writers.entries()) {
      const specs = doc.getMap('specs');
      specs.set(`w${i}-${round}`, { round, writer: i });
      specs.set('shared', { round, writer: i });
      if (round > 1) specs.delete(`w${i}-${round - 2}`);
    }
  }
  return updates;
}

function memoryState(): ClusterState {
  return new ClusterState({ logger: quietLogger });
}

function fullState(state: ClusterState): Uint8Array {
  return state.encodeDiff('workloads');
}

/** A local update with several structs (a real spec-sized write), for damaging. */
function sampleUpdate(clientID?: number): Uint8Array {
  const source = new Y.Doc();
  if (clientID !== undefined) source.clientID = clientID;
  let update: Uint8Array | undefined;
  source.on('update', (u: Uint8Array) => {
    update = u;
  });
  source.transact(() => {
    const specs = source.getMap('specs');
    for (let i = 0; i < 5; i++) specs.set(`w-${i}`, { name: `w-${i}`, args: ['a', 'b'], cpus: i + 0.5 });
    specs.delete('w-0');
  });
  assert.ok(update);
  return update;
}

describe('ClusterState digest', () => {
  test('equal for states that converge by applying the same updates in different orders', () => {
    const updates = writerUpdates();
    const reference = memoryState();
    for (const u of updates) reference.applyRemote('workloads', u);
    fc.assert(
      fc.property(
        fc.shuffledSubarray(
          updates.map((_, i) => i),
          { minLength: updates.length },
        ),
        (order) => {
          const other = memoryState();
          for (const i of order) other.applyRemote('workloads', updates[i] as Uint8Array);
          assert.equal(other.digest('workloads'), reference.digest('workloads'));
          assert.deepEqual(
            other.doc('workloads').getMap('specs').toJSON(),
            reference.doc('workloads').getMap('specs').toJSON(),
          );
        },
      ),
      { numRuns: 50 },
    );
  });

  test('equal after exchanging diffs both ways (anti-entropy), whatever was written where', () => {
    const a = memoryState();
    const b = memoryState();
    a.transactLocal('workloads', (doc) => doc.getMap('specs').set('x', 1));
    b.transactLocal('workloads', (doc) => doc.getMap('specs').set('y', 2));
    b.transactLocal('workloads', (doc) => doc.getMap('specs').set('x', 3));
    assert.notEqual(a.digest('workloads'), b.digest('workloads'));
    const toB = a.encodeDiff('workloads', b.encodeStateVector('workloads'));
    const toA = b.encodeDiff('workloads', a.encodeStateVector('workloads'));
    b.applyRemote('workloads', toB);
    a.applyRemote('workloads', toA);
    assert.equal(a.digest('workloads'), b.digest('workloads'));
  });

  test('a Y.Map delete changes the digest though the state vector stays the same', () => {
    const state = memoryState();
    state.transactLocal('workloads', (doc) => doc.getMap('specs').set('a', { v: 1 }));
    const sv = state.encodeStateVector('workloads');
    const before = state.digest('workloads');
    state.transactLocal('workloads', (doc) => doc.getMap('specs').delete('a'));
    assert.deepEqual(state.encodeStateVector('workloads'), sv, 'a delete adds no clock');
    assert.notEqual(state.digest('workloads'), before);
    // And a peer that saw the delete agrees.
    const peer = memoryState();
    peer.applyRemote('workloads', state.encodeDiff('workloads'));
    assert.equal(peer.digest('workloads'), state.digest('workloads'));
  });
});

describe('ClusterState.validateUpdate / applyRemote', () => {
  /** Applies `update` to a state holding some content; asserts a rejection leaves it byte-for-byte unchanged. */
  function applyOrReject(state: ClusterState, update: Uint8Array): 'applied' | 'rejected' {
    const before = fullState(state);
    const digest = state.digest('workloads');
    try {
      state.applyRemote('workloads', update);
      return 'applied';
    } catch (err) {
      assert.ok(err instanceof InvalidUpdateError, `expected InvalidUpdateError, got ${String(err)}`);
      assert.deepEqual(fullState(state), before, 'rejected update changed the document');
      assert.equal(state.digest('workloads'), digest);
      return 'rejected';
    }
  }

  function seededState(): ClusterState {
    const state = memoryState();
    state.transactLocal('workloads', (doc) => doc.getMap('specs').set('existing', { v: 1 }));
    return state;
  }

  test('empty, non-bytes and oversized updates are rejected with a reason', () => {
    const state = seededState();
    assert.throws(
      () => state.applyRemote('workloads', new Uint8Array()),
      /invalid update for document "workloads": .*empty/,
    );
    assert.throws(
      () => state.applyRemote('workloads', 'abc' as unknown as Uint8Array),
      (err: unknown) => err instanceof InvalidUpdateError && /not bytes/.test(err.message),
    );
    const small = new ClusterState({ logger: quietLogger, maxUpdateBytes: 8 });
    assert.throws(() => small.validateUpdate('workloads', new Uint8Array(9)), /9 bytes, limit 8/);
    assert.equal(applyOrReject(state, new Uint8Array()), 'rejected');
  });

  test('every truncation of a real update is rejected and leaves the document unchanged', () => {
    const update = sampleUpdate();
    for (let length = 1; length < update.byteLength; length++) {
      const state = seededState();
      assert.equal(
        applyOrReject(state, update.slice(0, length)),
        'rejected',
        `prefix of ${length} bytes was accepted`,
      );
    }
    // The whole update still applies.
    const state = seededState();
    assert.equal(applyOrReject(state, update), 'applied');
    assert.equal(state.doc('workloads').getMap('specs').size, 5);
  });

  test('random bytes are rejected (or, when they happen to form a valid update, applied whole), never half-applied', () => {
    let rejected = 0;
    let total = 0;
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), (bytes) => {
        total++;
        if (applyOrReject(seededState(), bytes) === 'rejected') rejected++;
      }),
      { numRuns: 500 },
    );
    assert.ok(rejected / total > 0.9, `only ${rejected} of ${total} random inputs rejected`);
  });

  test('an update that decodes but fails while it integrates is rejected before it touches the document', () => {
    // Found by the property test below in CI: with this client id, flipping bit 7 of byte 217 (an item's
    // "has origin" flag) still decodes, and Yjs threw "Unexpected case" halfway through applying it.
    const damaged = sampleUpdate(357594657);
    damaged[217] = (damaged[217] ?? 0) ^ 128;
    assert.equal(applyOrReject(seededState(), damaged), 'rejected');
  });

  test('flipped bytes never throw anything but InvalidUpdateError nor half-apply', () => {
    const update = sampleUpdate();
    fc.assert(
      fc.property(fc.nat(update.byteLength - 1), fc.integer({ min: 1, max: 255 }), (index, mask) => {
        const damaged = new Uint8Array(update);
        damaged[index] = (damaged[index] ?? 0) ^ mask;
        applyOrReject(seededState(), damaged);
      }),
      { numRuns: 500 },
    );
  });
});
