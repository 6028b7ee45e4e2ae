import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SwimLeaseSource } from '../../src/reconciler/swim-lease.js';
import { VirtualSwim } from '../helpers/virtual-swim.js';

describe('SwimLeaseSource (placement reads SWIM membership)', () => {
  test('liveness and lastHeard follow SWIM: alive is heard now; a crash is heard last when suspected', () => {
    const net = new VirtualSwim();
    const source = new SwimLeaseSource({
      selfId: 'a',
      swim: net.view,
      activeNodeIds: () => ['a', 'b', 'c', 'd'],
      now: () => net.now,
    });
    const changes: number[] = [];
    source.onChange(() => changes.push(net.now));
    net.run(5000);
    assert.deepEqual(Object.fromEntries(source.liveness(net.now)), { a: 'alive', b: 'alive', c: 'alive' });
    // d is enrolled but not a SWIM member yet: left out (dead to placement), and never heard.
    assert.equal(source.lastHeard().get('b'), net.now);
    assert.equal(source.lastHeard().has('d'), false);
    assert.equal(source.listeningSince(), 0);

    net.up.delete('c');
    let suspectedAt: number | null = null;
    for (let t = 0; t < 60_000 && source.liveness(net.now).get('c') !== 'dead'; t += 100) {
      net.run(100);
      if (suspectedAt === null && source.liveness(net.now).get('c') === 'suspect') suspectedAt = net.now;
    }
    assert.equal(source.liveness(net.now).get('c'), 'dead');
    assert.ok(suspectedAt !== null, 'c was suspect before dead');
    const heard = source.lastHeard().get('c');
    assert.ok(heard !== undefined && heard <= suspectedAt && heard > suspectedAt - 200, `lastHeard ${heard}`);
    assert.ok(source.attestedDeadSince(net.now).has('c'));
    assert.ok(changes.length >= 2, 'the loop was told of suspect and dead');
    // Later calls do not move a dead member's lastHeard.
    net.run(2000);
    assert.equal(source.lastHeard().get('c'), heard);

    source.close();
    const before = changes.length;
    net.up.delete('b');
    net.run(30_000);
    assert.equal(changes.length, before, 'no listener calls after close');
  });
});
