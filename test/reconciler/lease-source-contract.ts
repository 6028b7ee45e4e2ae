import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LeaseSource } from '../../src/reconciler/lease.js';

/**
 * What every LeaseSource must do (src/reconciler/lease.ts), whatever its
 * rules: the reconcile loop and placement read all of them the same way.
 * Run against each built-in source (lease-source-contract.test.ts) through
 * a world that drives its real inputs (failure detector, heartbeat ledger,
 * SWIM cores) in virtual time.
 *
 * The world is self `a` and peers `b` and `c`, all active and talking at
 * the start.
 */
export interface LeaseWorld {
  readonly source: LeaseSource;
  now(): number;
  /** Runs virtual time forward: live peers keep exchanging what the source listens to. */
  run(ms: number): void;
  /** The peer stops: nothing more from it. */
  crash(peer: string): void;
  /** The peer comes back as a new incarnation. */
  restart(peer: string): void;
  /** Replaces the active enrolled set (read by the source on every call). */
  setActive(ids: readonly string[]): void;
  /** Virtual time within which a crashed peer is dead and attested in any sane configuration. */
  readonly settleMs: number;
}

export type LeaseWorldFactory = () => LeaseWorld;

const SELF = 'a';

/** Runs the world in steps until `done` holds or `limitMs` passes; returns whether it held. */
function runUntil(world: LeaseWorld, done: () => boolean, limitMs: number, stepMs = 50): boolean {
  for (let spent = 0; spent <= limitMs; spent += stepMs) {
    if (done()) return true;
    world.run(stepMs);
  }
  return done();
}

/** Invariants that hold at every instant, in every world. */
function checkInvariants(world: LeaseWorld, active: readonly string[]): void {
  const now = world.now();
  const { source } = world;
  const liveness = source.liveness(now);
  assert.equal(liveness.get(SELF), 'alive', 'this node is alive in its own view');
  for (const id of liveness.keys()) {
    assert.ok(id === SELF || active.includes(id), `liveness lists ${id}, not an active node`);
  }
  const dead = source.attestedDeadSince(now);
  assert.ok(!dead.has(SELF), 'this node never attests itself dead');
  for (const [id, since] of dead) {
    assert.ok(active.includes(id), `attested dead: ${id}, not an active node`);
    assert.ok(since <= now, `${id} attested dead since ${since}, after now ${now}`);
  }
  for (const [id, at] of source.lastHeard()) assert.ok(at <= now, `${id} heard at ${at}, after now ${now}`);
  assert.ok(source.listeningSince() <= now);
  const evidence = source.evidence(now);
  if (evidence.provenAt !== null) assert.ok(evidence.provenAt <= now, 'a quorum proof is never dated ahead');
}

export function leaseSourceContract(kind: string, makeWorld: LeaseWorldFactory): void {
  describe(`LeaseSource contract: ${kind}`, () => {
    test('a cluster that talks: everyone alive, heard, a quorum proven', () => {
      const world = makeWorld();
      assert.equal(world.source.kind, kind);
      assert.ok(
        runUntil(
          world,
          () => {
            const live = world.source.liveness(world.now());
            return ['a', 'b', 'c'].every((id) => live.get(id) === 'alive');
          },
          world.settleMs,
        ),
        'every node alive',
      );
      world.run(500);
      checkInvariants(world, ['a', 'b', 'c']);
      const evidence = world.source.evidence(world.now());
      assert.equal(evidence.quorumVisible, true);
      assert.ok(evidence.provenAt !== null && evidence.provenAt >= world.now() - world.settleMs);
      assert.equal(world.source.attestedDeadSince(world.now()).size, 0);
      for (const peer of ['b', 'c']) assert.ok(world.source.lastHeard().has(peer), `${peer} heard`);
    });

    test('a crashed peer ends dead and attested, the loop is told, and it is alive again after a restart', () => {
      const world = makeWorld();
      world.run(1000);
      let calls = 0;
      const off = world.source.onChange?.(() => calls++);
      world.crash('c');
      const deadAndAttested = () =>
        world.source.liveness(world.now()).get('c') === 'dead' &&
        world.source.attestedDeadSince(world.now()).has('c');
      assert.ok(runUntil(world, deadAndAttested, world.settleMs * 3), 'c dead and attested');
      checkInvariants(world, ['a', 'b', 'c']);
      if (off) assert.ok(calls > 0, 'onChange was called for the change');
      // b still talks: the quorum (a, b) holds.
      assert.equal(world.source.evidence(world.now()).quorumVisible, true);
      assert.equal(world.source.liveness(world.now()).get('b'), 'alive');

      world.restart('c');
      const back = () =>
        world.source.liveness(world.now()).get('c') === 'alive' &&
        !world.source.attestedDeadSince(world.now()).has('c');
      assert.ok(runUntil(world, back, world.settleMs * 3), 'c alive again and no longer attested dead');
      checkInvariants(world, ['a', 'b', 'c']);
      off?.();
    });

    test('a node that leaves the active set leaves every answer; a node not active itself has no quorum', () => {
      const world = makeWorld();
      world.run(1000);
      world.crash('c');
      assert.ok(
        runUntil(world, () => world.source.attestedDeadSince(world.now()).has('c'), world.settleMs * 3),
      );
      world.setActive(['a', 'b']);
      world.run(200);
      checkInvariants(world, ['a', 'b']);
      assert.equal(world.source.liveness(world.now()).has('c'), false);
      assert.equal(world.source.attestedDeadSince(world.now()).has('c'), false);
      assert.equal(world.source.evidence(world.now()).quorumVisible, true);
      // Revoked (or never enrolled): this node holds no lease, whatever it hears.
      world.setActive(['b', 'c']);
      world.run(200);
      assert.equal(world.source.evidence(world.now()).quorumVisible, false);
    });

    test('a lone member is its own quorum', () => {
      const world = makeWorld();
      world.setActive(['a']);
      world.run(500);
      checkInvariants(world, ['a']);
      assert.deepEqual([...world.source.liveness(world.now())], [['a', 'alive']]);
      assert.equal(world.source.evidence(world.now()).quorumVisible, true);
    });

    test('unsubscribing and close() stop the calls', () => {
      const world = makeWorld();
      world.run(1000);
      if (!world.source.onChange) return;
      let kept = 0;
      let dropped = 0;
      const offKept = world.source.onChange(() => kept++);
      const offDropped = world.source.onChange(() => dropped++);
      offDropped();
      world.crash('c');
      assert.ok(
        runUntil(world, () => world.source.liveness(world.now()).get('c') === 'dead', world.settleMs * 3),
      );
      assert.ok(kept > 0, 'the subscribed listener was told');
      assert.equal(dropped, 0, 'the unsubscribed one was not');
      offKept();
      if (world.source.close) {
        let afterClose = 0;
        world.source.onChange(() => afterClose++);
        world.source.close();
        world.restart('c');
        world.crash('b');
        world.run(world.settleMs * 2);
        assert.equal(afterClose, 0, 'no calls after close');
      }
    });
  });
}
