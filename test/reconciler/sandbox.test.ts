import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Registry } from 'prom-client';
import { parseIpv4 } from '../../src/identity/ipv4-cidr.js';
import { ExecaRunner } from '../../src/overlay/exec.js';
import { ServiceNetns } from '../../src/overlay/service-netns.js';
import { readProcStat } from '../../src/reconciler/proc.js';
import { SANDBOX_PATHS } from '../../src/reconciler/sandbox.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { Origin } from '../../src/state/names.js';
import { proposeAddress } from '../../src/state/service-addresses.js';
import { WorkloadsView } from '../../src/state/workloads-view.js';
import { silentLogger } from '../../src/util/logger.js';
import { quietLogger } from '../fixtures/state-store.js';
import { makeHarness, readLines, sandboxSkipReason, waitForFile, waitForStatus } from './helpers.js';

function haveBwrap(): boolean {
  try {
    execFileSync('bwrap', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const skip = sandboxSkipReason(haveBwrap());

/** Polls `read` until its output matches (the restart is asynchronous). */
async function waitForReady(read: () => Promise<string>, pattern: RegExp): Promise<string> {
  let last = '';
  for (let i = 0; i < 120; i++) {
    last = await read().catch(() => '');
    if (pattern.test(last)) return last;
    await sleep(250);
  }
  throw new Error(`never matched ${pattern}: ${last}`);
}

describe('sandbox (bubblewrap, root)', { skip }, () => {
  test('read-only root, writable service directories, uid 65534, readiness fd, graceful stop via child-pid', async (t) => {
    const h = await makeHarness(t, { sandbox: 'bubblewrap', limitsEnabled: true });
    // The pid record as it is on disk at the instant 'running' is announced: it must already
    // name the service itself (bwrap's child), which is what outlives a SIGKILLed agent.
    const pidFile = join(h.serviceDir('probe', 'supervise'), 'pid');
    const whenRunning: { record?: { pid: number; childPid: number | null } } = {};
    h.runtime.onStatus((s) => {
      if (s.phase === 'running' && whenRunning.record === undefined)
        whenRunning.record = JSON.parse(readFileSync(pidFile, 'utf8'));
    });
    await h.runtime.ensureRunning(
      h.spec({
        name: 'probe',
        command: 'bin/probe.sh',
        args: ['5'],
        notificationFd: 5,
        env: { MODE: 'test' },
      }),
    );
    const running = await waitForStatus(h.runtime, 'probe', (s) => s.phase === 'running', 'running');
    assert.equal(running.sandbox, 'bubblewrap');
    assert.equal(whenRunning.record?.childPid, running.pid);
    const state = h.serviceDir('probe', 'state');
    // Writing to / (and /etc) fails; writing to the four directories works.
    assert.equal((await readFile(join(state, 'root'), 'utf8')).trim(), 'readonly');
    assert.equal((await readFile(join(state, 'etc'), 'utf8')).trim(), 'readonly');
    assert.equal((await readFile(join(state, 'dirs'), 'utf8')).trim(), 'writable');
    await assert.rejects(stat('/silo-root-write-test'), { code: 'ENOENT' });
    assert.equal((await readFile(join(state, 'uid'), 'utf8')).trim(), '65534');
    // Own pid namespace, service as pid 1; the status reports its host pid (bwrap's child).
    assert.equal((await readFile(join(state, 'pid'), 'utf8')).trim(), '1');
    assert.ok(running.pid !== null);
    assert.match(readProcStat(running.pid)?.startTime ?? '', /^\d+$/);
    const env = Object.fromEntries(
      (await readLines(join(state, 'env'))).map((l) => l.split(/=(.*)/s).slice(0, 2)),
    );
    assert.equal(env['RUNTIME_DIRECTORY'], SANDBOX_PATHS.runtime);
    assert.equal(env['STATE_DIRECTORY'], SANDBOX_PATHS.state);
    assert.equal(env['CACHE_DIRECTORY'], SANDBOX_PATHS.cache);
    assert.equal(env['LOGS_DIRECTORY'], SANDBOX_PATHS.logs);
    assert.equal(env['MODE'], 'test');
    assert.equal((await readFile(join(state, 'cwd'), 'utf8')).trim(), SANDBOX_PATHS.state);
    // The files it wrote belong to the sandbox user.
    assert.equal((await stat(join(state, 'uid'))).uid, 65534);
    // Limits this host can enforce are reported.
    assert.ok(running.limits !== null);
    assert.ok(running.limits.nofile !== null && running.limits.nofile > 0);

    const stopped = await h.runtime.stop('probe');
    assert.equal(stopped?.phase, 'released');
    assert.deepEqual(
      { code: stopped?.lastExit?.code, signal: stopped?.lastExit?.signal },
      { code: 0, signal: null },
    );
    assert.equal(await readFile(join(state, 'stopped'), 'utf8'), 'graceful\n');
    await assert.rejects(stat(h.serviceDir('probe', 'runtime')), { code: 'ENOENT' });
  });

  test('the generator runs sandboxed too and writes into RUNTIME for the service', async (t) => {
    const h = await makeHarness(t, { sandbox: 'bubblewrap' });
    await h.runtime.ensureRunning(
      h.spec({ name: 'gen', command: 'bin/dirs.sh', generator: 'bin/generator.sh' }),
    );
    const copied = JSON.parse(await waitForFile(join(h.serviceDir('gen', 'state'), 'generated-copy.json')));
    assert.equal(copied.sandbox, 'bubblewrap');
    assert.deepEqual(copied.directories, {
      runtime: SANDBOX_PATHS.runtime,
      state: SANDBOX_PATHS.state,
      cache: SANDBOX_PATHS.cache,
      logs: SANDBOX_PATHS.logs,
    });
  });

  test('network "none" gets its own network namespace with only loopback', async (t) => {
    const h = await makeHarness(t, { sandbox: 'bubblewrap' });
    await h.runtime.ensureRunning(
      h.spec({ name: 'isolated', command: 'bin/probe.sh', args: ['5'], notificationFd: 5, network: 'none' }),
    );
    await waitForStatus(h.runtime, 'isolated', (s) => s.phase === 'running', 'running');
    const interfaces = (await readLines(join(h.serviceDir('isolated', 'state'), 'netdev')))
      .slice(2)
      .map((line) => line.trim().split(':')[0]);
    assert.deepEqual(interfaces, ['lo']);
  });

  test('a service ignoring the stop signal is SIGKILLed after stop_timeout (pid 1 in its namespace)', async (t) => {
    const h = await makeHarness(t, { sandbox: 'bubblewrap' });
    await h.runtime.ensureRunning(
      h.spec({ name: 'stubborn', command: 'bin/stubborn.sh', stopTimeoutMs: 300 }),
    );
    const running = await waitForStatus(h.runtime, 'stubborn', (s) => s.phase === 'running', 'running');
    await waitForFile(join(h.serviceDir('stubborn', 'state'), 'runs'));
    const runningStart = readProcStat(running.pid ?? 0)?.startTime;
    assert.ok(runningStart !== undefined);
    const stopped = await h.runtime.stop('stubborn');
    assert.equal(stopped?.lastExit?.signal, 'SIGKILL');
    // Gone (a zombie awaiting its reaper counts as gone: it runs nothing).
    const left = readProcStat(running.pid ?? 0);
    assert.ok(left === null || left.state === 'Z' || left.startTime !== runningStart, JSON.stringify(left));
  });

  test('crash, restart and exit 125 semantics hold inside the sandbox', async (t) => {
    const h = await makeHarness(t, { sandbox: 'bubblewrap', tuning: { crashLoopDeaths: 3 } });
    await h.runtime.ensureRunning(h.spec({ name: 'crash', command: 'bin/crash.sh', args: ['7'] }));
    const failed = await waitForStatus(h.runtime, 'crash', (s) => s.phase === 'failed', 'crash loop');
    assert.match(failed.reason ?? '', /crash loop: 3 exits .*exit code 7/);
    await h.runtime.ensureRunning(h.spec({ name: 'perm', command: 'bin/crash.sh', args: ['125'] }));
    const permanent = await waitForStatus(h.runtime, 'perm', (s) => s.phase === 'failed', 'failed');
    assert.match(permanent.reason ?? '', /exit code 125: permanent failure/);
  });

  test('memory limit (cgroup v1) is enforced when this host allows it', async (t) => {
    const h = await makeHarness(t, { sandbox: 'bubblewrap', limitsEnabled: true });
    await h.runtime.ensureRunning(
      h.spec({ name: 'memhog', command: 'bin/memhog.sh', memoryMb: 64, restart: 'never' }),
    );
    const done = await waitForStatus(h.runtime, 'memhog', (s) => s.phase === 'released', 'exited');
    if (done.limits?.memory !== 'cgroup-v1') {
      t.skip(`memory cgroup not available here: ${done.limits?.notes.join('; ')}`);
      return;
    }
    // tail tried to buffer 400 MB under a 64 MB limit and was OOM-killed (128 + 9).
    assert.equal((await readFile(join(h.serviceDir('memhog', 'state'), 'memhog'), 'utf8')).trim(), '137');
  });

  test('network = "overlay": the service runs in its own namespace with its address and binds 0.0.0.0', async (t) => {
    const execa = new ExecaRunner();
    // The "host" side is a namespace of this test's own: nothing touches the machine's network.
    const host = `silo-t${randomBytes(3).toString('hex')}-h`;
    await execa.run(['ip', 'netns', 'add', host]);
    t.after(() => execa.run(['ip', 'netns', 'delete', host]).then(() => undefined));
    const netns = new ServiceNetns({
      runner: execa,
      logger: silentLogger(),
      instanceId: host,
      hostNetns: host,
    });
    let address: string | undefined;
    const h = await makeHarness(t, {
      sandbox: 'bubblewrap',
      serviceNetwork: {
        addressOf: () => address,
        setup: (workload, a) => netns.setup(workload, a),
        teardown: (workload) => netns.teardown(workload),
        resolvConf: async () => 'search acme.silo\nnameserver 10.231.9.1\n',
      },
    });
    const spec = h.spec({
      name: 'web',
      command: 'bin/listen.sh',
      network: 'overlay',
      restart: 'on-failure',
      env: { PORT: '7000', REPLY_TEXT: 'hello from web' },
    });
    // No address yet (a lost claim not yet repaired): the start fails and is retried, nothing binds.
    await h.runtime.ensureRunning(spec);
    await waitForStatus(
      h.runtime,
      'web',
      (s) => /no service address assigned yet/.test(s.reason ?? ''),
      'no address',
    );
    address = '10.231.9.9';
    await waitForStatus(h.runtime, 'web', (s) => s.phase === 'running', 'running');
    const ask = `const s = require('node:net').connect({ host: '10.231.9.9', port: 7000, timeout: 1000 });
let got = ''; s.on('data', (d) => { got += d; }); s.on('end', () => { process.stdout.write(got); process.exit(0); });
s.on('timeout', () => process.exit(2)); s.on('error', () => process.exit(1));`;
    let reply: string | null = null;
    for (let i = 0; i < 40 && reply === null; i++) {
      reply = await execa
        .run(['node', '-e', ask], { netns: host })
        .then((r) => r.stdout)
        .catch(() => sleep(250).then(() => null));
    }
    assert.equal(reply, 'hello from web', 'the host reaches the service at its address');
    const { stdout } = await execa.run([
      'ip',
      '-n',
      netns.names('web').netns,
      '-o',
      '-4',
      'address',
      'show',
      'dev',
      'eth0',
    ]);
    assert.match(stdout, /inet 10\.231\.9\.9\/32/);
    assert.equal(
      await readFile(join(h.serviceDir('web', 'state'), 'resolv.conf'), 'utf8'),
      'search acme.silo\nnameserver 10.231.9.1\n',
      "the service's resolv.conf names the agent's service DNS",
    );
    await h.runtime.stop('web');
    await assert.rejects(
      execa.run(['ip', '-n', netns.names('web').netns, 'link']),
      'the namespace goes with the service',
    );
  });

  test('a service whose address claim lost while it ran restarts with its new address', async (t) => {
    const execa = new ExecaRunner();
    const host = `silo-t${randomBytes(3).toString('hex')}-h`;
    await execa.run(['ip', 'netns', 'add', host]);
    t.after(() => execa.run(['ip', 'netns', 'delete', host]).then(() => undefined));
    const netns = new ServiceNetns({
      runner: execa,
      logger: silentLogger(),
      instanceId: host,
      hostNetns: host,
    });
    // The converged view of the address, and who listens for changes of it (the workloads document).
    let address: string | undefined = '10.231.9.21';
    const listeners: (() => void)[] = [];
    const h = await makeHarness(t, {
      sandbox: 'bubblewrap',
      serviceNetwork: {
        addressOf: () => address,
        setup: (workload, a) => netns.setup(workload, a),
        teardown: (workload) => netns.teardown(workload),
        onChange: (listener) => {
          listeners.push(listener);
          return () => undefined;
        },
      },
    });
    await h.runtime.ensureRunning(
      h.spec({
        name: 'web',
        command: 'bin/listen.sh',
        network: 'overlay',
        restart: 'always',
        env: { PORT: '7000', REPLY_TEXT: 'hello' },
      }),
    );
    await waitForStatus(h.runtime, 'web', (s) => s.phase === 'running', 'running');
    const seen: { phase: string; reason: string | null }[] = [];
    h.runtime.onStatus((st) => seen.push(st));
    const inside = async (): Promise<string> =>
      (await execa.run(['ip', '-n', netns.names('web').netns, '-o', '-4', 'address', 'show', 'dev', 'eth0']))
        .stdout;
    assert.match(await inside(), /inet 10\.231\.9\.21\/32/);

    // The merge gave 10.231.9.21 to an older claim: this service was re-addressed.
    address = '10.231.9.22';
    for (const listener of listeners) listener();
    await waitForReady(
      async () => seen.map((st) => `${st.phase}: ${st.reason ?? ''}`).join('\n'),
      /starting: service address 10\.231\.9\.21 → 10\.231\.9\.22: restarting[\s\S]*\nrunning: /,
    );
    const shown = await waitForReady(inside, /inet 10\.231\.9\.22\/32/);
    assert.doesNotMatch(shown, /10\.231\.9\.21/, 'the lost address is gone from the service');
    const routes = (await execa.run(['ip', '-n', host, 'route'])).stdout;
    assert.doesNotMatch(routes, /10\.231\.9\.21/, 'the host no longer routes the lost address to it');
    assert.match(routes, /10\.231\.9\.22/);

    // Re-addressed to none (lost, not yet repaired): it stops serving until it has one.
    address = undefined;
    for (const listener of listeners) listener();
    await waitForStatus(
      h.runtime,
      'web',
      (s) => /no service address assigned yet/.test(s.reason ?? ''),
      'waiting for an address',
    );
    await assert.rejects(
      execa.run(['ip', '-n', netns.names('web').netns, 'link']),
      'no namespace without an address',
    );
    await h.runtime.stop('web');
  });
  test('two partitioned applies claim one address; on the merge the loser stops serving it and is re-addressed', async (t) => {
    const execa = new ExecaRunner();
    const host = `silo-t${randomBytes(3).toString('hex')}-h`;
    await execa.run(['ip', 'netns', 'add', host]);
    t.after(() => execa.run(['ip', 'netns', 'delete', host]).then(() => undefined));
    const netns = new ServiceNetns({
      runner: execa,
      logger: silentLogger(),
      instanceId: host,
      hostNetns: host,
    });
    // Two replicas of the workloads document with a two-address range; B's clock is behind A's.
    const range = { first: parseIpv4('10.231.7.8'), last: parseIpv4('10.231.7.9') };
    const replica = (now: number) => {
      const state = new ClusterState({ logger: quietLogger });
      const view = new WorkloadsView({
        state,
        logger: quietLogger,
        registry: new Registry(),
        serviceRange: range,
        now: () => now,
      });
      return { state, view };
    };
    const a = replica(2000);
    const b = replica(1000);
    // A name that proposes the same address as "web" (the proposal hashes the name).
    const contested = proposeAddress('web', new Set(), range);
    const rival = ['api', 'db', 'cache', 'queue', 'auth', 'mail', 'log', 'jobs'].find(
      (name) => proposeAddress(name, new Set(), range) === contested,
    );
    assert.ok(rival !== undefined && contested !== null, 'a rival name for the same address');
    const h = await makeHarness(t, {
      sandbox: 'bubblewrap',
      serviceNetwork: {
        addressOf: (workload) => a.view.serviceAddresses().get(workload),
        addresses: () => a.view.serviceAddresses(),
        setup: (workload, address) => netns.setup(workload, address),
        teardown: (workload) => netns.teardown(workload),
        onChange: (listener) => a.view.onChange(listener),
      },
    });
    const web = h.spec({
      name: 'web',
      command: 'bin/listen.sh',
      network: 'overlay',
      restart: 'on-failure',
      env: { PORT: '7000', REPLY_TEXT: 'web' },
    });
    a.view.put(web);
    b.view.put({ ...web, name: rival });
    assert.equal(a.view.serviceAddresses().get('web'), contested);
    assert.equal(b.view.serviceAddresses().get(rival), contested);
    const routed = (text: string) => new RegExp(`^${contested!.replaceAll('.', '\\.')} `, 'm').test(text);
    const hostRoutes = async (): Promise<string> =>
      (await execa.run(['ip', '-n', host, 'route', 'show'])).stdout;

    await h.runtime.ensureRunning(web);
    const first = await waitForStatus(h.runtime, 'web', (s) => s.phase === 'running', 'running');
    assert.ok(routed(await hostRoutes()), 'web serves the contested address');

    // The partition heals: B's older claim wins the address, web has none until the repair.
    a.state.applyRemote('workloads', b.state.encodeDiff('workloads'), Origin.remote);
    assert.equal(a.view.serviceAddresses().get(rival), contested);
    assert.equal(a.view.serviceAddresses().get('web'), undefined);
    await waitForStatus(
      h.runtime,
      'web',
      (s) => s.pid !== first.pid && /no service address assigned yet/.test(s.reason ?? ''),
      'stopped for want of an address',
    );
    assert.ok(!routed(await hostRoutes()), 'nothing here routes the lost address any more');
    // The repair (every agent's ServiceNetwork runs it) claims the other address for web.
    a.view.repairAddresses();
    const next = a.view.serviceAddresses().get('web');
    assert.ok(next !== undefined && next !== contested, `web re-addressed (${next})`);
    await waitForStatus(h.runtime, 'web', (s) => s.phase === 'running', 'running with its new address');
    const { stdout } = await execa.run([
      'ip',
      '-n',
      netns.names('web').netns,
      '-o',
      '-4',
      'address',
      'show',
      'dev',
      'eth0',
    ]);
    assert.match(stdout, new RegExp(`inet ${next.replaceAll('.', '\\.')}/32`));
    assert.ok(!routed(await hostRoutes()));
  });
});
