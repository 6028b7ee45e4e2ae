import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SimNetwork } from '../../sim/net/sim-network.js';
import { FailureDetector } from '../../src/gossip/failure-detector.js';
import type { Heartbeat } from '../../src/gossip/heartbeat.js';
import { HeartbeatLedger } from '../../src/gossip/heartbeat-ledger.js';
import { HeartbeatLeaseSource } from '../../src/reconciler/heartbeat-lease.js';
import { DetectorLeaseSource } from '../../src/reconciler/lease.js';
import { FenceTracker } from '../../src/reconciler/placement/quorum.js';
import { heartbeatFrom, startNode, stopAll, type TestNode } from '../gossip/helpers.js';
import { waitFor } from '../helpers/wait.js';

const SELF_INC = 7;

/** One node's liveness bookkeeping on a hand-moved clock, fed heartbeats as the LivenessService would. */
function setup(active: string[], deadAfterMs = 1000) {
  let t = 1000;
  const now = () => t;
  const detector = new FailureDetector({ now, suspectAfterMs: deadAfterMs / 2, deadAfterMs });
  const ledger = new HeartbeatLedger({ selfId: 'self', incarnation: SELF_INC, detector, now });
  const source = new HeartbeatLeaseSource({
    selfId: 'self',
    ledger,
    detector,
    activeNodeIds: () => active,
    now,
  });
  const receive = (hb: Heartbeat) => {
    if (detector.observe(hb.nodeId, hb.incarnation, hb.seq)) ledger.record(hb);
  };
  return {
    now,
    advance: (ms: number) => {
      t += ms;
      detector.tick();
    },
    detector,
    ledger,
    source,
    receive,
  };
}

const FIVE = ['self', 'a', 'b', 'c', 'd'];

