import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Counter, Registry } from 'prom-client';
import type { Liveness } from '../../src/gossip/failure-detector.js';
import type { LeaseStatus } from '../../src/ownership/index.js';
import { imageHintNodes, snapshotSourceNodes } from '../../src/reconciler/peer-hints.js';
import { rankNodes, type ViewEvaluation } from '../../src/reconciler/placement/index.js';
import type { RunnerStatus } from '../../src/reconciler/service-runner.js';
import { newSlot, type Slot } from '../../src/reconciler/slot.js';
import { SlotBook } from '../../src/reconciler/slot-book.js';
import { retryBackoffMs, SlotTasks } from '../../src/reconciler/slot-tasks.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { ObservedView } from '../../src/state/observed-view.js';
import type { ObservedStatus, SnapshotRef, WorkloadSpec } from '../../src/state/schemas.js';
import { WorkloadsView } from '../../src/state/workloads-view.js';
import { observedStatus, workloadSpec } from '../fixtures/state-records.js';
import { metricValue, quietLogger } from '../fixtures/state-store.js';

/**
 * The parts the reconcile loop dispatches to (docs/reconciler.md, the
 * module table), each alone, on a hand-moved clock: the loop's end-to-end
 * tests (loop-*.test.ts) cover them together.
 */

describe('SlotTasks: one task per slot, back-off after failures', () => {
  function setup() {
    let t = 10_000;
    const registry = new Registry();
    const actions = new Counter({
      name: 'actions',
      help: 'x',
      labelNames: ['kind', 'result'] as const,
      registers: [registry],
    });
    const settled: string[] = [];
    const tasks = new SlotTasks({
      logger: quietLogger,
      actions,
      now: () => t,
      settled: (slot) => settled.push(`${slot.name}:${slot.task === null ? 'idle' : 'busy'}`),
    });
    return {
      tasks,
      settled,
      registry,
      advance: (ms: number) => {
        t += ms;
      },
      now: () => t,
    };
  }

  test('the back-off doubles from 0.5 s and stops at 30 s', () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 6, 7, 8, 50].map(retryBackoffMs),
      [0, 500, 1000, 2000, 4000, 16_000, 30_000, 30_000, 30_000],
    );
  });

  test('a failure is kept as the reason and delays the next try; a success clears both', async () => {
    const h = setup();
    const slot = newSlot('web');
    const failing = h.tasks.run(slot, 'claim', false, async () => {
      throw new Error('image not found');
    });
    assert.equal(slot.task, failing, 'the slot has the task while it runs');
    await failing.done;
    assert.equal(slot.task, null);
    assert.deepEqual(slot.error, { what: 'claim', message: 'image not found' });
    assert.equal(slot.failures, 1);
    assert.equal(slot.retryAt, h.now() + 500);
    await h.tasks.run(slot, 'claim', false, async () => Promise.reject(new Error('again'))).done;
    assert.equal(slot.failures, 2);
    assert.equal(slot.retryAt, h.now() + 1000);
    h.advance(1000);
    await h.tasks.run(slot, 'claim', false, async () => undefined).done;
    assert.deepEqual([slot.error, slot.failures, slot.retryAt], [null, 0, 0]);
    assert.deepEqual(
      h.settled,
      ['web:idle', 'web:idle', 'web:idle'],
      'settled once per task, after it ended',
    );
    assert.equal(await metricValue(h.registry, 'actions', { kind: 'claim', result: 'error' }), 2);
    assert.equal(await metricValue(h.registry, 'actions', { kind: 'claim', result: 'ok' }), 1);
  });

  test('an aborted task (preempted by an urgent one) is no failure', async () => {
    const h = setup();
    const slot = newSlot('web');
    const task = h.tasks.run(slot, 'claim', false, (signal) => {
      return new Promise<void>((_resolve, reject) => {
        signal.addEventListener('abort', () => reject(new Error('pull cancelled')));
      });
    });
    task.controller.abort(new Error('preempted by fence-stop'));
    await task.done;
    assert.deepEqual([slot.error, slot.failures, slot.retryAt, slot.task], [null, 0, 0, null]);
    assert.equal(await metricValue(h.registry, 'actions', { kind: 'claim', result: 'aborted' }), 1);
  });

  test("a checkpoint's failure shows in the reason but delays nothing, and its success clears only its own error", async () => {
    const h = setup();
    const slot: Slot = { ...newSlot('db'), failures: 1, retryAt: 12_345 };
    await h.tasks.run(slot, 'checkpoint', false, async () => Promise.reject(new Error('disk full'))).done;
    assert.deepEqual(slot.error, { what: 'checkpoint', message: 'disk full' });
    assert.deepEqual([slot.failures, slot.retryAt], [1, 12_345]);
    await h.tasks.run(slot, 'checkpoint', false, async () => undefined).done;
    assert.equal(slot.error, null);
    slot.error = { what: 'restart', message: 'image refused' };
    await h.tasks.run(slot, 'checkpoint', false, async () => undefined).done;
    assert.deepEqual(
      slot.error,
      { what: 'restart', message: 'image refused' },
      'not a checkpoint error: kept',
    );
    assert.deepEqual([slot.failures, slot.retryAt], [1, 12_345]);
  });
});

