import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Packr } from 'msgpackr';
import { FailureDetector } from '../../src/gossip/failure-detector.js';
import {
  decodeHeartbeat,
  encodeHeartbeat,
  type Heartbeat,
  type HeartbeatAck,
  type HeartbeatFields,
  MAX_HEARTBEAT_BYTES,
  MAX_HEARTBEAT_ENTRIES,
} from '../../src/gossip/heartbeat.js';
import { HeartbeatLedger } from '../../src/gossip/heartbeat-ledger.js';
import { heartbeatFrom } from './helpers.js';

const packr = new Packr({ useRecords: false });
const pack = (value: unknown) => packr.pack(value);

const base: HeartbeatFields = {
  org: 'acme',
  nodeId: 'node-1',
  incarnation: 1_700_000_000_000,
  seq: 3,
  digests: { enrollment: 'a', workloads: 'b', observed: 'c' },
  sentAt: 1_700_000_000_500,
  addrs: [],
};

describe('heartbeat acks and dead (codec)', () => {
  test('round-trip; absent or empty maps decode as empty', () => {
    const acks = new Map<string, HeartbeatAck>([
      ['node-2', [1_700_000_000_001, 41]],
      ['node-3', [5, 0]],
    ]);
    const dead = new Map([
      ['node-4', 1_699_000_000_000],
      ['node-5', 0],
    ]);
    const decoded = decodeHeartbeat(encodeHeartbeat({ ...base, acks, dead }), 'acme');
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.heartbeat.acks, acks);
    assert.deepEqual(decoded.heartbeat.dead, dead);

    // An old sender writes neither key; an empty map is not written at all.
    const bare = encodeHeartbeat({ ...base, acks: new Map(), dead: new Map() });
    assert.deepEqual(bare, encodeHeartbeat(base));
    const old = decodeHeartbeat(bare, 'acme');
    assert.ok(old.ok);
    assert.equal(old.heartbeat.acks.size, 0);
    assert.equal(old.heartbeat.dead.size, 0);
    // And an old receiver, which destructures only the keys it knows, ignores the new ones.
  });

  test('1000 nodes with schema-length ids fit the byte limit', () => {
    const id = (i: number) => `n${String(i).padStart(62, '0')}`; // 63 characters, NODE_ID_PATTERN's longest
    const acks = new Map<string, HeartbeatAck>();
    for (let i = 0; i < 1000; i++) acks.set(id(i), [Date.now(), 2 ** 32 - 1]);
    const bytes = encodeHeartbeat({ ...base, nodeId: id(9999), acks });
    assert.ok(bytes.byteLength <= MAX_HEARTBEAT_BYTES, `${bytes.byteLength} bytes`);
    assert.ok(decodeHeartbeat(bytes, 'acme').ok);
  });

  test('malformed acks and dead are rejected with a detail naming the field', () => {
    const v1 = { v: 1, ...base };
    const tooMany = Object.fromEntries(
      Array.from({ length: MAX_HEARTBEAT_ENTRIES + 1 }, (_, i) => [`n${i}`, [1, 1]]),
    );
    const halfAcks = Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`a${i}`, [1, 1]]));
    const halfDead = Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`d${i}`, 1]));
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ['acks not a map', { acks: [['n', [1, 2]]] }, /acks is not a map/],
      ['acks value not a pair', { acks: { n: [1] } }, /ack of "n" is not \[incarnation, seq\]/],
      ['acks negative seq', { acks: { n: [1, -2] } }, /ack of "n"/],
      ['acks fractional incarnation', { acks: { n: [1.5, 2] } }, /ack of "n"/],
      ['acks string seq', { acks: { n: [1, '2'] } }, /ack of "n"/],
      ['acks unsafe integer', { acks: { n: [2 ** 53, 2] } }, /ack of "n"/],
      ['acks empty key', { acks: { '': [1, 2] } }, /acks has a key that is not a node id/],
      ['acks long key', { acks: { ['x'.repeat(257)]: [1, 2] } }, /acks has a key that is not a node id/],
      ['acks too many', { acks: tooMany }, /acks has 1025 entries/],
      ['dead not a map', { dead: 'n' }, /dead is not a map/],
      ['dead negative', { dead: { n: -1 } }, /dead incarnation of "n"/],
      ['dead not a number', { dead: { n: [1] } }, /dead incarnation of "n"/],
      ['dead empty key', { dead: { '': 1 } }, /dead has a key that is not a node id/],
      ['dead too many', { dead: tooMany }, /dead has 1025 entries/],
      ['both together too many', { acks: halfAcks, dead: halfDead }, /more than 1024 entries together/],
    ];
    for (const [name, extra, detail] of cases) {
      const decoded = decodeHeartbeat(pack({ ...v1, ...extra }), 'acme');
      assert.equal(decoded.ok, false, name);
      if (!decoded.ok) {
        assert.equal(decoded.reason, 'malformed', name);
        assert.match(decoded.detail, detail, name);
      }
    }
  });
});

