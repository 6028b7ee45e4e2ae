import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import * as Y from 'yjs';
import { type DiffSlice, diffSlices } from '../../src/state/diff-slices.js';

/**
 * A document written by several clients that depend on one another: overwrites
 * of shared keys (right/left origins across clients), deletes, a shared text
 * edited by all, nested maps (parent items of other clients).
 */
function busyDoc(seed: number, writers = 4, rounds = 40): Y.Doc {
  let rnd = seed;
  const random = () => {
    rnd = (rnd * 1103515245 + 12345) % 2147483648;
    return rnd / 2147483648;
  };
  const docs = Array.from({ length: writers }, (_, i) => {
    const doc = new Y.Doc();
    doc.clientID = 100 + i;
    return doc;
  });
  const syncAll = () => {
    const merged = Y.mergeUpdates(docs.map((d) => Y.encodeStateAsUpdate(d)));
    for (const d of docs) Y.applyUpdate(d, merged);
  };
  for (let round = 0; round < rounds; round++) {
    for (const [i, doc] of docs.entries()) {
      const specs = doc.getMap<unknown>('specs');
      specs.set(`w${i}-${round}`, { round, writer: i, pad: 'x'.repeat(Math.floor(random() * 200)) });
      specs.set(`shared-${round % 5}`, { round, writer: i });
      if (round > 2 && random() < 0.5) specs.delete(`w${i}-${round - 2}`);
      const text = doc.getText('notes');
      text.insert(Math.floor(random() * (text.length + 1)), `${i}:${round} `);
      if (text.length > 20 && random() < 0.3) text.delete(Math.floor(random() * 10), 3);
      const nested = specs.get('nested');
      if (nested instanceof Y.Map) nested.set(`n${i}`, round);
      else if (round === 1 && i === 0) specs.set('nested', new Y.Map());
    }
    if (random() < 0.4) syncAll();
  }
  syncAll();
  return docs[0] as Y.Doc;
}

function same(a: Y.Doc, b: Y.Doc): void {
  assert.deepEqual(Y.encodeStateVector(a), Y.encodeStateVector(b));
  assert.deepEqual(a.getMap('specs').toJSON(), b.getMap('specs').toJSON());
  assert.equal(a.getText('notes').toString(), b.getText('notes').toString());
  assert.ok(Y.equalSnapshots(Y.snapshot(a), Y.snapshot(b)), 'state vector and delete set equal');
}

function applyAll(target: Y.Doc, slices: Iterable<DiffSlice>): number {
  let n = 0;
  for (const slice of slices) {
    Y.applyUpdate(target, slice.update);
    // Every slice integrates completely: nothing is left pending.
    assert.equal(target.store.pendingStructs, null, `slice ${n} left structs pending`);
    n++;
  }
  return n;
}

describe('diffSlices', () => {
  test('a small diff is one slice, equal to encodeStateAsUpdate', () => {
    const doc = busyDoc(1, 2, 3);
    const slices = [...diffSlices(doc, new Uint8Array([0]))];
    assert.equal(slices.length, 1);
    assert.equal(slices[0]?.last, true);
    assert.deepEqual(slices[0]?.update, Y.encodeStateAsUpdate(doc));
  });

  test('slices of a whole document give the document, each integrating at once', () => {
    const doc = busyDoc(2);
    const target = new Y.Doc();
    const slices = [...diffSlices(doc, new Uint8Array([0]), { bytes: 2048, structs: 50 })];
    assert.ok(slices.length > 5, `${slices.length} slices`);
    assert.ok(slices.slice(0, -1).every((s) => !s.last) && slices.at(-1)?.last);
    applyAll(target, slices);
    same(doc, target);
  });

  test('slices against a partial state vector give the same as the unsliced diff', () => {
    const doc = busyDoc(3);
    // A peer that has some prefix of the history.
    const partial = new Y.Doc();
    const history = busyDoc(3, 4, 15);
    Y.applyUpdate(partial, Y.encodeStateAsUpdate(history));
    const whole = new Y.Doc();
    Y.applyUpdate(whole, Y.encodeStateAsUpdate(partial));
    Y.applyUpdate(whole, Y.encodeStateAsUpdate(doc, Y.encodeStateVector(partial)));
    applyAll(partial, diffSlices(doc, Y.encodeStateVector(partial), { bytes: 1024, structs: 20 }));
    same(whole, partial);
    same(doc, partial);
  });

  test('the document changing between slices: the result holds both', () => {
    const doc = busyDoc(4);
    const target = new Y.Doc();
    const writer = new Y.Doc();
    writer.clientID = 999;
    Y.applyUpdate(writer, Y.encodeStateAsUpdate(doc));
    let i = 0;
    for (const slice of diffSlices(doc, new Uint8Array([0]), { bytes: 1024, structs: 30 })) {
      Y.applyUpdate(target, slice.update);
      // Meanwhile, the sender's document changes: a new writer, deletes, text edits (structs split).
      const specs = writer.getMap('specs');
      specs.set(`late-${i}`, i);
      specs.delete(`w1-${i}`);
      writer.getText('notes').insert(i, `late${i}`);
      Y.applyUpdate(doc, Y.encodeStateAsUpdate(writer, Y.encodeStateVector(doc)));
      // ... and so does the receiver's (an update arriving by gossip between slices).
      if (i % 3 === 0) target.getMap('specs').set(`receiver-${i}`, i);
      i++;
    }
    // The receiver's own writes, once back at the sender, make both equal.
    Y.applyUpdate(doc, Y.encodeStateAsUpdate(target, Y.encodeStateVector(doc)));
    // Whatever was written after the last slice was taken reaches it by another round.
    Y.applyUpdate(target, Y.encodeStateAsUpdate(doc, Y.encodeStateVector(target)));
    same(doc, target);
  });

  test('what is written while the slices go out is sliced too, not left to one large last slice', () => {
    const doc = busyDoc(5);
    const target = new Y.Doc();
    const limits = { bytes: 4096, structs: 40 };
    let i = 0;
    let lastStructs = -1;
    for (const slice of diffSlices(doc, new Uint8Array([0]), limits)) {
      Y.applyUpdate(target, slice.update);
      if (slice.last) lastStructs = Y.decodeUpdate(slice.update).structs.length;
      // 100 new specs while each of the first five slices goes out.
      if (i++ < 5)
        doc.transact(() => {
          for (let k = 0; k < 100; k++) doc.getMap('specs').set(`burst-${i}-${k}`, k);
        });
    }
    assert.ok(lastStructs >= 0 && lastStructs <= limits.structs, `last slice holds ${lastStructs} structs`);
    same(doc, target);
  });

  test('property: any document, any limits, any known prefix', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 0, max: 30 }),
        fc.integer({ min: 64, max: 8192 }),
        fc.integer({ min: 1, max: 80 }),
        (seed, writers, known, bytes, structs) => {
          const doc = busyDoc(seed, writers, 30);
          const target = new Y.Doc();
          Y.applyUpdate(target, Y.encodeStateAsUpdate(busyDoc(seed, writers, known)));
          applyAll(target, diffSlices(doc, Y.encodeStateVector(target), { bytes, structs }));
          const expected = new Y.Doc();
          Y.applyUpdate(expected, Y.encodeStateAsUpdate(busyDoc(seed, writers, known)));
          Y.applyUpdate(expected, Y.encodeStateAsUpdate(doc));
          same(expected, target);
        },
      ),
      { numRuns: 40 },
    );
  });
});
