import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { isSameProcessAlive, processGroupMembers } from '../../src/reconciler/proc.js';
import { ObservedStatusSchema } from '../../src/state/schemas.js';
import { waitFor } from '../helpers/wait.js';
import { makeHarness, readLines, waitForFile, waitForStatus } from './helpers.js';

describe('supervisor (plain processes)', () => {
  test('readiness: starting until a newline arrives on notification_fd, then running', async (t) => {
    const h = await makeHarness(t);
    const spec = h.spec({ name: 'ready', command: 'bin/ready.sh', args: ['5'], notificationFd: 5 });
    const seen: string[] = [];
    h.runtime.onStatus((s) => {
      assert.ok(
        ObservedStatusSchema.safeParse(s).success,
        `status matches ObservedStatus: ${JSON.stringify(s)}`,
      );
      if (seen.at(-1) !== s.phase) seen.push(s.phase);
    });
    await h.runtime.ensureRunning(spec);
    await waitForFile(join(h.serviceDir('ready', 'state'), 'runs'));
    // The process runs, but has not said it is ready.
    assert.equal(h.runtime.status('ready')?.phase, 'starting');
    await writeFile(join(h.serviceDir('ready', 'state'), 'go'), '');
    const running = await waitForStatus(h.runtime, 'ready', (s) => s.phase === 'running', 'running');
    assert.equal(running.sandbox, 'none');
    assert.equal(running.restarts, 0);
    assert.ok(running.pid !== null && isSameProcessAlive(running.pid));
    assert.deepEqual(seen.slice(0, 2), ['starting', 'running']);
  });

  test('readiness timeout: no newline within start_timeout is a failed start', async (t) => {
    const h = await makeHarness(t);
    const spec = h.spec({
      name: 'never-ready',
      command: 'bin/ready.sh',
      args: ['5'],
      notificationFd: 5,
      startTimeoutMs: 300,
      restart: 'never',
    });
    await h.runtime.ensureRunning(spec);
    const failed = await waitForStatus(h.runtime, 'never-ready', (s) => s.phase === 'failed', 'failed');
    assert.match(failed.reason ?? '', /not ready within 0\.3 s/);
  });

  test('restart with exponential backoff, then a crash loop ends in failed', async (t) => {
    const h = await makeHarness(t, { tuning: { backoffBaseMs: 20, backoffCapMs: 80, crashLoopDeaths: 6 } });
    // The restart announced after each exit (keyed by that exit).
    const announced = new Map<number, string>();
    h.runtime.onStatus((s) => {
      if (s.reason?.startsWith('restarting') === true && s.lastExit !== null)
        announced.set(s.lastExit.at, s.reason);
    });
    await h.runtime.ensureRunning(h.spec({ name: 'crasher', command: 'bin/crash.sh', args: ['3'] }));
    const failed = await waitForStatus(h.runtime, 'crasher', (s) => s.phase === 'failed', 'crash loop');
    assert.match(failed.reason ?? '', /^crash loop: 6 exits within 60 s \(last: exit code 3\)/);
    assert.deepEqual(failed.lastExit && { code: failed.lastExit.code, signal: failed.lastExit.signal }, {
      code: 3,
      signal: null,
    });
    assert.equal(failed.restarts, 5);
    // The delay doubles per consecutive failure and stops at the cap.
    assert.deepEqual(
      [...announced.values()],
      [
        'restarting in 0.02 s after exit code 3',
        'restarting in 0.04 s after exit code 3',
        'restarting in 0.08 s after exit code 3',
        'restarting in 0.08 s after exit code 3',
        'restarting in 0.08 s after exit code 3',
      ],
    );
    assert.equal((await readLines(join(h.serviceDir('crasher', 'state'), 'runs'))).length, 6);
    // Failed is sticky for this revision: ensureRunning does not start it again...
    await h.runtime.ensureRunning(h.spec({ name: 'crasher', command: 'bin/crash.sh', args: ['3'] }));
    assert.equal(h.runtime.status('crasher')?.phase, 'failed');
    // ...a new revision does.
    await h.runtime.ensureRunning(
      h.spec({ name: 'crasher', command: 'bin/crash.sh', args: ['0', '30'], revision: 2 }),
    );
    await waitForStatus(
      h.runtime,
      'crasher',
      (s) => s.phase === 'running' && s.revision === 2,
      'revision 2 running',
    );
  });

  test('exit code 125 is a permanent failure: never restarted', async (t) => {
    const h = await makeHarness(t);
    await h.runtime.ensureRunning(h.spec({ name: 'permanent', command: 'bin/crash.sh', args: ['125'] }));
    const failed = await waitForStatus(h.runtime, 'permanent', (s) => s.phase === 'failed', 'failed');
    assert.match(failed.reason ?? '', /exit code 125: permanent failure, not restarted/);
    assert.equal(failed.restarts, 0);
    // Barrier: a service that fails afterwards with a restartable code is restarted twice (by the
    // same backoff timers, due later than a wrong restart of 'permanent' would be).
    await h.runtime.ensureRunning(h.spec({ name: 'probe', command: 'bin/crash.sh', args: ['1'] }));
    await waitFor('the probe restarted twice', async () => {
      const runs = await readLines(join(h.serviceDir('probe', 'state'), 'runs')).catch(() => []);
      return runs.length >= 3;
    });
    assert.equal((await readLines(join(h.serviceDir('permanent', 'state'), 'runs'))).length, 1);
  });

  test('restart policies: on-failure does not restart a clean exit; never does not restart a failure', async (t) => {
    const h = await makeHarness(t);
    await h.runtime.ensureRunning(
      h.spec({ name: 'clean', command: 'bin/crash.sh', args: ['0'], restart: 'on-failure' }),
    );
    await h.runtime.ensureRunning(
      h.spec({ name: 'once', command: 'bin/crash.sh', args: ['2'], restart: 'never' }),
    );
    await h.runtime.ensureRunning(
      h.spec({ name: 'retry', command: 'bin/crash.sh', args: ['2'], restart: 'on-failure' }),
    );
    const clean = await waitForStatus(h.runtime, 'clean', (s) => s.phase === 'released', 'released');
    assert.match(clean.reason ?? '', /exit code 0; restart policy "on-failure"/);
    const once = await waitForStatus(h.runtime, 'once', (s) => s.phase === 'failed', 'failed');
    assert.match(once.reason ?? '', /exit code 2; restart policy "never"/);
    await waitForStatus(h.runtime, 'retry', (s) => s.restarts >= 2, 'restarted twice');
  });

  test('graceful stop runs the service SIGTERM handler', async (t) => {
    const h = await makeHarness(t);
    await h.runtime.ensureRunning(h.spec({ name: 'graceful', command: 'bin/graceful.sh' }));
    const running = await waitForStatus(h.runtime, 'graceful', (s) => s.phase === 'running', 'running');
    await waitForFile(join(h.serviceDir('graceful', 'state'), 'runs'));
    const stopped = await h.runtime.stop('graceful');
    assert.equal(stopped?.phase, 'released');
    assert.equal(stopped?.reason, 'stopped');
    assert.deepEqual(
      { code: stopped?.lastExit?.code, signal: stopped?.lastExit?.signal },
      { code: 0, signal: null },
    );
    assert.equal(await readFile(join(h.serviceDir('graceful', 'state'), 'stopped'), 'utf8'), 'graceful\n');
    assert.ok(running.pid !== null && !isSameProcessAlive(running.pid));
    // A stopped service comes back when asked for again (level-triggered), same revision.
    await h.runtime.ensureRunning(h.spec({ name: 'graceful', command: 'bin/graceful.sh' }));
    await waitForStatus(h.runtime, 'graceful', (s) => s.phase === 'running', 'running again');
  });

  test('a service ignoring SIGTERM is SIGKILLed after stop_timeout, children included', async (t) => {
    const h = await makeHarness(t);
    await h.runtime.ensureRunning(
      h.spec({ name: 'stubborn', command: 'bin/stubborn.sh', stopTimeoutMs: 300 }),
    );
    const running = await waitForStatus(h.runtime, 'stubborn', (s) => s.phase === 'running', 'running');
    await waitForFile(join(h.serviceDir('stubborn', 'state'), 'runs'));
    const stopped = await h.runtime.stop('stubborn');
    assert.equal(stopped?.lastExit?.signal, 'SIGKILL');
    assert.ok(running.pid !== null && !isSameProcessAlive(running.pid));
    // Nothing of its process group survives (the sleeps it forked).
    const survivors = processGroupMembers(running.pid);
    assert.deepEqual(survivors, []);
  });

  test('directories and env: RUNTIME fresh per run and removed at stop, STATE and CACHE kept', async (t) => {
    const h = await makeHarness(t);
    const spec = h.spec({ name: 'dirs', command: 'bin/dirs.sh', env: { GREETING: 'hello world' } });
    await h.runtime.ensureRunning(spec);
    const state = h.serviceDir('dirs', 'state');
    // cache-file is the last thing each run writes: three lines = three complete runs.
    await waitForFile(
      join(h.serviceDir('dirs', 'cache'), 'cache-file'),
      (text) => text.split('\n').length > 3,
    );
    await h.runtime.stop('dirs');
    // Every run saw an empty RUNTIME although each left a file there.
    const listings = await readLines(join(state, 'runtime-listings'));
    assert.ok(listings.length >= 3);
    assert.ok(
      listings.every((line) => line === '[]'),
      listings.join(','),
    );
    // STATE and CACHE persisted across the restarts.
    assert.ok((await readLines(join(h.serviceDir('dirs', 'cache'), 'cache-file'))).length >= 3);
    await assert.rejects(stat(h.serviceDir('dirs', 'runtime')), { code: 'ENOENT' });
    const env = Object.fromEntries(
      (await readLines(join(state, 'env'))).map((l) => l.split(/=(.*)/s).slice(0, 2)),
    );
    assert.equal(env['RUNTIME_DIRECTORY'], h.serviceDir('dirs', 'runtime'));
    assert.equal(env['STATE_DIRECTORY'], state);
    assert.equal(env['CACHE_DIRECTORY'], h.serviceDir('dirs', 'cache'));
    assert.equal(env['LOGS_DIRECTORY'], h.serviceDir('dirs', 'logs'));
    assert.equal(env['GREETING'], 'hello world');
    assert.equal(env['HOME'], state);
    assert.equal((await readFile(join(state, 'cwd'), 'utf8')).trim(), state);
    // The agent's own environment does not leak into services.
    assert.equal(env['NODE_OPTIONS'], undefined);
    // CACHE can be purged while stopped.
    await h.runtime.purgeCache('dirs');
    assert.deepEqual(await readdir(h.serviceDir('dirs', 'cache')), []);
  });

  test('generator: runs before every start with the runtime config on stdin; failure fails the start', async (t) => {
    const h = await makeHarness(t);
    await h.runtime.ensureRunning(
      h.spec({ name: 'gen', command: 'bin/dirs.sh', generator: 'bin/generator.sh' }),
    );
    const state = h.serviceDir('gen', 'state');
    const copied = JSON.parse(await waitForFile(join(state, 'generated-copy.json')));
    assert.equal(copied.service, 'gen');
    assert.equal(copied.revision, 1);
    assert.equal(copied.image.digest, h.digest);
    assert.equal(copied.directories.state, state);
    assert.deepEqual(copied.resources, { cpus: 1, memoryMb: 256, scratchMb: 64 });
    await h.runtime.stop('gen');

    await h.runtime.ensureRunning(
      h.spec({
        name: 'badgen',
        command: 'bin/graceful.sh',
        generator: 'bin/generator.sh',
        env: { FAIL_GENERATOR: 'missing config' },
        restart: 'never',
      }),
    );
    const failed = await waitForStatus(h.runtime, 'badgen', (s) => s.phase === 'failed', 'failed');
    assert.match(
      failed.reason ?? '',
      /start failed: generator failed \(exit code 4\): generator says no: missing config/,
    );
    // The service itself never ran.
    assert.deepEqual(await readLines(join(h.serviceDir('badgen', 'state'), 'runs')), []);
  });

  test('a new spec revision restarts the service', async (t) => {
    const h = await makeHarness(t);
    await h.runtime.ensureRunning(h.spec({ name: 'rev', command: 'bin/graceful.sh' }));
    const first = await waitForStatus(h.runtime, 'rev', (s) => s.phase === 'running', 'running');
    // Same revision again: nothing happens.
    const again = await h.runtime.ensureRunning(h.spec({ name: 'rev', command: 'bin/graceful.sh' }));
    assert.equal(again.pid, first.pid);
    await h.runtime.ensureRunning(h.spec({ name: 'rev', command: 'bin/graceful.sh', revision: 2 }));
    const second = await waitForStatus(
      h.runtime,
      'rev',
      (s) => s.phase === 'running' && s.revision === 2,
      'rev 2',
    );
    assert.notEqual(second.pid, first.pid);
    assert.ok(first.pid !== null && !isSameProcessAlive(first.pid));
    assert.equal(await readFile(join(h.serviceDir('rev', 'state'), 'stopped'), 'utf8'), 'graceful\n');
  });

  test('stdout/stderr go to LOGS_DIRECTORY/current with size-based rotation keeping K files', async (t) => {
    const h = await makeHarness(t, { tuning: { logMaxBytes: 2000, logKeep: 3 } });
    await h.runtime.ensureRunning(
      h.spec({ name: 'noisy', command: 'bin/noisy.sh', args: ['200'], restart: 'never' }),
    );
    await waitForStatus(h.runtime, 'noisy', (s) => s.phase === 'released', 'exited');
    const logs = h.serviceDir('noisy', 'logs');
    assert.deepEqual((await readdir(logs)).sort(), ['current', 'current.1', 'current.2', 'current.3']);
    for (const file of ['current', 'current.1', 'current.2', 'current.3']) {
      assert.ok((await stat(join(logs, file))).size <= 2000, `${file} within maxBytes`);
    }
    const current = await readFile(join(logs, 'current'), 'utf8');
    assert.match(current, /line 199 \.+\nstderr line\n$/);
    const oldest = await readFile(join(logs, 'current.3'), 'utf8');
    assert.doesNotMatch(oldest, /^line 0 /m, 'the oldest output was rotated away');
  });

  test('pid file records the running service before it is reported running, and is removed when it stops', async (t) => {
    const h = await makeHarness(t);
    const file = join(h.serviceDir('pidfile', 'supervise'), 'pid');
    // Read at the instant 'running' is announced: an agent killed right then must leave a
    // record its successor can reap from.
    let onDiskWhenRunning: string | null = null;
    h.runtime.onStatus((s) => {
      if (s.phase === 'running' && onDiskWhenRunning === null) onDiskWhenRunning = readFileSync(file, 'utf8');
    });
    await h.runtime.ensureRunning(h.spec({ name: 'pidfile', command: 'bin/graceful.sh' }));
    const running = await waitForStatus(h.runtime, 'pidfile', (s) => s.phase === 'running', 'running');
    assert.ok(onDiskWhenRunning !== null, 'the pid file existed when running was announced');
    const record = JSON.parse(onDiskWhenRunning);
    assert.equal(record.pid, running.pid);
    assert.match(record.startTime, /^\d+$/);
    await h.runtime.stop('pidfile');
    await assert.rejects(stat(file), { code: 'ENOENT' });
  });

  test('reported resource limits are the ones in force, and the cgroups go away at stop', async (t) => {
    const h = await makeHarness(t, { limitsEnabled: true });
    await h.runtime.ensureRunning(
      h.spec({ name: 'limited', command: 'bin/graceful.sh', cpus: 0.5, memoryMb: 48 }),
    );
    const running = await waitForStatus(h.runtime, 'limited', (s) => s.phase === 'running', 'running');
    assert.ok(running.pid !== null && running.limits !== null);
    // Past the limits wrapper (which joins the cgroups, then execs the service).
    await waitForFile(join(h.serviceDir('limited', 'state'), 'runs'));
    const limits = running.limits;
    const procLimits = await readFile(`/proc/${running.pid}/limits`, 'utf8');
    const nofile = procLimits
      .split('\n')
      .find((l) => l.startsWith('Max open files'))
      ?.trim()
      .split(/\s+/);
    assert.deepEqual(nofile?.slice(3, 5), [String(limits.nofile), String(limits.nofile)]);
    const cgroups = await readFile(`/proc/${running.pid}/cgroup`, 'utf8');
    const memoryLine = cgroups.split('\n').find((l) => l.split(':')[1]?.split(',').includes('memory'));
    if (limits.memory === 'cgroup-v1') {
      assert.match(memoryLine ?? '', /\/silo-[0-9a-f]{8}-limited$/);
      const dir = join('/sys/fs/cgroup/memory', memoryLine?.split(':')[2] ?? '');
      assert.equal(
        (await readFile(join(dir, 'memory.limit_in_bytes'), 'utf8')).trim(),
        String(48 * 1024 * 1024),
      );
      await h.runtime.stop('limited');
      await assert.rejects(stat(dir), { code: 'ENOENT' });
    } else {
      t.diagnostic(`memory limit here: ${limits.memory} (${limits.notes.join('; ')})`);
      assert.match(procLimits, new RegExp(`Max address space\\s+${48 * 1024 * 1024}\\s`));
    }
  });

  test('invalid specs are refused with the field named', async (t) => {
    const h = await makeHarness(t);
    await assert.rejects(
      h.runtime.ensureRunning({ ...h.spec({ name: 'x', command: 'bin/crash.sh' }), scratchMb: -1 }),
      /scratchMb/,
    );
    await h.runtime.ensureRunning(h.spec({ name: 'nocmd', command: 'bin/does-not-exist.sh' }));
    assert.match(h.runtime.status('nocmd')?.reason ?? '', /bin\/does-not-exist\.sh: not found in the image/);
    assert.equal(h.runtime.status('nocmd')?.phase, 'failed');
    await h.runtime.ensureRunning(h.spec({ name: 'notexec', command: 'README' }));
    assert.match(h.runtime.status('notexec')?.reason ?? '', /README: not executable in the image/);
    // ".." cannot climb out of the image: the host's /bin/sh is not what runs.
    await h.runtime.ensureRunning(h.spec({ name: 'escape', command: '../../bin/sh' }));
    assert.match(h.runtime.status('escape')?.reason ?? '', /\.\.\/\.\.\/bin\/sh: not found in the image/);
  });
});
