import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import { pack } from 'msgpackr';
import * as Y from 'yjs';
import { encodeEnvelope } from '../../src/gossip/envelope.js';
import { encodeHeartbeat } from '../../src/gossip/heartbeat.js';
import { docTopic, generateNodeKey, livenessTopic } from '../../src/gossip/index.js';
import { createGossipNode, type GossipNode } from '../../src/gossip/node.js';
import {
  digestsEqual,
  metricValue,
  ORG,
  readSpec,
  startCluster,
  stopAll,
  type TestNode,
  waitFor,
  writeSpec,
} from './helpers.js';

const MAX_UPDATE_BYTES = 64 * 1024;

function yjsUpdate(key: string): Uint8Array {
  const doc = new Y.Doc();
  doc.getMap('specs').set(key, { evil: true });
  return Y.encodeStateAsUpdate(doc);
}

/**
 * A bare libp2p node (gossipsub, no silo validators) connected to `target`
 * only. One per message: gossipsub graylists a peer after a few rejects,
 * and a graylisted peer's later messages would not reach the validator.
 */
async function injector(target: TestNode): Promise<GossipNode> {
  const node = await createGossipNode({
    transport: 'tcp',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    privateKey: await generateNodeKey(),
  });
  await node.dial(multiaddr(target.gossip.multiaddrs()[0]!));
  return node;
}

async function inject(node: GossipNode, target: TestNode, topic: string, bytes: Uint8Array): Promise<void> {
  await waitFor('the target subscription to reach the injector', () =>
    node.services.pubsub.getSubscribers(topic).some((p) => p.toString() === target.gossip.peerId),
  );
  const result = await node.services.pubsub.publish(topic, bytes);
  assert.ok(result.recipients.length > 0, 'the injector sent its message');
}

describe('malformed gossip messages', () => {
  test('every class is rejected and counted, the documents are untouched, replication continues', async (t) => {
    const injectors: GossipNode[] = [];
    const nodes = await startCluster(3, {
      maxUpdateBytes: MAX_UPDATE_BYTES,
      isSenderAllowed: (_peerId, nodeId) => nodeId !== 'intruder',
      // All injectors connect from 127.0.0.1 at once; libp2p's default allows 5 per second per host.
      connectionLimits: { inboundPerHostPerSecond: 100 },
    });
    t.after(async () => {
      await Promise.allSettled(injectors.map((n) => n.stop()));
      await stopAll(nodes);
    });
    const [target, writer, third] = nodes as [TestNode, TestNode, TestNode];
    writeSpec(writer, 'baseline', 1);
    await waitFor('baseline convergence', () => digestsEqual(nodes));
    const before = target.state.digestsAll();

    const topic = docTopic(ORG, 'workloads');
    const valid = encodeEnvelope({ org: ORG, doc: 'workloads', from: 'mallory', update: yjsUpdate('m') });
    const flipped = new Uint8Array(valid);
    flipped[valid.byteLength - 12] = flipped[valid.byteLength - 12]! ^ 0x01;
    const garbage = randomBytes(300);
    garbage[0] = 0x05; // a complete msgpack value (fixint) followed by trailing bytes: never a valid map
    const goodUpdate = yjsUpdate('t');
    const badYjs = goodUpdate.subarray(0, goodUpdate.byteLength - 3);
    const cases: [string, Uint8Array, string][] = [
      ['random bytes', garbage, 'malformed'],
      ['truncated', valid.subarray(0, valid.byteLength - 7), 'malformed'],
      [
        'wrong version',
        pack({ v: 2, org: ORG, doc: 'workloads', from: 'x', update: goodUpdate, crc: 0 }),
        'wrong-version',
      ],
      [
        'wrong org',
        encodeEnvelope({ org: 'other', doc: 'workloads', from: 'x', update: goodUpdate }),
        'wrong-org',
      ],
      [
        'wrong doc',
        encodeEnvelope({ org: ORG, doc: 'enrollment', from: 'x', update: goodUpdate }),
        'wrong-doc',
      ],
      [
        'oversize',
        encodeEnvelope({
          org: ORG,
          doc: 'workloads',
          from: 'x',
          update: new Uint8Array(MAX_UPDATE_BYTES + 2048),
        }),
        'oversize',
      ],
      ['flipped byte in update', flipped, 'bad-checksum'],
      [
        'checksummed but not a Yjs update',
        encodeEnvelope({ org: ORG, doc: 'workloads', from: 'x', update: badYjs }),
        'invalid-update',
      ],
      [
        'not enrolled',
        encodeEnvelope({ org: ORG, doc: 'workloads', from: 'intruder', update: goodUpdate }),
        'sender-not-allowed',
      ],
    ];
    const hbTopic = livenessTopic(ORG);
    const hbCases: [Uint8Array, string][] = [
      [randomBytes(64), 'malformed'],
      [
        encodeHeartbeat({
          org: 'other',
          nodeId: 'n',
          incarnation: 1,
          seq: 0,
          digests: before,
          sentAt: 0,
          addrs: [],
        }),
        'wrong-org',
      ],
    ];
    hbCases[0]![0][0] = 0x05;
    // Injectors connect in parallel; each then sends exactly one message.
    injectors.push(...(await Promise.all([...cases, ...hbCases].map(() => injector(target)))));
    let next = 0;
    for (const [name, bytes, reason] of cases) {
      await inject(injectors[next++]!, target, topic, bytes);
      const expected = cases
        .slice(0, cases.findIndex((c) => c[0] === name) + 1)
        .filter((c) => c[2] === reason).length;
      await waitFor(`${name} to be rejected as ${reason}`, async () => {
        return (await metricValue(target, 'silo_gossip_rejected_total', { reason })) >= expected;
      });
    }
    for (const [bytes, reason] of hbCases) {
      await inject(injectors[next++]!, target, hbTopic, bytes);
      await waitFor(`heartbeat rejected as ${reason}`, async () => {
        return (await metricValue(target, 'silo_liveness_heartbeats_rejected_total', { reason })) >= 1;
      });
    }

    // Exactly one reject per class, nothing applied, nothing forwarded.
    for (const [name, , reason] of cases) {
      const expected = cases.filter((c) => c[2] === reason).length;
      assert.equal(await metricValue(target, 'silo_gossip_rejected_total', { reason }), expected, name);
    }
    assert.deepEqual(target.state.digestsAll(), before);
    assert.equal(readSpec(target, 'm'), undefined);
    assert.equal(readSpec(target, 't'), undefined);
    for (const other of [writer, third]) {
      assert.equal(
        await metricValue(other, 'silo_gossip_rejected_total'),
        0,
        'rejected messages are not forwarded',
      );
    }

    writeSpec(writer, 'after', 2);
    await waitFor(
      'replication after the attack',
      () => readSpec(target, 'after') === 2 && readSpec(third, 'after') === 2,
    );
    assert.ok(digestsEqual(nodes));
  });
});