describe('HeartbeatLeaseSource', () => {
  test('evidence counts only the peers that acknowledge our heartbeats, dated by our send times', () => {
    const n = setup(FIVE);
    n.ledger.nextHeartbeat(); // seq 0 at 1000
    n.advance(300);
    n.ledger.nextHeartbeat(); // seq 1 at 1300
    n.advance(100);
    // Everyone is heard; only a and b acknowledge us (c acks another incarnation of ours).
    n.receive(heartbeatFrom('a', 1, 0, { acks: [['self', [SELF_INC, 1]]] }));
    n.receive(heartbeatFrom('b', 1, 0, { acks: [['self', [SELF_INC, 0]]] }));
    n.receive(heartbeatFrom('c', 1, 0, { acks: [['self', [SELF_INC - 1, 1]]] }));
    n.receive(heartbeatFrom('d', 1, 0));
    assert.deepEqual(n.source.evidence(n.now()), { quorumVisible: true, provenAt: 1000 });
    n.receive(heartbeatFrom('c', 1, 1, { acks: [['self', [SELF_INC, 1]]] }));
    assert.deepEqual(n.source.evidence(n.now()), { quorumVisible: true, provenAt: 1300 });

    const alone = setup(FIVE);
    alone.ledger.nextHeartbeat();
    for (const peer of ['a', 'b', 'c', 'd']) alone.receive(heartbeatFrom(peer, 1, 0));
    assert.deepEqual(
      alone.source.evidence(alone.now()),
      { quorumVisible: false, provenAt: null },
      'heard ≠ acked',
    );
    const notEnrolled = setup(['a', 'b']);
    assert.equal(notEnrolled.source.evidence(notEnrolled.now()).quorumVisible, false);
  });

  test('asymmetric partition: a holder that hears the quorum but is not heard loses its lease', () => {
    const n = setup(FIVE);
    const detectorSource = new DetectorLeaseSource({
      selfId: 'self',
      detector: n.detector,
      activeNodeIds: () => FIVE,
      now: n.now,
    });
    const strong = new FenceTracker({ fenceAfterMs: 600 });
    const weak = new FenceTracker({ fenceAfterMs: 600 });
    const observe = () => {
      const e1 = n.source.evidence(n.now());
      const e2 = detectorSource.evidence(n.now());
      return {
        strong: strong.observe(n.now(), e1.quorumVisible, e1.provenAt ?? n.now()).held,
        weak: weak.observe(n.now(), e2.quorumVisible, e2.provenAt ?? n.now()).held,
      };
    };
    const seqs = new Map<string, number>();
    const beat = (ackUs: boolean) => {
      const ours = n.ledger.nextHeartbeat();
      for (const peer of ['a', 'b', 'c', 'd']) {
        const seq = (seqs.get(peer) ?? 0) + 1;
        seqs.set(peer, seq);
        // Before the cut peers ack our newest heartbeat; after it they keep acking the last one they got.
        const acked = ackUs ? ours.seq : lastHeardSeq;
        n.receive(heartbeatFrom(peer, 1, seq, { acks: [['self', [SELF_INC, acked]]] }));
      }
      if (ackUs) lastHeardSeq = ours.seq;
      n.advance(100);
    };
    let lastHeardSeq = 0;
    for (let i = 0; i < 10; i++) beat(true);
    assert.deepEqual(observe(), { strong: true, weak: true });
    const cutAt = n.now();
    let lapsedAt: number | null = null;
    for (let i = 0; i < 20; i++) {
      beat(false);
      const held = observe();
      assert.equal(held.weak, true, 'the local detector still sees everyone');
      if (!held.strong && lapsedAt === null) lapsedAt = n.now();
    }
    assert.ok(lapsedAt !== null, 'the acked-heartbeat lease lapsed');
    assert.ok(lapsedAt - cutAt <= 600 + 200, `lapsed ${lapsedAt - cutAt} ms after the cut`);
  });

  test('attested dead needs a quorum (self included) listing the current incarnation', () => {
    const victim = setup(['self', 'a', 'b', 'c', 'x']); // x is enrolled here
    for (const peer of ['a', 'b', 'c', 'x']) victim.receive(heartbeatFrom(peer, peer === 'x' ? 5 : 1, 0));
    victim.advance(600);
    for (const peer of ['a', 'b', 'c']) victim.receive(heartbeatFrom(peer, 1, 1));
    victim.advance(500); // x silent for dead_after: our own attestation
    for (const peer of ['a', 'b', 'c']) victim.receive(heartbeatFrom(peer, 1, 2));
    assert.equal(victim.ledger.ownDeadIncarnation('x'), 5);
    assert.equal(
      victim.source.attestedDeadSince(victim.now()).has('x'),
      false,
      'one of five is not a quorum',
    );
    victim.receive(heartbeatFrom('a', 1, 3, { dead: [['x', 4]] })); // an older incarnation: does not count
    assert.equal(victim.source.attestedDeadSince(victim.now()).has('x'), false);
    victim.receive(heartbeatFrom('a', 1, 4, { dead: [['x', 5]] }));
    assert.deepEqual(victim.source.attesters('x').sort(), ['a', 'self']);
    assert.equal(victim.source.attestedDeadSince(victim.now()).has('x'), false, 'two of five');
    victim.advance(50);
    const seenAt = victim.now();
    victim.receive(heartbeatFrom('b', 1, 5, { dead: [['x', 5]] }));
    victim.advance(200);
    assert.equal(victim.source.attestedDeadSince(victim.now()).get('x'), seenAt, 'first seen when b said so');
    // x came back with a higher incarnation: the attestations are about the past.
    victim.receive(heartbeatFrom('x', 6, 0));
    assert.equal(victim.source.attestedDeadSince(victim.now()).has('x'), false);
  });

  test('a declared incarnation heard again: never acked, listed dead, but live for placement', () => {
    const n = setup(['self', 'a', 'b']);
    n.receive(heartbeatFrom('a', 1, 0));
    n.receive(heartbeatFrom('b', 3, 0));
    n.advance(400);
    n.receive(heartbeatFrom('a', 1, 1));
    n.advance(700);
    assert.equal(n.source.liveness(n.now()).get('b'), 'dead');
    assert.equal(n.ledger.nextHeartbeat().dead.get('b'), 3);
    n.receive(heartbeatFrom('b', 3, 1)); // heard again, same incarnation
    // Placement follows the detector: a one-sided declaration must not demote a live holder's records.
    assert.equal(n.source.liveness(n.now()).get('b'), 'alive');
    const out = n.ledger.nextHeartbeat();
    assert.equal(out.acks.has('b'), false, 'A1: never acked again');
    assert.equal(out.dead.get('b'), 3, 'A1: still listed dead');
    assert.equal(n.source.liveness(n.now()).get('self'), 'alive');
    assert.equal(n.source.liveness(n.now()).has('ghost'), false);
    n.receive(heartbeatFrom('b', 4, 0)); // rejoined
    const later = n.ledger.nextHeartbeat();
    assert.deepEqual(later.acks.get('b'), [4, 0]);
    assert.equal(later.dead.has('b'), false);
  });

  test('listed dead and without a lease for dead_after, the node rejoins with a higher incarnation', () => {
    const n = setup(['self', 'a', 'b']);
    n.ledger.nextHeartbeat();
    n.receive(heartbeatFrom('a', 1, 0, { acks: [['self', [SELF_INC, 0]]] }));
    n.receive(heartbeatFrom('b', 1, 0, { acks: [['self', [SELF_INC, 0]]] }));
    assert.equal(n.source.evidence(n.now()).provenAt, 1000);
    n.advance(500);
    n.receive(heartbeatFrom('a', 1, 1, { dead: [['self', SELF_INC]] }));
    n.source.evidence(n.now());
    assert.equal(n.ledger.incarnation, SELF_INC, 'lease proven 500 ms ago: no rejoin yet');
    n.advance(500);
    n.source.evidence(n.now());
    assert.ok(n.ledger.incarnation > SELF_INC, 'rejoined');
    assert.equal(
      n.source.evidence(n.now()).quorumVisible,
      false,
      'acks of the old incarnation no longer count',
    );
  });
});

