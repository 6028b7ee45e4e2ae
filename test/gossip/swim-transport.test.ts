import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { peerIdFromString } from '@libp2p/peer-id';
import * as lp from 'it-length-prefixed';
import { packMessage } from '../../src/gossip/codec.js';
import {
  SWIM_PROTOCOL,
  type SwimMember,
  SwimMembership,
  type SwimMembershipOptions,
} from '../../src/gossip/swim-transport.js';
import { encodeSwimFrame } from '../../src/membership/swim-frames.js';
import { Origin } from '../../src/state/names.js';
import {
  metricValue,
  type NodeOverrides,
  silentLogger,
  startCluster,
  stopAll,
  stopNode,
  type TestNode,
  waitFor,
} from './helpers.js';

/** Fast periods so that a test sees a crash declared within seconds; real libp2p over loopback TCP. */
const PARAMS = { probeIntervalMs: 200, probeTimeoutMs: 100 };

/** SWIM on a test node's libp2p, with the fast PARAMS; `extra` adds options (digests on probes). */
function swimOn(
  n: TestNode,
  members: () => SwimMember[],
  extra: Partial<SwimMembershipOptions> = {},
): SwimMembership {
  return new SwimMembership({
    node: n.gossip.node,
    selfId: n.nodeId,
    members,
    logger: silentLogger,
    registry: n.registry,
    params: PARAMS,
    ...extra,
  });
}

describe('SWIM over /silo/swim/1 (real libp2p)', () => {
  let nodes: TestNode[] = [];
  let members: SwimMember[] = [];
  let swims: SwimMembership[] = [];

  before(async () => {
    // Three members and a fourth libp2p node that is not one (a stranger with a valid libp2p key).
    nodes = await startCluster(4);
    members = nodes.slice(0, 3).map((n) => ({ nodeId: n.nodeId, peerId: n.gossip.peerId }));
    swims = nodes.slice(0, 3).map((n) => swimOn(n, () => members));
    for (const swim of swims) await swim.start();
  });
  after(async () => {
    for (const swim of swims) await swim.stop();
    await stopAll(nodes);
  });

  const sees = (i: number, nodeId: string) => swims[i]?.stateOf(nodeId)?.state;

  test('members probe each other and see each other alive; a stranger is not a member', async () => {
    await waitFor('probes answered', async () => {
      const acks = await metricValue(nodes[0]!, 'silo_swim_messages_total', {
        direction: 'in',
        kind: 'ack',
      });
      return acks >= 3;
    });
    // (A first probe may miss while connections between members are still being dialled: suspected, refuted.)
    await waitFor('every member alive to every other', () =>
      [0, 1, 2].every((i) =>
        members.every((other) => i === members.indexOf(other) || sees(i, other.nodeId) === 'alive'),
      ),
    );
    assert.equal(swims[0]?.stateOf(nodes[3]!.nodeId), null);
  });

  test("a stranger's frames and a member's malformed frames are dropped and counted; nothing changes", async () => {
    const send = async (from: TestNode, bytes: Uint8Array) => {
      const stream = await from.gossip.node.dialProtocol(
        peerIdFromString(nodes[0]!.gossip.peerId),
        SWIM_PROTOCOL,
      );
      await stream.sink([lp.encode.single(bytes).subarray()]);
      await stream.close().catch(() => undefined);
    };
    // The stranger claims member node-2 is dead at a high incarnation: believed, it would be a false death.
    const obituary = encodeSwimFrame({
      kind: 'ping',
      seq: 1,
      updates: [{ node: 'node-2', state: 'dead', incarnation: 1000 }],
    });
    await send(nodes[3]!, obituary).catch(() => undefined);
    await send(nodes[1]!, packMessage({ v: 1, k: 'ping', s: 1, u: [['NOT-AN-ID', 0, 1]] }));
    await send(nodes[1]!, packMessage({ v: 9, k: 'ping', s: 1, u: [] }));
    await waitFor('rejections counted', async () => {
      const value = (reason: string) => metricValue(nodes[0]!, 'silo_swim_frames_rejected_total', { reason });
      return (
        (await value('stranger')) >= 1 &&
        (await value('malformed')) >= 1 &&
        (await value('wrong-version')) >= 1
      );
    });
    // The obituary was not believed. (node-2 may be suspect for a moment on its own: a probe that
    // missed its ack on a loaded machine; that is normal SWIM, not the stranger's doing.)
    assert.notEqual(sees(0, 'node-2'), 'dead');
    assert.ok((swims[0]?.stateOf('node-2')?.incarnation ?? 0) < 1000);
  });

  test('a member that stops is suspected, then declared dead by the others', async () => {
    await swims[2]!.stop();
    await stopNode(nodes[2]!);
    await waitFor(
      'node-2 dead on both survivors',
      () => sees(0, 'node-2') === 'dead' && sees(1, 'node-2') === 'dead',
      30_000,
    );
    assert.equal(sees(0, 'node-1'), 'alive');
    assert.equal(sees(1, 'node-0'), 'alive');
    assert.ok((await metricValue(nodes[0]!, 'silo_swim_members', { state: 'dead' })) >= 1);
  });
});