describe('peer hints', () => {
  const digest = `sha256:${'cd'.repeat(32)}`;
  const other = `sha256:${'ef'.repeat(32)}`;
  const status = (phase: ObservedStatus['phase'], revision: number) => ({ phase, revision });

  test('image: holders first, then nodes that ran a revision naming it; dead last; never this node', () => {
    const liveness = new Map<string, Liveness>([
      ['a', 'alive'],
      ['h1', 'dead'],
      ['h2', 'alive'],
      ['r1', 'alive'],
      ['r2', 'suspect'],
    ]);
    const hints = imageHintNodes({
      selfId: 'a',
      spec: { imageDigest: digest },
      holders: ['h1', 'h2', 'a'],
      specs: new Map([
        ['web', { imageDigest: digest, revision: 3 }],
        ['db', { imageDigest: other, revision: 1 }],
      ]),
      observed: [
        ['a', new Map([['web', status('running', 3)]])],
        ['r1', new Map([['web', status('released', 3)]])],
        // An older revision of web: its image may be another one.
        ['x1', new Map([['web', status('running', 2)]])],
        // Never got as far as running it.
        ['x2', new Map([['web', status('pulling', 3)]])],
        ['x3', new Map([['db', status('running', 1)]])],
        ['r2', new Map([['web', status('failed', 3)]])],
      ],
      liveness,
    });
    assert.deepEqual(hints, ['h2', 'r1', 'r2', 'h1']);
  });

  test('snapshot: the holder first while not dead, else last; then the rendezvous order; never this node', () => {
    const active = ['a', 'b', 'c', 'd', 'e'];
    const ordered = rankNodes('web', ['c', 'd', 'e']);
    const input = { selfId: 'a', workload: 'web', holderId: 'b', activeNodeIds: active };
    assert.deepEqual(
      snapshotSourceNodes({ ...input, liveness: new Map<string, Liveness>([['b', 'suspect']]) }),
      ['b', ...ordered],
    );
    assert.deepEqual(snapshotSourceNodes({ ...input, liveness: new Map<string, Liveness>() }), [
      ...ordered,
      'b',
    ]);
  });
});

