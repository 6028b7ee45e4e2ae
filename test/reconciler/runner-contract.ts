import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { RunnerStatus, ServiceRunner } from '../../src/reconciler/service-runner.js';
import { ObservedStatusSchema, type WorkloadSpec } from '../../src/state/schemas.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The ServiceRunner contract (src/reconciler/service-runner.ts) as a suite
 * every implementation must pass: the real runner (processes, images,
 * scratch) and the simulator's. The simulator's safety results are only as
 * good as its runner's fidelity to the real one, so both are held to the
 * same observable behaviour here.
 */
export interface RunnerUnderTest {
  runner: ServiceRunner;
  /** A spec of a long-running service named `name` at `revision`. */
  spec(name: string, revision: number): WorkloadSpec;
  /** The service's STATE_DIRECTORY on this runner's node. */
  stateDir(name: string): string;
  /** Whether a process of `name` is alive right now (the implementation's own ground truth). */
  processAlive(name: string): boolean | Promise<boolean>;
  /** Kills the service's process from outside (SIGKILL), as if it crashed; the node and the runner live on. */
  crash(name: string): void | Promise<void>;
  /** Ends the runner and removes what it made. */
  close(): Promise<void>;
}

interface TestContextLike {
  after(fn: () => Promise<void> | void): void;
}

/** Collects every status a runner reports, per service. */
function record(runner: ServiceRunner): { of(name: string): RunnerStatus[]; stop(): void } {
  const seen: RunnerStatus[] = [];
  const stop = runner.onStatus((status) => seen.push(status));
  return { of: (name) => seen.filter((s) => s.name === name), stop };
}

/** The phases a service went through, a phase reported again in a row counted once. */
function changes(statuses: RunnerStatus[]): string[] {
  return statuses.map((s) => s.phase).filter((phase, i, all) => i === 0 || all[i - 1] !== phase);
}

async function running(runner: ServiceRunner, name: string, revision: number): Promise<RunnerStatus> {
  let last: RunnerStatus | null = null;
  await waitFor(
    `${name} running at revision ${revision}`,
    () => {
      last = runner.status(name);
      return last?.phase === 'running' && last.revision === revision;
    },
    30_000,
  );
  return last as unknown as RunnerStatus;
}

