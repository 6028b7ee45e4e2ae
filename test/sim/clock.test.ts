import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SimClock } from '../../sim/net/clock.js';

test('SimClock gives each node the base time plus its own skew, changeable at any time', () => {
  let base = 1_000_000;
  const clock = new SimClock(() => base);
  const nowB = clock.clockFor('b');
  assert.equal(clock.now('a'), 1_000_000);
  clock.setSkew('b', 5_000);
  clock.setSkew('c', -250);
  assert.equal(clock.now('a'), 1_000_000);
  assert.equal(nowB(), 1_005_000, 'an injected clock follows later skew changes');
  assert.equal(clock.now('c'), 999_750);
  base += 10;
  assert.equal(nowB(), 1_005_010);
  assert.equal(clock.skew('b'), 5_000);
  clock.reset();
  assert.equal(nowB(), 1_000_010);
  assert.throws(() => clock.setSkew('a', Number.NaN), /finite number/);
});

test('SimClock defaults to Date.now', () => {
  const clock = new SimClock();
  clock.setSkew('a', 60_000);
  const skewed = clock.now('a') - Date.now();
  assert.ok(skewed > 59_000 && skewed <= 60_000);
});
