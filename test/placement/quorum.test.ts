import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  checkTiming,
  DEFAULT_OWNERSHIP_TIMING,
  FenceTracker,
  hasQuorum,
  isAttestedDead,
  leaseEvidence,
  majority,
  mayTakeOver,
  takeoverExtraWaitMs,
} from '../../src/reconciler/placement/quorum.js';

describe('quorum math', () => {
  test('more than half, self included, for 1 to 5 nodes', () => {
    // [active enrolled, smallest alive count that is a quorum]
    const table: Array<[number, number]> = [
      [1, 1],
      [2, 2],
      [3, 2],
      [4, 3],
      [5, 3],
    ];
    for (const [n, needed] of table) {
      assert.equal(majority(n), needed, `majority(${n})`);
      for (let alive = 1; alive <= n; alive++) {
        assert.equal(hasQuorum(n, alive), alive >= needed, `hasQuorum(${n}, ${alive})`);
      }
    }
    // A 2|2 split: neither half is a quorum.
    assert.equal(hasQuorum(4, 2), false);
    // One node of two cannot act alone.
    assert.equal(hasQuorum(2, 1), false);
  });

  test('two quorums of the same membership always intersect', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), (n) => {
        assert.ok(2 * majority(n) > n, 'two quorums share a node');
        // What is left after a quorum is never a quorum.
        if (n - majority(n) >= 1) assert.equal(hasQuorum(n, n - majority(n)), false);
      }),
    );
  });

  test('a quorum of n and a quorum of n + 1 intersect (membership changes one node at a time)', () => {
    for (let n = 1; n < 100; n++) assert.ok(majority(n) + majority(n + 1) > n + 1, `n=${n}`);
  });

  test('bad counts get a clear error', () => {
    assert.throws(() => hasQuorum(0, 1), /at least 1/);
    assert.throws(() => hasQuorum(3, 0), /counts this node/);
    assert.throws(() => hasQuorum(3, 4), /exceeds activeEnrolledCount/);
    assert.throws(() => hasQuorum(3.5, 2), /integer/);
    assert.throws(() => hasQuorum(3, -1), /integer/);
  });

  test('attested death needs a quorum of reporters', () => {
    assert.equal(isAttestedDead(5, 0), false);
    assert.equal(isAttestedDead(5, 2), false);
    assert.equal(isAttestedDead(5, 3), true);
    assert.equal(isAttestedDead(4, 2), false, 'half of an even cluster is not enough');
  });
});

describe('leaseEvidence (acknowledged quorum)', () => {
  test('the proof dates from the newest heartbeat a quorum acknowledged', () => {
    const now = 50_000;
    const peers = [
      { nodeId: 'b', ackedSentAt: 49_000 },
      { nodeId: 'c', ackedSentAt: 47_000 },
      { nodeId: 'd', ackedSentAt: null },
      { nodeId: 'e', ackedSentAt: 30_000 },
    ];
    // 5 nodes: self + 2 peers. The two freshest acks are 49 000 and 47 000.
    assert.deepEqual(leaseEvidence({ activeEnrolledCount: 5, now, peers }), {
      quorumVisible: true,
      provenAt: 47_000,
    });
    // Peers that hear us but do not acknowledge us do not count (asymmetric link).
    assert.deepEqual(
      leaseEvidence({
        activeEnrolledCount: 5,
        now,
        peers: peers.map((p) => ({ ...p, ackedSentAt: p.nodeId === 'b' ? 49_000 : null })),
      }),
      { quorumVisible: false, provenAt: null },
    );
    // A single node is its own quorum.
    assert.deepEqual(leaseEvidence({ activeEnrolledCount: 1, now, peers: [] }), {
      quorumVisible: true,
      provenAt: now,
    });
  });

  test('property: a quorum acknowledged at or after provenAt, and no later time has one', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.array(fc.option(fc.integer({ min: 0, max: 1000 }), { nil: null }), { maxLength: 8 }),
        (n, acks) => {
          const peers = acks.slice(0, n - 1).map((ackedSentAt, i) => ({ nodeId: `p${i}`, ackedSentAt }));
          const result = leaseEvidence({ activeEnrolledCount: n, now: 1000, peers });
          const count = (t: number) =>
            1 + peers.filter((p) => p.ackedSentAt !== null && p.ackedSentAt >= t).length;
          if (result.provenAt === null) {
            assert.equal(result.quorumVisible, false);
            assert.ok(count(0) < majority(n));
          } else {
            assert.ok(count(result.provenAt) >= majority(n));
            assert.ok(count(result.provenAt + 1) < majority(n) || result.provenAt === 1000);
          }
        },
      ),
    );
  });

  test('bad input gets a clear error', () => {
    assert.throws(
      () => leaseEvidence({ activeEnrolledCount: 3, now: 10, peers: [{ nodeId: 'b', ackedSentAt: 11 }] }),
      /in the future/,
    );
    assert.throws(
      () =>
        leaseEvidence({
          activeEnrolledCount: 3,
          now: 10,
          peers: [
            { nodeId: 'b', ackedSentAt: 1 },
            { nodeId: 'b', ackedSentAt: 2 },
          ],
        }),
      /listed twice/,
    );
    assert.throws(
      () =>
        leaseEvidence({
          activeEnrolledCount: 2,
          now: 10,
          peers: [
            { nodeId: 'b', ackedSentAt: 1 },
            { nodeId: 'c', ackedSentAt: 2 },
          ],
        }),
      /only 1 other enrolled/,
    );
  });
});

