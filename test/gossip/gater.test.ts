import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import type { ConnectionGater, Libp2p } from '@libp2p/interface';
import { tcp } from '@libp2p/tcp';
import { createLibp2p } from 'libp2p';
import { enrollmentGater, type GateStage } from '../../src/gossip/gater.js';

async function startNode(connectionGater?: ConnectionGater): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(connectionGater !== undefined ? { connectionGater } : {}),
  });
}

async function eventually(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** `from` dials `to` and gets no usable connection: the dial fails, or what it returns is closed by the far end. */
async function expectRefused(from: Libp2p, to: Libp2p): Promise<void> {
  let connection: Awaited<ReturnType<Libp2p['dial']>>;
  try {
    connection = await from.dial(to.getMultiaddrs());
  } catch {
    return;
  }
  await eventually(() => connection.status === 'closed', 'the refused connection to close');
  assert.equal(from.getConnections(to.peerId).length, 0);
}

describe('enrollment connection gater', () => {
  test('enrolled peers connect; an unenrolled peer can neither connect in nor be dialled', async (t) => {
    const enrolled = new Set<string>();
    const denials: [string, GateStage][] = [];
    const gater = () =>
      enrollmentGater({
        isPeerAllowed: (peerId) => enrolled.has(peerId),
        onDenied: (peerId, stage) => denials.push([peerId, stage]),
      });
    const a = await startNode(gater());
    const b = await startNode(gater());
    // c runs stock libp2p with no gate: it tries everything, the gate on a/b must hold.
    const c = await startNode();
    t.after(() => Promise.all([a.stop(), b.stop(), c.stop()]));
    enrolled.add(a.peerId.toString());
    enrolled.add(b.peerId.toString());
    const cId = c.peerId.toString();

    // Enrolled: a dials b.
    const connection = await a.dial(b.getMultiaddrs());
    assert.equal(connection.remotePeer.toString(), b.peerId.toString());
    await eventually(() => b.getConnections(a.peerId).length > 0, 'b to see a');

    // Unenrolled inbound: c dials a; a refuses once noise has authenticated c. The initiator finishes
    // its side of the handshake first, so c's dial may resolve, but the connection is closed at once
    // and a never admits it.
    const connectedToA: string[] = [];
    a.addEventListener('peer:connect', (event) => connectedToA.push(event.detail.toString()));
    await expectRefused(c, a);
    assert.equal(a.getConnections(c.peerId).length, 0);
    assert.ok(denials.some(([peer, stage]) => peer === cId && stage === 'inbound-encrypted'));

    // Unenrolled outbound: b dials c, by peer id (after learning its addresses) and by full multiaddr.
    await b.peerStore.merge(c.peerId, { multiaddrs: c.getMultiaddrs() });
    await assert.rejects(b.dial(c.peerId));
    await assert.rejects(b.dial(c.getMultiaddrs()));
    assert.equal(b.getConnections(c.peerId).length, 0);
    assert.equal(c.getConnections().filter((conn) => conn.remotePeer.equals(b.peerId)).length, 0);
    assert.ok(denials.some(([peer, stage]) => peer === cId && stage === 'dial-peer'));
    assert.ok(
      denials.every(([peer]) => peer === cId),
      'only the unenrolled peer was ever denied',
    );

    assert.ok(!connectedToA.includes(cId), 'a never admitted c');

    // The gate follows the allowed set without being rebuilt: enrol c, and it gets in.
    enrolled.add(cId);
    const late = await c.dial(a.getMultiaddrs());
    assert.equal(late.remotePeer.toString(), a.peerId.toString());
    await eventually(() => a.getConnections(c.peerId).length > 0, 'a to accept c');
  });

  test('an outbound dial to an address without a peer id is stopped after the handshake', async (t) => {
    const stages: GateStage[] = [];
    const a = await startNode(
      enrollmentGater({ isPeerAllowed: () => false, onDenied: (_peer, stage) => stages.push(stage) }),
    );
    const c = await startNode();
    t.after(() => Promise.all([a.stop(), c.stop()]));
    // Strip /p2p/<id>: the gate learns who is there only from the noise handshake.
    const bare = c.getMultiaddrs().map((ma) => ma.decapsulateCode(421));
    await assert.rejects(a.dial(bare));
    assert.equal(a.getConnections().length, 0);
    assert.deepEqual(stages, ['outbound-encrypted']);
  });
});
