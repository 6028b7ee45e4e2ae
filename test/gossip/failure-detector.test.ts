import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FailureDetector, type Liveness, type LivenessEvent } from '../../src/gossip/failure-detector.js';

function setup() {
  let clock = 1_000_000;
  const detector = new FailureDetector({ now: () => clock, suspectAfterMs: 3000, deadAfterMs: 10_000 });
  const events: [Liveness, LivenessEvent][] = [];
  for (const state of ['alive', 'suspect', 'dead'] as const)
    detector.on(state, (e) => events.push([state, e]));
  return {
    detector,
    events,
    advance(ms: number) {
      clock += ms;
      detector.tick();
    },
  };
}

describe('FailureDetector', () => {
  test('alive → suspect → dead on silence, with one event per transition', () => {
    const { detector, events, advance } = setup();
    detector.observe('a', 5, 0);
    assert.equal(detector.state('a'), 'alive');
    advance(2999);
    assert.equal(detector.state('a'), 'alive');
    advance(1);
    assert.equal(detector.state('a'), 'suspect');
    advance(6999);
    assert.equal(detector.state('a'), 'suspect');
    advance(1);
    assert.equal(detector.state('a'), 'dead');
    advance(60_000);
    assert.deepEqual(
      events.map(([s, e]) => [s, e.previous]),
      [
        ['alive', undefined],
        ['suspect', 'alive'],
        ['dead', 'suspect'],
      ],
    );
  });

  test('a suspect node heard again is alive; stale heartbeats are ignored', () => {
    const { detector, events, advance } = setup();
    detector.observe('a', 5, 10);
    advance(4000);
    assert.equal(detector.state('a'), 'suspect');
    assert.equal(detector.observe('a', 5, 10), false, 'same seq is a replay');
    assert.equal(detector.observe('a', 4, 99), false, 'older incarnation');
    assert.equal(detector.state('a'), 'suspect');
    assert.equal(detector.observe('a', 5, 11), true);
    assert.equal(detector.state('a'), 'alive');
    assert.deepEqual(events.at(-1)?.[1], {
      nodeId: 'a',
      incarnation: 5,
      previous: 'suspect',
      rejoined: false,
    });
  });

  test('dead then a higher incarnation: alive again, rejoined', () => {
    const { detector, events, advance } = setup();
    detector.observe('a', 5, 100);
    advance(11_000);
    assert.equal(detector.state('a'), 'dead');
    assert.equal(detector.observe('a', 6, 0), true);
    assert.equal(detector.state('a'), 'alive');
    assert.deepEqual(events.at(-1), [
      'alive',
      { nodeId: 'a', incarnation: 6, previous: 'dead', rejoined: true },
    ]);
  });

  test('dead then the same incarnation (a healed partition): alive, not rejoined', () => {
    const { detector, events, advance } = setup();
    detector.observe('a', 5, 1);
    advance(11_000);
    detector.observe('a', 5, 12);
    assert.deepEqual(events.at(-1), [
      'alive',
      { nodeId: 'a', incarnation: 5, previous: 'dead', rejoined: false },
    ]);
  });

  test('a restart faster than suspectAfter is still reported', () => {
    const { detector, events } = setup();
    detector.observe('a', 5, 1);
    detector.observe('a', 7, 0);
    assert.deepEqual(events.at(-1), [
      'alive',
      { nodeId: 'a', incarnation: 7, previous: 'alive', rejoined: true },
    ]);
  });

  test('skewed clocks: only differences of the local clock count', () => {
    let clock = -5_000_000; // a clock far in the past is fine
    const detector = new FailureDetector({ now: () => clock, suspectAfterMs: 100, deadAfterMs: 200 });
    detector.observe('a', 1, 0);
    clock += 150;
    detector.tick();
    assert.equal(detector.state('a'), 'suspect');
    assert.deepEqual(detector.nodesIn('suspect'), ['a']);
    assert.equal(detector.view()[0]?.incarnation, 1);
  });

  test('rejects inconsistent thresholds; a throwing listener does not break others', () => {
    assert.throws(() => new FailureDetector({ suspectAfterMs: 5000, deadAfterMs: 5000 }), /suspectAfterMs/);
    const detector = new FailureDetector();
    let heard = 0;
    detector.on('alive', () => {
      throw new Error('boom');
    });
    const off = detector.on('alive', () => heard++);
    detector.observe('a', 1, 0);
    off();
    detector.observe('b', 1, 0);
    assert.equal(heard, 1);
  });
});