describe('FenceTracker', () => {
  test('holds while proofs are fresh, lapses fence_after after the newest proof', () => {
    const tracker = new FenceTracker({ fenceAfterMs: 6000 });
    assert.equal(tracker.state(0).held, false, 'no lease before the first proof');
    let state = tracker.observe(1000, true);
    assert.deepEqual(state, {
      held: true,
      heldSince: 1000,
      lastQuorumAt: 1000,
      fenceAt: 7000,
      lastLapse: null,
    });
    state = tracker.observe(3000, false);
    assert.equal(state.held, true, 'a missed round is not yet a lapse');
    assert.equal(state.fenceAt, 7000);
    state = tracker.state(6999);
    assert.equal(state.held, true);
    state = tracker.state(7000);
    assert.equal(state.held, false);
    assert.deepEqual(state.lastLapse, { at: 7000, noticedLateByMs: 0 });
    state = tracker.observe(8000, true);
    assert.equal(state.heldSince, 8000, 'a new lease begins at re-acquisition');
  });

  test('an agent that stalls past its deadline finds its lease broken even if it sees a quorum on waking', () => {
    const tracker = new FenceTracker({ fenceAfterMs: 6000 });
    tracker.observe(0, true);
    tracker.observe(1000, true);
    // Event loop blocked (GC, SIGSTOP, VM pause) for 30 s; the first tick after it sees a stale "quorum".
    const state = tracker.observe(31_000, true);
    assert.deepEqual(state.lastLapse, { at: 7000, noticedLateByMs: 24_000 });
    assert.equal(state.held, true);
    assert.equal(state.heldSince, 31_000, 'work begun before 31 000 must be fenced');
  });

  test('with acknowledgement-dated proofs a stalled agent does not regain the lease from old acks', () => {
    const tracker = new FenceTracker({ fenceAfterMs: 6000 });
    tracker.observe(1000, true, 900);
    // After the stall, the newest acknowledged heartbeat is still the one sent at 900.
    const state = tracker.observe(31_000, true, 900);
    assert.equal(state.held, false);
    assert.equal(state.lastLapse?.at, 6900);
  });

  test('property: matches the lease model; held implies a proof newer than fence_after', () => {
    const step = fc.record({
      dt: fc.integer({ min: 0, max: 4000 }),
      visible: fc.boolean(),
      lag: fc.integer({ min: 0, max: 8000 }),
    });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.array(step, { maxLength: 60 }),
        (fenceAfterMs, steps) => {
          const tracker = new FenceTracker({ fenceAfterMs });
          // The model: a lease that lapses fence_after after its newest proof, checked before new proof counts.
          let now = 0;
          let proof: number | null = null;
          let heldSince: number | null = null;
          for (const { dt, visible, lag } of steps) {
            now += dt;
            const provenAt = Math.max(0, now - lag);
            if (heldSince !== null && proof !== null && now >= proof + fenceAfterMs) heldSince = null;
            const fresh = visible && now - provenAt < fenceAfterMs;
            if (fresh) {
              proof = proof === null ? provenAt : Math.max(proof, provenAt);
              heldSince ??= now;
            }
            const state = tracker.observe(now, visible, provenAt);
            assert.equal(state.held, heldSince !== null);
            assert.equal(state.heldSince, heldSince);
            if (fresh) assert.equal(state.held, true, 'fresh proof gives a lease');
            if (state.held) {
              assert.ok(
                state.lastQuorumAt !== null && now < state.lastQuorumAt + fenceAfterMs,
                'held past the deadline',
              );
              assert.equal(state.fenceAt, state.lastQuorumAt + fenceAfterMs);
            }
          }
        },
      ),
    );
  });

  test('time going backwards is an error', () => {
    const tracker = new FenceTracker({ fenceAfterMs: 6000 });
    tracker.observe(1000, true);
    assert.throws(() => tracker.observe(999, true), /time went backwards/);
    assert.throws(() => tracker.observe(2000, true, 3000), /in the future/);
    assert.throws(() => new FenceTracker({ fenceAfterMs: 0 }), /> 0/);
  });
});