describe('digests on SWIM probes (docs/protocol.md, "Anti-entropy")', () => {
  // Heartbeats only at start, no periodic sync: only what the probes carry can show a difference.
  const QUIET: NodeOverrides = { heartbeatMs: 600_000, syncIntervalMs: 0, syncGraceMs: 300 };

  async function pair(withDigests: boolean) {
    const nodes = await startCluster(2, QUIET);
    const members = nodes.map((n) => ({ nodeId: n.nodeId, peerId: n.gossip.peerId }));
    const swims = nodes.map((n) =>
      swimOn(
        n,
        () => members,
        withDigests
          ? {
              digests: () => n.state.digestsAll(),
              onPeerDigests: (report) => n.gossip.observePeerDigests(report),
            }
          : {},
      ),
    );
    for (const swim of swims) await swim.start();
    // Let the sync that every new connection runs finish first: it would carry the write too.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const stop = async () => {
      for (const swim of swims) await swim.stop();
      await stopAll(nodes);
    };
    return { nodes, stop };
  }

  /** A write that gossip never carries (as if its message was lost): only anti-entropy can bring it over. */
  function silentWrite(node: TestNode, key: string): void {
    const doc = node.state.doc('workloads');
    doc.transact(() => doc.getMap('specs').set(key, 'v'), Origin.remote);
  }

  test('a difference no message carried is repaired by a sync the probes asked for', async () => {
    const { nodes, stop } = await pair(true);
    try {
      const [a, b] = nodes as [TestNode, TestNode];
      const reports: string[] = [];
      b.gossip.onPeerDigests((r) => reports.push(r.via));
      silentWrite(a, 'lost-write');
      await waitFor(
        'b has the write',
        () => b.state.digest('workloads') === a.state.digest('workloads'),
        15_000,
      );
      assert.ok(reports.includes('probe'), 'digests came with probes');
      const syncs =
        (await metricValue(a, 'silo_liveness_digest_syncs_total')) +
        (await metricValue(b, 'silo_liveness_digest_syncs_total'));
      assert.ok(syncs >= 1, `digest syncs: ${syncs}`);
    } finally {
      await stop();
    }
  });

  test('without digests on the probes the same difference stays (the test above can fail)', async () => {
    const { nodes, stop } = await pair(false);
    try {
      const [a, b] = nodes as [TestNode, TestNode];
      silentWrite(a, 'lost-write');
      await new Promise((resolve) => setTimeout(resolve, 2500));
      assert.notEqual(b.state.digest('workloads'), a.state.digest('workloads'));
    } finally {
      await stop();
    }
  });
});