export function runnerContract(label: string, make: (t: TestContextLike) => Promise<RunnerUnderTest>): void {
  describe(`ServiceRunner contract: ${label}`, { timeout: 120_000 }, () => {
    const open = async (t: TestContextLike): Promise<RunnerUnderTest> => {
      const under = await make(t);
      t.after(() => under.close());
      await under.runner.init();
      return under;
    };

    test('ensureRunning runs that revision; the same revision again changes nothing', async (t) => {
      const { runner, spec, processAlive } = await open(t);
      const statuses = record(runner);
      await runner.ensureRunning(spec('web', 1));
      const first = await running(runner, 'web', 1);
      assert.ok(await processAlive('web'));
      const again = await runner.ensureRunning(spec('web', 1));
      assert.equal(again.phase, 'running');
      const now = runner.status('web');
      assert.equal(now?.since, first.since, 'not restarted');
      assert.equal(now?.restarts, first.restarts);
      // A runner may report a phase again with details filled in (the real one: the pid); a start is a change into it.
      const phases = changes(statuses.of('web'));
      assert.equal(phases.filter((p) => p === 'starting').length, 1, `one start: ${phases.join(' ')}`);
      statuses.stop();
    });

    test('a new revision replaces the running one and keeps STATE_DIRECTORY', async (t) => {
      const { runner, spec, stateDir } = await open(t);
      await runner.ensureRunning(spec('db', 1));
      await running(runner, 'db', 1);
      await mkdir(stateDir('db'), { recursive: true });
      await writeFile(join(stateDir('db'), 'kept'), 'state of revision 1');
      const statuses = record(runner);
      await runner.ensureRunning(spec('db', 2));
      await running(runner, 'db', 2);
      const phases = statuses
        .of('db')
        .map((s) => `${s.phase}@${s.revision}`)
        .filter((p, i, all) => i === 0 || all[i - 1] !== p);
      const stopping = phases.indexOf('stopping@1');
      const starting = phases.indexOf('starting@2');
      assert.ok(
        stopping >= 0 && starting > stopping,
        `revision 1 stops before 2 starts: ${phases.join(' ')}`,
      );
      assert.equal(await readFile(join(stateDir('db'), 'kept'), 'utf8'), 'state of revision 1');
      statuses.stop();
    });

    test('stop ends in released once the process is gone, keeps STATE_DIRECTORY; ensureRunning starts it again', async (t) => {
      const { runner, spec, stateDir, processAlive } = await open(t);
      await runner.ensureRunning(spec('job', 1));
      await running(runner, 'job', 1);
      await mkdir(stateDir('job'), { recursive: true });
      await writeFile(join(stateDir('job'), 'kept'), 'x');
      const stopped = await runner.stop('job', { reason: 'contract' });
      assert.equal(stopped?.phase, 'released');
      assert.equal(runner.status('job')?.phase, 'released');
      assert.equal(await processAlive('job'), false, 'the process is gone when stop resolves');
      assert.ok(existsSync(join(stateDir('job'), 'kept')));
      await runner.ensureRunning(spec('job', 1));
      await running(runner, 'job', 1);
      assert.ok(await processAlive('job'));
    });

    test('a process that dies is started again (restart = always): restarts counted, lastExit says how', async (t) => {
      const { runner, spec, crash, processAlive } = await open(t);
      await runner.ensureRunning(spec('flaky', 1));
      const before = await running(runner, 'flaky', 1);
      const statuses = record(runner);
      await crash('flaky');
      await waitFor('flaky running again', () => {
        const now = runner.status('flaky');
        return now?.phase === 'running' && now.restarts === before.restarts + 1;
      });
      assert.ok(await processAlive('flaky'));
      const now = runner.status('flaky');
      assert.equal(now?.lastExit?.signal, 'SIGKILL');
      assert.equal(now?.lastExit?.code, null);
      const phases = changes(statuses.of('flaky'));
      assert.ok(
        phases.includes('starting') && phases.at(-1) === 'running',
        `through starting: ${phases.join(' ')}`,
      );
      statuses.stop();
    });

    test('a service it never ran: stop resolves null, status is null', async (t) => {
      const { runner } = await open(t);
      assert.equal(await runner.stop('ghost', { reason: 'contract' }), null);
      assert.equal(runner.status('ghost'), null);
      assert.deepEqual(runner.list(), []);
    });

    test('an invalid spec is rejected and nothing runs', async (t) => {
      const { runner, spec } = await open(t);
      await assert.rejects(runner.ensureRunning({ ...spec('ok', 1), name: 'Not A Name' }));
      await assert.rejects(runner.ensureRunning({ ...spec('ok', 1), revision: -1 }));
      assert.deepEqual(
        runner.list().filter((s) => s.phase === 'running'),
        [],
      );
    });

    test('statuses carry every field of ObservedStatus but snapshot (and the loop-owned epoch)', async (t) => {
      const { runner, spec } = await open(t);
      const status = await runner.ensureRunning(spec('fields', 1));
      const expected = Object.keys(ObservedStatusSchema.shape)
        .filter((key) => key !== 'snapshot' && key !== 'epoch')
        .concat('name')
        .sort();
      assert.deepEqual(Object.keys(status).sort(), expected);
      assert.deepEqual(Object.keys(await running(runner, 'fields', 1)).sort(), expected);
    });

    test('listeners hear every change until they unsubscribe; stopAll releases everything', async (t) => {
      const { runner, spec, processAlive } = await open(t);
      const heard: string[] = [];
      const off = runner.onStatus((s) => heard.push(`${s.name}:${s.phase}`));
      await runner.ensureRunning(spec('a', 1));
      await runner.ensureRunning(spec('b', 1));
      await running(runner, 'a', 1);
      await running(runner, 'b', 1);
      assert.ok(heard.includes('a:running') && heard.includes('b:running'), heard.join(' '));
      off();
      const before = heard.length;
      await runner.stopAll({ reason: 'contract' });
      assert.equal(heard.length, before, 'nothing reaches a listener that unsubscribed');
      for (const name of ['a', 'b']) {
        assert.equal(runner.status(name)?.phase, 'released');
        assert.equal(await processAlive(name), false);
      }
    });
  });
}
