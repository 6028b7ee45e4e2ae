import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LeaseRequest } from '../../src/ownership/lease-messages.js';
import { holdMs, WitnessCore } from '../../src/ownership/witness-core.js';

const CONFIG = { version: 1, witnesses: ['w1', 'w2', 'w3'] };

function hold(overrides: Partial<LeaseRequest> = {}): LeaseRequest {
  return {
    op: 'hold',
    workload: 'db',
    node: 'n1',
    incarnation: 7,
    ballot: 1,
    configVersion: 1,
    durationMs: 1000,
    round: 1,
    ...overrides,
  };
}

function witness(maxLeaseMs = 5000): WitnessCore {
  const core = new WitnessCore({ selfId: 'w1', clockDriftPpm: 1000, maxLeaseMs });
  core.setConfig(CONFIG);
  return core;
}

test('a lease longer than the witness bound is refused too-long, and nothing is recorded', () => {
  const core = witness(5000);
  const { reply, persist } = core.handle(hold({ durationMs: 5001 }), 0);
  assert.equal(reply.granted, false);
  assert.equal(reply.refusal, 'too-long');
  assert.equal(persist, null);
  assert.equal(core.handle(hold({ durationMs: 5000 }), 0).reply.granted, true);
});

test('the bound must be a whole number of ms within MAX_LEASE_MS', () => {
  for (const bad of [0, -1, 1.5, Number.NaN, 10 * 60_000 + 1]) {
    assert.throws(
      () => new WitnessCore({ selfId: 'w1', clockDriftPpm: 0, maxLeaseMs: bad }),
      /maxLeaseMs must be an integer in \[1, 600000\]/,
    );
  }
});

test('W6: after a start on an existing store, no hold (renewal or new) for one maximal hold; releases still count', () => {
  const first = witness(5000);
  const granted = first.handle(hold(), 0);
  assert.equal(granted.reply.granted, true);
  assert.ok(granted.persist);

  // Restart on the store: the restored lease counts as granted now; the quiet period starts.
  const restarted = witness(5000);
  restarted.restore([granted.persist], 100);
  const quietEnds = restarted.startQuietPeriod(100);
  assert.equal(quietEnds, 100 + holdMs(5000, 1000));
  assert.equal(restarted.quietRemainingMs(100), holdMs(5000, 1000));

  const renewal = restarted.handle(hold({ round: 2 }), 200);
  assert.deepEqual([renewal.reply.granted, renewal.reply.refusal, renewal.persist], [false, 'quiet', null]);
  const other = restarted.handle(hold({ node: 'n2', incarnation: 9, ballot: 2, round: 3 }), 200);
  assert.deepEqual([other.reply.granted, other.reply.refusal], [false, 'quiet']);
  const elsewhere = restarted.handle(hold({ workload: 'cache', node: 'n2', round: 4 }), 200);
  assert.equal(elsewhere.reply.refusal, 'quiet', 'workloads the store does not name are quiet too');

  // The holder's release is still honoured (it only frees what that holder says it stopped).
  const release = restarted.handle(hold({ op: 'release', round: 5 }), 300);
  assert.equal(release.reply.granted, true);
  assert.equal(release.persist?.released, true);

  // Once the quiet period is over the witness grants as before.
  assert.equal(restarted.quietRemainingMs(quietEnds), 0);
  const after = restarted.handle(hold({ node: 'n2', incarnation: 9, ballot: 2, round: 6 }), quietEnds);
  assert.equal(after.reply.granted, true);
});

test('a witness on a new store (never started before) has no quiet period', () => {
  const core = witness(5000);
  assert.equal(core.quietRemainingMs(0), 0);
  assert.equal(core.handle(hold(), 0).reply.granted, true);
});
