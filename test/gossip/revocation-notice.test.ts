import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { peerIdFromString } from '@libp2p/peer-id';
import * as lp from 'it-length-prefixed';
import { packMessage, unpackMessage } from '../../src/gossip/codec.js';
import { REVOCATION_NOTICE_PROTOCOL } from '../../src/gossip/revocation-notice.js';
import { asBytes } from '../../src/gossip/single-frame.js';
import { metricValue, startNode, stopAll, type TestNode, waitFor } from './helpers.js';

/**
 * `/silo/revoked/1` between real libp2p nodes over loopback TCP: a notice
 * reaches the listener as sent (the receiver judges the record, not this
 * layer), malformed frames are refused and never reach it, and the sender
 * closes the connection after handing it over.
 */
describe('revocation notice (/silo/revoked/1)', () => {
  let member: TestNode;
  let revoked: TestNode;
  const heard: { record: unknown; from: string }[] = [];

  before(async () => {
    member = await startNode('member');
    revoked = await startNode('revoked', { bootstrap: [member.gossip.multiaddrs()[0]!] });
    revoked.gossip.onRevocationNotice((record, from) => heard.push({ record, from }));
    await waitFor('connected', () => member.gossip.peers().length === 1);
  });
  after(() => stopAll([member, revoked]));

  /** Opens the protocol by hand, writes `bytes` as-is, returns what the receiver answered (or the error). */
  async function sendRaw(frames: Uint8Array[]): Promise<unknown> {
    const stream = await member.gossip.node.dialProtocol(
      peerIdFromString(revoked.gossip.peerId),
      REVOCATION_NOTICE_PROTOCOL,
    );
    try {
      await stream.sink(frames);
      const out: Uint8Array[] = [];
      for await (const chunk of lp.decode(asBytes(stream.source))) out.push(chunk.subarray());
      return out.length === 1 ? unpackMessage(out[0]!) : out;
    } catch (err) {
      return err;
    }
  }

  test('malformed notices are refused and never reach the listener', async () => {
    const cases: Uint8Array[][] = [
      [lp.encode.single(packMessage({ v: 2, revocation: {} })).subarray()],
      [lp.encode.single(packMessage({ v: 1, revocation: {}, extra: true })).subarray()],
      [lp.encode.single(Uint8Array.of(0xc1)).subarray()],
      [lp.encode.single(new Uint8Array(9000)).subarray()],
      [
        lp.encode.single(packMessage({ v: 1, revocation: 1 })).subarray(),
        lp.encode.single(packMessage({ v: 1, revocation: 2 })).subarray(),
      ],
      [],
    ];
    for (const frames of cases) {
      const answer = await sendRaw(frames);
      assert.ok(
        !(answer as { v?: number })?.v,
        `no acknowledgement for a malformed notice: ${String(answer)}`,
      );
    }
    await waitFor('every malformed notice counted', async () => {
      // Bad frames, undecodable msgpack, an oversized frame: each refused, none acknowledged.
      const refused =
        (await metricValue(revoked, 'silo_revocation_notices_total', {
          direction: 'in',
          result: 'malformed',
        })) +
        (await metricValue(revoked, 'silo_revocation_notices_total', { direction: 'in', result: 'error' }));
      return refused === cases.length;
    });
    assert.deepEqual(heard, []);
  });

  test('a notice reaches the listener as sent, then the sender closes the connection', async () => {
    const record = { nodeId: 'revoked', revokedAt: 5, reason: 'test', cert: 'AAAA' };
    // As after a revocation: the gate refuses new connections, the open one is still there.
    member.gossip.blocklist.add(revoked.gossip.peerId);
    await member.gossip.notifyRevokedAndClose(revoked.gossip.peerId, record);
    assert.deepEqual(heard, [{ record, from: member.gossip.peerId }]);
    await waitFor('no connection left', () => member.gossip.peers().length === 0);
    assert.equal(
      await metricValue(member, 'silo_revocation_notices_total', { direction: 'out', result: 'ok' }),
      1,
    );
  });

  test('without a connection nothing is dialed', async () => {
    await member.gossip.notifyRevokedAndClose(revoked.gossip.peerId, { nodeId: 'revoked' });
    assert.equal(
      await metricValue(member, 'silo_revocation_notices_total', {
        direction: 'out',
        result: 'not-connected',
      }),
      1,
    );
    assert.equal(heard.length, 1);
  });
});
