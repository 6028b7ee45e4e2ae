import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FailureDetector, type Liveness } from '../../src/gossip/failure-detector.js';
import { SwimDetectorFeed } from '../../src/gossip/swim-detector-feed.js';
import type { SwimChangeListener } from '../../src/gossip/swim-transport.js';
import type { MemberUpdate } from '../../src/membership/swim-core.js';

describe('FailureDetector.vouch', () => {
  test('a known node stays alive while vouched for, comes back from suspect or dead, and keeps its seq order', () => {
    let clock = 0;
    const detector = new FailureDetector({ now: () => clock, suspectAfterMs: 3000, deadAfterMs: 10_000 });
    const transitions: string[] = [];
    for (const state of ['alive', 'suspect', 'dead'] as const)
      detector.on(state, (e) => transitions.push(`${e.nodeId}:${e.previous ?? 'new'}→${state}`));
    assert.equal(detector.vouch('ghost'), false, 'a node never heard stays unknown');
    assert.equal(detector.state('ghost'), undefined);

    detector.observe('a', 7, 3);
    for (let t = 0; t < 30_000; t += 1000) {
      clock += 1000;
      detector.vouch('a');
      detector.tick();
    }
    assert.equal(detector.state('a'), 'alive', 'vouched for every second: never suspect');
    clock += 3000;
    detector.tick();
    assert.equal(detector.state('a'), 'suspect', 'no longer vouched for: silence counts again');
    clock += 7000;
    detector.tick();
    assert.equal(detector.state('a'), 'dead');
    assert.equal(detector.vouch('a'), true);
    assert.equal(detector.state('a'), 'alive');
    // A replay of the last heartbeat still refreshes nothing: vouching left (incarnation, seq) alone.
    assert.equal(detector.observe('a', 7, 3), false);
    assert.equal(detector.observe('a', 7, 4), true);
    assert.deepEqual(transitions, ['a:new→alive', 'a:alive→suspect', 'a:suspect→dead', 'a:dead→alive']);
  });
});

/** SWIM as the feed sees it: a view and change events, set by the test. */
class ScriptedSwim {
  members: MemberUpdate[] = [];
  private readonly listeners = new Set<SwimChangeListener>();
  view(): MemberUpdate[] {
    return this.members;
  }
  onChange(listener: SwimChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  set(node: string, state: MemberUpdate['state']): void {
    this.members = [...this.members.filter((m) => m.node !== node), { node, state, incarnation: 1 }];
    for (const listener of this.listeners) listener({ node, state, incarnation: 1 });
  }
}

describe('SwimDetectorFeed', () => {
  test('members SWIM holds alive stay alive in the detector; suspect and dead ones age out; stop ends it', async () => {
    const detector = new FailureDetector({
      now: () => performance.now(),
      suspectAfterMs: 150,
      deadAfterMs: 400,
    });
    const swim = new ScriptedSwim();
    for (const node of ['a', 'b']) {
      detector.observe(node, 1, 1);
      swim.set(node, 'alive');
    }
    const feed = new SwimDetectorFeed({ swim, detector, intervalMs: 40 });
    feed.start();
    const states = (): Record<string, Liveness | undefined> => {
      detector.tick();
      return { a: detector.state('a'), b: detector.state('b') };
    };
    try {
      await sleep(300);
      assert.deepEqual(states(), { a: 'alive', b: 'alive' }, 'no heartbeats, both alive on SWIM word');
      swim.set('b', 'suspect');
      await sleep(500);
      assert.deepEqual(states(), { a: 'alive', b: 'dead' }, 'b is no longer vouched for');
      swim.set('b', 'alive');
      assert.equal(detector.state('b'), 'alive', 'back at once when SWIM sees it alive');
    } finally {
      feed.stop();
    }
    await sleep(500);
    assert.deepEqual(states(), { a: 'dead', b: 'dead' }, 'a stopped feed vouches for nobody');
    assert.throws(() => new SwimDetectorFeed({ swim, detector, intervalMs: 0 }), /intervalMs must be > 0/);
  });
});
