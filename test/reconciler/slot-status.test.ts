import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LeaseStatus } from '../../src/ownership/index.js';
import type { LocalView, ViewEvaluation } from '../../src/reconciler/placement/index.js';
import { rankNodes } from '../../src/reconciler/placement/index.js';
import type { RunnerStatus } from '../../src/reconciler/service-runner.js';
import { newSlot } from '../../src/reconciler/slot.js';
import {
  blankStatus,
  joinReason,
  pendingReportsOf,
  slotStatus,
  withEpoch,
} from '../../src/reconciler/slot-status.js';

/** The reconcile loop's status rules on their own: no loop, no runner, a number for a clock. */

const runner = (over: Partial<RunnerStatus> = {}): RunnerStatus => ({
  name: 'web',
  phase: 'running',
  since: 1,
  revision: 2,
  restarts: 0,
  lastExit: null,
  reason: null,
  sandbox: 'none',
  scratchUsedMb: null,
  ...over,
});

const lease = (over: Partial<LeaseStatus> = {}): LeaseStatus =>
  ({ workload: 'web', ballot: 7, held: true, mayRun: true, ...over }) as LeaseStatus;

describe('slot status', () => {
  test("the runner's status is mirrored; its pending shows as starting; since is when the loop first saw the phase", () => {
    const slot = newSlot('web');
    assert.equal(
      slotStatus(slot, null, 100),
      null,
      'nothing to say without a runner status or an authored one',
    );
    const first = slotStatus(slot, runner({ phase: 'pending' }), 100);
    assert.equal(first?.phase, 'starting');
    assert.equal(first?.since, 100);
    assert.equal(
      slotStatus(slot, runner({ phase: 'starting', since: 5 }), 150)?.since,
      100,
      'same phase, same since',
    );
    const running = slotStatus(slot, runner({ restarts: 3 }), 200);
    assert.deepEqual(
      [running?.phase, running?.since, running?.restarts, running?.revision],
      ['running', 200, 3, 2],
    );
  });

  test('the note shows while the runner gives no reason; an authored status wins; a failed task is appended', () => {
    const slot = newSlot('web');
    slot.note = 'state: n1 checkpoint';
    assert.equal(slotStatus(slot, runner(), 1)?.reason, 'state: n1 checkpoint');
    assert.equal(slotStatus(slot, runner({ reason: 'backing off' }), 1)?.reason, 'backing off');
    assert.equal(slotStatus(slot, runner({ phase: 'released' }), 1)?.reason, null, 'no note once it stopped');
    slot.authored = blankStatus(5, 'pulling', 4, 'fetching the image');
    slot.error = { what: 'image fetch', message: 'no peer has it' };
    const authored = slotStatus(slot, runner(), 9);
    assert.deepEqual([authored?.phase, authored?.revision], ['pulling', 4]);
    assert.equal(authored?.reason, 'fetching the image; image fetch failed: no peer has it; retrying');
  });

  test('the epoch is the held lease ballot while something runs; none otherwise', () => {
    const running = blankStatus(1, 'running', 1, null);
    assert.equal(withEpoch(running, lease()).epoch, 7);
    assert.equal(withEpoch(running, lease({ held: false })).epoch, undefined);
    assert.equal('epoch' in withEpoch({ ...running, epoch: 7 }, null), false, 'not wanted: dropped');
    assert.equal('epoch' in withEpoch({ ...blankStatus(1, 'released', 1, null), epoch: 7 }, lease()), false);
  });

  test('reasons are joined and cut to the bound', () => {
    assert.equal(joinReason(null, ''), null);
    assert.equal(joinReason('a', null), 'a');
    const long = joinReason('x'.repeat(3000), 'y');
    assert.equal(long?.length, 2000);
    assert.ok(long?.endsWith('...'));
    assert.equal(blankStatus(1, 'pending', 1, 'z'.repeat(2500)).reason?.length, 2000);
  });

  test('a pending workload nobody holds is reported by the first alive node of its order, after dead_after', () => {
    const nodes = ['n1', 'n2', 'n3'];
    // Only the fields pendingReportsOf reads.
    const view = (now: number, liveness: Record<string, string>) =>
      ({
        now,
        listeningSince: 0,
        nodes: nodes.map((nodeId) => ({ nodeId })),
        liveness,
      }) as unknown as LocalView;
    const evaluation = (held: boolean) =>
      ({
        placement: {
          assignments: new Map([
            ['big', { pending: 'fits no node' }],
            ['ok', { node: 'n1' }],
          ]),
        },
        holders: new Map(held ? [['big', { nodeId: 'n2' }]] : []),
      }) as unknown as ViewEvaluation;
    const alive = { n1: 'alive', n2: 'alive', n3: 'alive' };
    const first = rankNodes('big', nodes)[0]!;
    for (const id of nodes) {
      const reports = pendingReportsOf(id, view(5000, alive), evaluation(false), 3000);
      assert.deepEqual([...reports], id === first ? ['big'] : [], `${id}`);
    }
    assert.deepEqual(
      [...pendingReportsOf(first, view(2000, alive), evaluation(false), 3000)],
      [],
      'too early',
    );
    assert.deepEqual([...pendingReportsOf(first, view(5000, alive), evaluation(true), 3000)], [], 'held');
    const second = rankNodes('big', nodes)[1]!;
    const firstDead = { ...alive, [first]: 'dead' };
    assert.deepEqual([...pendingReportsOf(second, view(5000, firstDead), evaluation(false), 3000)], ['big']);
  });
});