describe('takeover', () => {
  const base = {
    now: 100_000,
    ownership: 'exclusive' as const,
    holderLastHeardAt: 80_000,
    deadAfterMs: 10_000,
    quorumVisible: true,
    holderAttestedDeadSince: 91_000,
    extraWaitMs: 8000,
  };

  test('exclusive: after dead_after, with a lease, attested dead, and after the extra wait', () => {
    assert.deepEqual(mayTakeOver(base), { allowed: true });
    assert.deepEqual(mayTakeOver({ ...base, holderLastHeardAt: 95_000 }), {
      allowed: false,
      reason: 'holder silent for 5000 ms, not yet dead_after',
      retryAt: 105_000,
    });
    assert.equal(mayTakeOver({ ...base, quorumVisible: false }).allowed, false);
    assert.match(
      (mayTakeOver({ ...base, holderAttestedDeadSince: null }) as { reason: string }).reason,
      /not \(yet\) attested dead/,
    );
    assert.deepEqual(mayTakeOver({ ...base, holderAttestedDeadSince: 95_000 }), {
      allowed: false,
      reason: "waiting 3000 ms more for the old holder's stop to complete (less claim_settle)",
      retryAt: 103_000,
    });
  });

  test('the claim overlaps claim_settle with the end of the extra wait, never more than the wait', () => {
    // Attested at 95 000, extra 8000: the start may not come before 103 000. With a
    // 3000 ms settle between claim and start, the claim may come at 100 000.
    const attested = { ...base, holderAttestedDeadSince: 95_000 };
    assert.deepEqual(mayTakeOver({ ...attested, now: 99_999, claimSettleMs: 3000 }), {
      allowed: false,
      reason: "waiting 1 ms more for the old holder's stop to complete (less claim_settle)",
      retryAt: 100_000,
    });
    assert.deepEqual(mayTakeOver({ ...attested, now: 100_000, claimSettleMs: 3000 }), { allowed: true });
    // A settle longer than the wait: claim at the attestation, not before it.
    assert.deepEqual(mayTakeOver({ ...attested, now: 95_000, claimSettleMs: 20_000 }), { allowed: true });
    assert.equal(mayTakeOver({ ...attested, now: 94_999, claimSettleMs: 20_000 }).allowed, false);
    assert.throws(() => mayTakeOver({ ...attested, claimSettleMs: -1 }), /claimSettleMs must be >= 0/);
    assert.throws(() => mayTakeOver({ ...attested, claimSettleMs: Number.NaN }), /claimSettleMs/);
  });

  test('relaxed: dead_after in the local view is enough, with or without quorum', () => {
    const relaxed = {
      ...base,
      ownership: 'relaxed' as const,
      quorumVisible: false,
      holderAttestedDeadSince: null,
    };
    assert.deepEqual(mayTakeOver(relaxed), { allowed: true });
    assert.equal(mayTakeOver({ ...relaxed, holderLastHeardAt: 95_000 }).allowed, false);
  });

  test('the extra wait covers the old holder stop and clock drift', () => {
    const exact = { ...DEFAULT_OWNERSHIP_TIMING, clockDriftPpm: 0 };
    // (6000 fence + 10 000 stop + 2000 slack) - 10 000 dead_after
    assert.equal(takeoverExtraWaitMs(exact, 10_000), 8000);
    assert.equal(takeoverExtraWaitMs(exact, 0), 0, 'dead_after already covers fence_after + slack');
    const drift = takeoverExtraWaitMs(DEFAULT_OWNERSHIP_TIMING, 10_000);
    assert.ok(drift > 8000 && drift <= 8000 + 40, `drift margin: ${drift}`);
  });

  test('timing checks', () => {
    assert.throws(() => checkTiming({ ...DEFAULT_OWNERSHIP_TIMING, fenceAfterMs: 10_000 }), /< deadAfterMs/);
    assert.throws(() => checkTiming({ ...DEFAULT_OWNERSHIP_TIMING, claimSettleMs: -1 }), /claimSettleMs/);
    assert.throws(() => checkTiming({ ...DEFAULT_OWNERSHIP_TIMING, clockDriftPpm: 1e6 }), /clockDriftPpm/);
    assert.throws(() => mayTakeOver({ ...base, now: Number.NaN }), /now must be a finite number/);
  });
});