/** A clock the test moves by hand. */
function manualClock(start = 1000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

function setup(deadAfterMs = 1000) {
  const clock = manualClock();
  const detector = new FailureDetector({ now: clock.now, suspectAfterMs: deadAfterMs / 2, deadAfterMs });
  const ledger = new HeartbeatLedger({ selfId: 'self', incarnation: 7, detector, now: clock.now });
  /** What the LivenessService does with an accepted heartbeat. */
  const receive = (hb: Heartbeat) => {
    if (detector.observe(hb.nodeId, hb.incarnation, hb.seq)) ledger.record(hb);
  };
  return { clock, detector, ledger, receive };
}

describe('HeartbeatLedger', () => {
  test('without evidence: no acks and no dead entries, but seq and the send log go on', () => {
    const { clock, detector, ledger } = setup(1000);
    detector.observe('a', 3, 1);
    const withAcks = ledger.nextHeartbeat();
    assert.deepEqual([...withAcks.acks.keys()], ['a']);
    clock.advance(100);
    const bare = ledger.nextHeartbeat(false);
    assert.equal(bare.seq, withAcks.seq + 1);
    assert.equal(bare.acks.size, 0);
    assert.equal(bare.dead.size, 0);
    assert.equal(ledger.sentAt(7, bare.seq), clock.now());
  });

  test('send log: seq → local send time, current incarnation only, trimmed to dead_after', () => {
    const { clock, ledger } = setup(1000);
    const first = ledger.nextHeartbeat();
    assert.equal(first.incarnation, 7);
    assert.equal(first.seq, 0);
    clock.advance(300);
    ledger.nextHeartbeat();
    assert.equal(ledger.sentAt(7, 0), 1000);
    assert.equal(ledger.sentAt(7, 1), 1300);
    assert.equal(ledger.sentAt(7, 2), undefined, 'not sent yet');
    assert.equal(ledger.sentAt(6, 0), undefined, 'another incarnation');
    for (let i = 0; i < 10; i++) {
      clock.advance(300);
      ledger.nextHeartbeat();
    }
    assert.equal(ledger.sentAt(7, 0), undefined, 'older than dead_after: dropped');
    assert.ok(ledger.sendLogSize() <= 5, `${ledger.sendLogSize()} entries kept`);
    assert.equal(ledger.sentAt(7, 11), clock.now());
  });

  test('acks list the newest heartbeat of each node heard within dead_after', () => {
    const { clock, ledger, receive, detector } = setup(1000);
    receive(heartbeatFrom('a', 10, 4));
    receive(heartbeatFrom('a', 10, 5));
    receive(heartbeatFrom('a', 10, 3)); // stale: ignored
    receive(heartbeatFrom('b', 20, 0));
    let out = ledger.nextHeartbeat();
    assert.deepEqual(
      out.acks,
      new Map([
        ['a', [10, 5]],
        ['b', [20, 0]],
      ]),
    );
    assert.equal(out.dead.size, 0);
    clock.advance(600);
    receive(heartbeatFrom('a', 10, 6));
    clock.advance(500);
    detector.tick();
    out = ledger.nextHeartbeat();
    assert.deepEqual(out.acks, new Map([['a', [10, 6]]]), 'b silent for dead_after: no ack');
    assert.deepEqual(out.dead, new Map([['b', 20]]), 'b declared dead at its incarnation');
  });

  test('dead stays dead: a declared incarnation heard again is never acked; a higher one is', () => {
    const { clock, ledger, receive, detector } = setup(1000);
    receive(heartbeatFrom('b', 20, 0));
    clock.advance(1000);
    // Not even ticked: the ledger measures the silence itself.
    assert.equal(ledger.ownDeadIncarnation('b'), 20);
    receive(heartbeatFrom('b', 20, 1)); // a healed partition: same incarnation
    assert.equal(detector.state('b'), 'alive', 'the detector revives it (redial, sync want it)');
    const out = ledger.nextHeartbeat();
    assert.equal(out.acks.has('b'), false, 'never acked again');
    assert.equal(out.dead.get('b'), 20, 'still listed dead');
    receive(heartbeatFrom('b', 21, 0)); // restarted
    const after = ledger.nextHeartbeat();
    assert.deepEqual(after.acks.get('b'), [21, 0]);
    assert.equal(after.dead.has('b'), false);
    assert.equal(ledger.isDeclaredDead('b', 20), true);
    assert.equal(ledger.isDeclaredDead('b', 21), false);
  });

  test('expected nodes never heard are declared dead (incarnation 0) after dead_after of listening', () => {
    const { clock, ledger } = setup(1000);
    ledger.setExpectedNodes(() => ['self', 'ghost']);
    assert.equal(ledger.nextHeartbeat().dead.size, 0, 'warm-up: not yet');
    clock.advance(1000);
    assert.deepEqual(ledger.nextHeartbeat().dead, new Map([['ghost', 0]]));
  });

  test('an incarnation only peers mention is declared dead dead_after after we learned of it', () => {
    const { clock, ledger, receive } = setup(1000);
    clock.advance(5000); // listening long enough
    receive(heartbeatFrom('a', 10, 0, { acks: [['ghost', [99, 3]]] }));
    assert.equal(ledger.knownIncarnation('ghost'), 99);
    assert.equal(ledger.ownDeadIncarnation('ghost'), undefined, 'just learned of it');
    clock.advance(999);
    assert.equal(ledger.ownDeadIncarnation('ghost'), undefined);
    clock.advance(1);
    assert.equal(ledger.ownDeadIncarnation('ghost'), 99);
  });

  test('reports keep what a peer says about us and the dead; rejoin starts a new incarnation', () => {
    const { ledger, receive } = setup(1000);
    ledger.nextHeartbeat();
    receive(heartbeatFrom('a', 10, 0, { acks: [['self', [7, 0]]], dead: [['c', 3]] }));
    const report = ledger.report('a');
    assert.deepEqual(report?.ackOfSelf, [7, 0]);
    assert.deepEqual(report?.dead, new Map([['c', 3]]));
    const next = ledger.rejoin();
    assert.ok(next > 7);
    const out = ledger.nextHeartbeat();
    assert.equal(out.incarnation, next);
    assert.equal(out.seq, 0, 'seq restarts with the incarnation');
    assert.equal(ledger.sentAt(7, 0), undefined, 'old incarnation sends forgotten');
  });
});
