import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { pack } from 'msgpackr';
import * as Y from 'yjs';
import { decodeEnvelope, ENVELOPE_REJECTIONS, encodeEnvelope } from '../../src/gossip/envelope.js';
import { decodeHeartbeat, encodeHeartbeat, MAX_HEARTBEAT_BYTES } from '../../src/gossip/heartbeat.js';
import {
  decodeFrame,
  encodeFrame,
  FrameType,
  frameEpoch,
  SyncProtocolError,
} from '../../src/gossip/sync-frames.js';
import { assertOrgName, docTopic, livenessTopic } from '../../src/gossip/topics.js';
import { GENESIS_EPOCH } from '../../src/state/epochs/epoch.js';

const expect = { org: 'acme', doc: 'workloads' as const, maxBytes: 10_000 };

function sampleUpdate(): Uint8Array {
  const doc = new Y.Doc();
  doc.getMap('specs').set('web', { image: 'sha256:abc', cpus: 1 });
  return Y.encodeStateAsUpdate(doc);
}

function validEnvelope(): Uint8Array {
  return encodeEnvelope({ org: 'acme', doc: 'workloads', from: 'node-1', update: sampleUpdate() });
}

describe('gossip envelope', () => {
  test('round-trips', () => {
    const update = sampleUpdate();
    const decoded = decodeEnvelope(
      encodeEnvelope({ org: 'acme', doc: 'workloads', from: 'node-1', update }),
      expect,
    );
    assert.ok(decoded.ok);
    assert.equal(decoded.envelope.from, 'node-1');
    assert.deepEqual(new Uint8Array(decoded.envelope.update), update);
  });

  test('each defect maps to its rejection reason', () => {
    const valid = validEnvelope();
    const fields = { v: 1, org: 'acme', doc: 'workloads', from: 'node-1', update: sampleUpdate() };
    const flipped = new Uint8Array(valid);
    // The update bytes sit at the end of the map, before `crc`; flip one inside them.
    flipped[valid.byteLength - 12] = flipped[valid.byteLength - 12]! ^ 0xff;
    const cases: [string, Uint8Array, string][] = [
      ['random bytes', Uint8Array.from([0x07, 0x99, 0x12, 0xfe]), 'malformed'],
      ['truncated', valid.subarray(0, valid.byteLength - 5), 'malformed'],
      ['empty', new Uint8Array(), 'malformed'],
      ['a msgpack array', pack([1, 2, 3]), 'malformed'],
      ['wrong version', pack({ ...fields, v: 2, crc: 0 }), 'wrong-version'],
      ['missing version', pack({ org: 'acme' }), 'wrong-version'],
      [
        'wrong org',
        encodeEnvelope({ org: 'evil', doc: 'workloads', from: 'x', update: sampleUpdate() }),
        'wrong-org',
      ],
      [
        'wrong doc',
        encodeEnvelope({ org: 'acme', doc: 'observed', from: 'x', update: sampleUpdate() }),
        'wrong-doc',
      ],
      ['unknown doc', pack({ ...fields, doc: 'nope', crc: 0 }), 'wrong-doc'],
      ['oversize', new Uint8Array(expect.maxBytes + 1), 'oversize'],
      ['flipped byte in update', flipped, 'bad-checksum'],
      ['update not bytes', pack({ ...fields, update: 'text', crc: 0 }), 'malformed'],
      ['crc not a number', pack({ ...fields, crc: 'x' }), 'malformed'],
      ['empty from', pack({ ...fields, from: '', crc: 0 }), 'malformed'],
    ];
    for (const [name, bytes, reason] of cases) {
      const decoded = decodeEnvelope(bytes, expect);
      assert.equal(decoded.ok, false, name);
      if (!decoded.ok) assert.equal(decoded.reason, reason, name);
    }
    assert.deepEqual([...ENVELOPE_REJECTIONS].sort(), [...new Set(cases.map((c) => c[2]))].sort());
  });

  test('carries the epoch; genesis goes without the field; a bad one is malformed', () => {
    const update = sampleUpdate();
    const later = { number: 3, id: 'abc123' };
    const withEpoch = decodeEnvelope(
      encodeEnvelope({ org: 'acme', doc: 'workloads', from: 'node-1', update, epoch: later }),
      expect,
    );
    assert.ok(withEpoch.ok);
    assert.deepEqual(withEpoch.envelope.epoch, later);
    const genesis = encodeEnvelope({
      org: 'acme',
      doc: 'workloads',
      from: 'node-1',
      update,
      epoch: GENESIS_EPOCH,
    });
    assert.deepEqual(genesis, encodeEnvelope({ org: 'acme', doc: 'workloads', from: 'node-1', update }));
    const decodedGenesis = decodeEnvelope(genesis, expect);
    assert.ok(decodedGenesis.ok);
    assert.deepEqual(decodedGenesis.envelope.epoch, GENESIS_EPOCH);
    const fields = { v: 1, org: 'acme', doc: 'workloads', from: 'node-1', update, crc: crc32(update) };
    for (const e of [
      [1],
      [1, 2],
      [-1, 'a'],
      [1.5, 'a'],
      [0, 'a'],
      [1, ''],
      [1, 'x'.repeat(65)],
      'e',
      { n: 1 },
    ]) {
      const decoded = decodeEnvelope(pack({ ...fields, e }), expect);
      assert.equal(decoded.ok, false, JSON.stringify(e));
      if (!decoded.ok) assert.equal(decoded.reason, 'malformed', JSON.stringify(e));
    }
  });

  test('never throws on arbitrary input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const decoded = decodeEnvelope(bytes, expect);
        assert.equal(typeof decoded.ok, 'boolean');
      }),
      { numRuns: 2000 },
    );
    // Mutations of a valid envelope: decode either rejects or returns a checksummed update.
    const valid = validEnvelope();
    fc.assert(
      fc.property(fc.nat(valid.byteLength - 1), fc.integer({ min: 1, max: 255 }), (pos, xor) => {
        const bytes = new Uint8Array(valid);
        bytes[pos] = bytes[pos]! ^ xor;
        decodeEnvelope(bytes, expect);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('heartbeat codec', () => {
  const hb = {
    org: 'acme',
    nodeId: 'node-1',
    incarnation: 1_700_000_000_000,
    seq: 3,
    digests: { enrollment: 'a', workloads: 'b', observed: 'c' },
    sentAt: 1_700_000_000_500,
    addrs: ['/ip4/127.0.0.1/tcp/4001'],
  };

  test('round-trips and checks fields', () => {
    const ok = decodeHeartbeat(encodeHeartbeat(hb), 'acme');
    assert.ok(ok.ok);
    assert.deepEqual(ok.heartbeat, { v: 1, ...hb, acks: new Map(), dead: new Map() });
    const rejections: [Uint8Array, string][] = [
      [Uint8Array.from([0xc1]), 'malformed'],
      [encodeHeartbeat(hb), 'wrong-org'],
      [pack({ ...hb, v: 9 }), 'wrong-version'],
      [pack({ ...hb, v: 1, seq: -1 }), 'malformed'],
      [pack({ ...hb, v: 1, digests: { workloads: 'b' } }), 'malformed'],
      [pack({ ...hb, v: 1, addrs: 'x' }), 'malformed'],
      [new Uint8Array(MAX_HEARTBEAT_BYTES + 1), 'oversize'],
    ];
    for (const [bytes, reason] of rejections) {
      const decoded = decodeHeartbeat(bytes, bytes === rejections[1]![0] ? 'other' : 'acme');
      assert.equal(decoded.ok, false);
      if (!decoded.ok) assert.equal(decoded.reason, reason);
    }
  });

  test('64-bit integer encodings decode as numbers', () => {
    // msgpackr writes large integers as float64; another encoder may use (u)int64.
    const decoded = decodeHeartbeat(
      pack({ ...hb, v: 1, incarnation: BigInt(hb.incarnation), seq: 7n }),
      'acme',
    );
    assert.ok(decoded.ok);
    assert.equal(decoded.heartbeat.incarnation, hb.incarnation);
    assert.equal(decoded.heartbeat.seq, 7);
  });

  test('addrs may be absent', () => {
    const { addrs: _addrs, ...withoutAddrs } = hb;
    const decoded = decodeHeartbeat(pack({ v: 1, ...withoutAddrs }), 'acme');
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.heartbeat.addrs, []);
  });

  test('never throws on arbitrary input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        decodeHeartbeat(bytes, 'acme');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('sync frames', () => {
  test('round-trip and reject garbage with a SyncProtocolError', () => {
    const sv = Y.encodeStateVector(new Y.Doc());
    assert.deepEqual(decodeFrame(encodeFrame({ t: FrameType.step1, doc: 'observed', sv })), {
      t: 1,
      doc: 'observed',
      sv: Buffer.from(sv),
    });
    assert.deepEqual(decodeFrame(encodeFrame({ t: FrameType.busy })), { t: 3 });
    // Slices (docs/protocol.md): `slices` on step 1, `next` on step 2; an older frame without them is unchanged.
    assert.deepEqual(decodeFrame(encodeFrame({ t: FrameType.step1, doc: 'observed', sv, slices: true })), {
      t: 1,
      doc: 'observed',
      sv: Buffer.from(sv),
      slices: true,
    });
    const update = Y.encodeStateAsUpdate(new Y.Doc());
    assert.deepEqual(decodeFrame(encodeFrame({ t: FrameType.step2, doc: 'workloads', update, next: true })), {
      t: 2,
      doc: 'workloads',
      update: Buffer.from(update),
      next: true,
    });
    const bad = [
      Uint8Array.from([0xc1]),
      pack({ t: 9 }),
      pack({ t: 1, doc: 'nope', sv }),
      pack({ t: 1, doc: 'observed', sv: Uint8Array.from([0xff, 0xff, 0xff]) }),
      pack({ t: 2, doc: 'observed', update: new Uint8Array() }),
      pack({ t: 1, doc: 'observed', sv, slices: 1 }),
      pack({ t: 2, doc: 'observed', update: Uint8Array.from([0, 0]), next: false }),
      pack({ t: 2, doc: 'observed', update: Uint8Array.from([0, 0]), next: true, more: true }),
      pack({ t: 1, doc: 'workloads', sv, e: [1] }),
      pack({ t: 2, doc: 'workloads', update: Uint8Array.from([0, 0]), e: [-1, 'x'] }),
      pack({ t: 2, doc: 'workloads', update: Uint8Array.from([0, 0]), e: 'x' }),
    ];
    // The epoch of a step frame (docs/protocol.md): absent means genesis.
    const tagged = decodeFrame(encodeFrame({ t: FrameType.step1, doc: 'workloads', sv, e: [2, 'ab'] }));
    assert.ok(tagged.t === FrameType.step1);
    assert.deepEqual(frameEpoch(tagged), { number: 2, id: 'ab' });
    const untagged = decodeFrame(encodeFrame({ t: FrameType.step1, doc: 'workloads', sv }));
    assert.ok(untagged.t === FrameType.step1);
    assert.deepEqual(frameEpoch(untagged), GENESIS_EPOCH);
    for (const bytes of bad) assert.throws(() => decodeFrame(bytes), SyncProtocolError);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          decodeFrame(bytes);
        } catch (err) {
          assert.ok(err instanceof SyncProtocolError, String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('topics', () => {
  test('names and org validation', () => {
    assert.equal(docTopic('acme', 'workloads'), '/silo/acme/workloads/1');
    assert.equal(livenessTopic('acme'), '/silo/acme/liveness/1');
    assert.throws(() => assertOrgName('a/b'), /invalid org name/);
    assert.throws(() => assertOrgName(''), /invalid org name/);
    assert.throws(() => docTopic('Acme', 'workloads'), /invalid org name/);
  });
});