describe('SlotBook: the one writer of this node’s observed entries', () => {
  function setup(runnerStatus: (name: string) => RunnerStatus | null = () => null) {
    let t = 50_000;
    const registry = new Registry();
    const state = new ClusterState({ logger: quietLogger });
    const options = { state, logger: quietLogger, registry };
    const observed = new ObservedView({ ...options, nodeId: 'node-a' });
    const workloads = new WorkloadsView(options);
    const captured: string[] = [];
    let updates = 0;
    state.onChange((doc) => {
      if (doc === 'observed') updates++;
    });
    const book = new SlotBook({
      nodeId: 'node-a',
      observed,
      workloads,
      runner: { status: runnerStatus },
      leases: {
        wanted: () => [],
        status: () => {
          throw new Error('no lease is wanted here');
        },
      } as { wanted: () => string[]; status: (w: string) => LeaseStatus },
      snapshots: {
        capture: async (name: string): Promise<SnapshotRef> => {
          captured.push(name);
          return { digest: `sha256:${'11'.repeat(32)}`, size: 3, at: t };
        },
      },
      logger: quietLogger,
      now: () => t,
    });
    return {
      book,
      observed,
      workloads,
      captured,
      updates: () => updates,
      advance: (ms: number) => {
        t += ms;
      },
    };
  }

  test('writes a changed status once, and nothing when it did not change; drop removes the entry', () => {
    const h = setup();
    const slot = h.book.slotFor('web');
    assert.equal(h.book.slotFor('web'), slot, 'one slot per workload');
    slot.authored = observedStatus(1, { phase: 'pulling', reason: 'claimed' });
    h.book.write(slot);
    assert.equal(h.observed.get('node-a', 'web')?.phase, 'pulling');
    const after = h.updates();
    h.book.write(slot);
    assert.equal(h.updates(), after, 'an equal status is not written again');
    slot.error = { what: 'claim', message: 'no peer has the image' };
    h.book.write(slot);
    assert.match(
      h.observed.get('node-a', 'web')?.reason ?? '',
      /claim failed: no peer has the image; retrying/,
    );
    h.book.drop(slot);
    assert.equal(h.observed.get('node-a', 'web'), undefined);
    assert.equal(h.book.get('web'), undefined);
    h.book.write(slot);
    assert.equal(h.observed.get('node-a', 'web'), undefined, 'a dropped slot is never written again');
  });

  test('pending reports: written where nothing else of ours stands, dropped once we no longer report', () => {
    const h = setup((name) =>
      name === 'busy' ? ({ name, phase: 'running', revision: 1 } as unknown as RunnerStatus) : null,
    );
    const specs = new Map<string, WorkloadSpec>(
      ['lonely', 'busy'].map((name) => [name, { ...workloadSpec(name), revision: 1 } as WorkloadSpec]),
    );
    const evaluation = {
      placement: {
        assignments: new Map([
          ['lonely', { pending: 'no node matches constraints {zone=mars}' }],
          ['busy', { pending: 'no capacity' }],
        ]),
      },
    } as unknown as ViewEvaluation;
    h.book.writePendingReports(new Set(['lonely', 'busy']), evaluation, specs);
    for (const slot of h.book.all()) h.book.write(slot);
    assert.equal(h.observed.get('node-a', 'lonely')?.phase, 'pending');
    assert.equal(
      h.observed.get('node-a', 'lonely')?.reason,
      'not placed: no node matches constraints {zone=mars}',
    );
    assert.equal(h.observed.get('node-a', 'busy'), undefined, 'something runs it here: no pending report');
    h.book.writePendingReports(new Set(), evaluation, specs);
    assert.equal(h.observed.get('node-a', 'lonely'), undefined, 'no longer ours to report: dropped');
  });

  test("adopt: a previous life's claim is dropped, what ran is released (persistent: snapshotted), the rest kept", async () => {
    const h = setup();
    h.workloads.put(workloadSpec('volatile'));
    h.workloads.put(workloadSpec('persistent', { scratchClass: 'persistent' }));
    h.workloads.put(workloadSpec('claimed'));
    h.workloads.put(workloadSpec('done'));
    h.observed.setStatus('node-a', 'volatile', observedStatus(1, { phase: 'running' }));
    h.observed.setStatus('node-a', 'persistent', observedStatus(1, { phase: 'stopping' }));
    h.observed.setStatus('node-a', 'claimed', observedStatus(1, { phase: 'pulling' }));
    h.observed.setStatus('node-a', 'done', observedStatus(1, { phase: 'failed', reason: 'exit 1' }));
    h.observed.setStatus('node-a', 'deleted', observedStatus(1, { phase: 'running' }));
    await h.book.adopt();
    const phases = Object.fromEntries(
      [...h.observed.listForNode('node-a')].map(([name, status]) => [name, status.phase]),
    );
    assert.deepEqual(phases, { volatile: 'released', persistent: 'released', done: 'failed' });
    assert.deepEqual(h.captured, ['persistent'], 'only persistent state is snapshotted');
    assert.ok(h.observed.get('node-a', 'persistent')?.snapshot, 'released with its snapshot');
    assert.equal(h.observed.get('node-a', 'volatile')?.snapshot, null);
    assert.equal(h.observed.get('node-a', 'volatile')?.reason, 'agent restarted: nothing runs here any more');
  });
});