describe('HeartbeatLedger: client-role nodes (docs/protocol.md, "Enrollment roles")', () => {
  test('a client is heard but never acknowledged, and never declared dead, heard or not', () => {
    const n = setup(['self', 'a']);
    // As NodeAgent wires it: the ledger expects the members and ignores the clients.
    n.ledger.setExpectedNodes(() => ['self', 'a', 'tool-absent']);
    n.ledger.setNonMembers((nodeId) => nodeId.startsWith('tool-'));
    n.receive(heartbeatFrom('a', 1, 0));
    n.receive(heartbeatFrom('tool-present', 1, 0));
    const fresh = n.ledger.nextHeartbeat();
    assert.deepEqual([...fresh.acks.keys()], ['a']);
    assert.ok(n.detector.nodesIn('alive').includes('tool-present'), 'heard all the same');
    n.advance(1500); // past dead_after: every silent node would be declared dead
    const late = n.ledger.nextHeartbeat();
    assert.deepEqual([...late.dead.keys()], ['a']);
  });
});

describe('HeartbeatLeaseSource over real gossip (sim network, one-way cut)', () => {
  test('the cut-off holder fences while it still hears the others; they attest it dead; it rejoins after the heal', async (t) => {
    const net = new SimNetwork({ seed: 6, defaultLatencyMs: 2 });
    const names = ['node-0', 'node-1', 'node-2'];
    for (const name of names) net.addNode(name);
    const nodes: TestNode[] = [];
    t.after(async () => {
      await stopAll(nodes);
      net.heal();
    });
    for (const name of names) {
      nodes.push(
        await startNode(name, {
          customTransport: net.transport(name),
          listen: [net.address(name)],
          bootstrap: nodes.map((n) => `${net.address(n.nodeId)}/p2p/${n.gossip.peerId}`),
        }),
      );
    }
    const sources = nodes.map(
      (n) =>
        new HeartbeatLeaseSource({
          selfId: n.nodeId,
          ledger: n.gossip.heartbeatLedger,
          detector: n.gossip.detector,
          activeNodeIds: () => names,
          now: Date.now,
        }),
    );
    t.after(() => {
      for (const s of sources) s.close();
    });
    const [holder] = nodes as [TestNode];
    const [holderSource, m1Source, m2Source] = sources as [
      HeartbeatLeaseSource,
      HeartbeatLeaseSource,
      HeartbeatLeaseSource,
    ];
    const weak = new DetectorLeaseSource({
      selfId: holder.nodeId,
      detector: holder.gossip.detector,
      activeNodeIds: () => names,
      now: Date.now,
    });
    const fenceAfterMs = 900; // < FAST.deadAfterMs (1500)
    const strongTracker = new FenceTracker({ fenceAfterMs });
    const weakTracker = new FenceTracker({ fenceAfterMs });
    const observe = () => {
      const now = Date.now();
      const e1 = holderSource.evidence(now);
      const e2 = weak.evidence(now);
      return {
        strong: strongTracker.observe(now, e1.quorumVisible, e1.provenAt ?? now).held,
        weak: weakTracker.observe(now, e2.quorumVisible, e2.provenAt ?? now).held,
      };
    };
    await waitFor('every node acked by the others', () =>
      sources.every((s) => s.evidence(Date.now()).quorumVisible),
    );
    await waitFor('the holder to hold both leases', () => {
      const held = observe();
      return held.strong && held.weak;
    });
    const incarnation = holder.gossip.incarnation;

    net.cut('node-0', 'node-1');
    net.cut('node-0', 'node-2');
    const cutAt = Date.now();
    const lapsedAt = await waitFor('the acked-heartbeat lease to lapse on the holder', () => {
      const held = observe();
      return held.strong ? null : Date.now();
    });
    t.diagnostic(
      `holder fenced ${lapsedAt - cutAt} ms after the one-way cut (fence_after ${fenceAfterMs} ms)`,
    );
    await waitFor('the others to attest the holder dead', () =>
      [m1Source, m2Source].every((s) => s.attestedDeadSince(Date.now()).has('node-0')),
    );
    const attestedAt = Date.now();
    t.diagnostic(`attested dead by both others ${attestedAt - cutAt} ms after the cut`);
    assert.equal(observe().weak, true, 'the detector-only lease would still be held (hole 2)');
    assert.equal(holder.gossip.detector.state('node-1'), 'alive', 'the holder still hears the others');
    assert.equal(
      holderSource.attestedDeadSince(Date.now()).size,
      0,
      'the holder attests nobody dead: one view is not a quorum',
    );

    net.heal();
    await waitFor('the holder to rejoin with a higher incarnation and be acked again', () => {
      holderSource.evidence(Date.now());
      return (
        holder.gossip.incarnation > incarnation &&
        m1Source.liveness(Date.now()).get('node-0') === 'alive' &&
        holderSource.evidence(Date.now()).quorumVisible
      );
    });
    assert.equal(
      m1Source.attestedDeadSince(Date.now()).has('node-0'),
      false,
      'the new incarnation is not dead',
    );
  });
});
