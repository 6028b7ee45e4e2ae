import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { packMessage } from '../../src/gossip/codec.js';
import type { MemberUpdate, SwimMessage } from '../../src/membership/swim-core.js';
import {
  decodeSwimFrame,
  encodeSwimFrame,
  MAX_SWIM_FRAME_BYTES,
  MAX_SWIM_UPDATES,
} from '../../src/membership/swim-frames.js';

const nodeId = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,62}$/);
const incarnation = fc.nat({ max: Number.MAX_SAFE_INTEGER });
const update: fc.Arbitrary<MemberUpdate> = fc.oneof(
  fc.record({ node: nodeId, state: fc.constantFrom('alive' as const, 'dead' as const), incarnation }),
  fc.record({ node: nodeId, state: fc.constant('suspect' as const), incarnation }),
  fc.record({ node: nodeId, state: fc.constant('suspect' as const), incarnation, from: nodeId }),
);
const updates = fc.array(update, { maxLength: MAX_SWIM_UPDATES });
const seq = fc.nat({ max: Number.MAX_SAFE_INTEGER });
const message: fc.Arbitrary<SwimMessage> = fc.oneof(
  fc.record({
    kind: fc.constantFrom('ping' as const, 'ack' as const, 'nack' as const, 'gossip' as const),
    seq,
    updates,
  }),
  fc.record({ kind: fc.constant('ping-req' as const), seq, target: nodeId, updates }),
);

function rejected(bytes: Uint8Array): string {
  const decoded = decodeSwimFrame(bytes);
  assert.equal(decoded.ok, false, 'expected a rejection');
  return decoded.ok ? '' : `${decoded.reason}: ${decoded.detail}`;
}

describe('SWIM frames (docs/membership.md, "Wire format")', () => {
  test('every message survives encode and decode unchanged', () => {
    fc.assert(
      fc.property(message, (m) => {
        const decoded = decodeSwimFrame(encodeSwimFrame(m));
        // (fast-check builds null-prototype records; the decoder builds plain ones.)
        assert.deepEqual(decoded, { ok: true, message: JSON.parse(JSON.stringify(m)) });
      }),
      { numRuns: 500 },
    );
  });

  test("pings and acks carry the sender's digests; other kinds never do", () => {
    const digests = { enrollment: 'a'.repeat(16), workloads: 'b'.repeat(16), observed: 'c'.repeat(16) };
    fc.assert(
      fc.property(message, (m) => {
        const decoded = decodeSwimFrame(encodeSwimFrame(m, digests));
        assert.equal(decoded.ok, true);
        const carried = decoded.ok ? decoded.digests : undefined;
        if (m.kind === 'ping' || m.kind === 'ack') assert.deepEqual(carried, digests);
        else assert.equal(carried, undefined, `a ${m.kind} left its digests out`);
      }),
      { numRuns: 300 },
    );
    // The frame without digests (an agent of an earlier version) is still a message.
    const plain = decodeSwimFrame(encodeSwimFrame({ kind: 'ping', seq: 3, updates: [] }));
    assert.deepEqual(plain, { ok: true, message: { kind: 'ping', seq: 3, updates: [] } });
  });

  test('the largest legal frame fits the size bound', () => {
    const long = 'n'.repeat(63);
    const full: SwimMessage = {
      kind: 'ping-req',
      seq: Number.MAX_SAFE_INTEGER,
      target: long,
      updates: Array.from({ length: MAX_SWIM_UPDATES }, () => ({
        node: long,
        state: 'suspect' as const,
        incarnation: Number.MAX_SAFE_INTEGER,
        from: long,
      })),
    };
    const bytes = encodeSwimFrame(full);
    assert.ok(bytes.byteLength <= MAX_SWIM_FRAME_BYTES, `${bytes.byteLength} bytes`);
    assert.equal(decodeSwimFrame(bytes).ok, true);
  });

  test('each kind of bad frame is refused with a reason that names it', () => {
    const base = { v: 1, k: 'ping', s: 1, u: [] };
    const digestsOk = { enrollment: 'a', workloads: 'b', observed: 'c' };
    const cases: [unknown, RegExp][] = [
      [[1, 2, 3], /malformed: not a msgpack map/],
      [{ ...base, v: 2 }, /wrong-version: v=2/],
      [{ ...base, k: 'pong' }, /malformed: k="pong" is not a message kind/],
      [{ ...base, s: -1 }, /malformed: s \(seq\)/],
      [{ ...base, s: 1.5 }, /malformed: s \(seq\)/],
      [{ ...base, u: 'x' }, /malformed: u \(updates\) is not an array/],
      [{ ...base, u: Array.from({ length: MAX_SWIM_UPDATES + 1 }, () => ['a', 0, 1]) }, /updates \(at most/],
      [{ ...base, u: [['A', 0, 1]] }, /update 0: node is not a node id/],
      [{ ...base, u: [['a', 3, 1]] }, /update 0: state 3 is not 0, 1 or 2/],
      [{ ...base, u: [['a', 0, -4]] }, /update 0: incarnation/],
      [{ ...base, u: [['a', 0]] }, /update 0 is not \[node, state, incarnation, from\?\]/],
      [
        {
          ...base,
          u: [
            ['a', 0, 1],
            ['b', 0, 1, 'c'],
          ],
        },
        /update 1: only a suspicion names who suspects/,
      ],
      [{ ...base, u: [['a', 1, 1, 'C']] }, /update 0: from is not a node id/],
      [{ ...base, k: 'ping-req' }, /malformed: t \(target\) is not a node id/],
      [{ ...base, t: 'b' }, /malformed: t \(target\) on a ping/],
      [{ ...base, k: 'nack', d: digestsOk }, /malformed: d \(digests\) on a nack/],
      [{ ...base, d: 'abc' }, /malformed: d: digests is not a map/],
      [{ ...base, d: { ...digestsOk, workloads: 7 } }, /malformed: d: digest of workloads is missing/],
      [{ ...base, d: { enrollment: 'a', workloads: 'b' } }, /malformed: d: digest of observed is missing/],
      [{ ...base, d: { ...digestsOk, observed: 'x'.repeat(129) } }, /malformed: d: digest of observed/],
    ];
    for (const [frame, expected] of cases)
      assert.match(rejected(packMessage(frame)), expected, JSON.stringify(frame));
    assert.match(rejected(new Uint8Array([0x85, 0xa1])), /malformed: not msgpack/);
    assert.match(rejected(new Uint8Array(MAX_SWIM_FRAME_BYTES + 1)), /oversize/);
  });

  test('arbitrary bytes and damaged frames never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
        decodeSwimFrame(bytes);
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(message, fc.nat(), fc.nat({ max: 255 }), (m, at, byte) => {
        const bytes = encodeSwimFrame(m);
        bytes[at % bytes.byteLength] = byte;
        const decoded = decodeSwimFrame(bytes);
        // Either refused, or a well-formed message (a damaged byte can still spell one).
        if (decoded.ok) assert.equal(decodeSwimFrame(encodeSwimFrame(decoded.message)).ok, true);
      }),
      { numRuns: 2000 },
    );
  });
});
