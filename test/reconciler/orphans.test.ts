import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { reapOrphans } from '../../src/reconciler/orphans.js';
import { isSameProcessAlive, killQuietly, readProcStat } from '../../src/reconciler/proc.js';
import type { ServiceStatus } from '../../src/reconciler/service-runtime.js';
import { waitFor } from '../helpers/wait.js';
import { makeHarness, sandboxSkipReason, waitForStatus } from './helpers.js';

const CHILD = fileURLToPath(new URL('./runtime-child.ts', import.meta.url));

/** pids of live processes whose command line contains `marker`. */
function copiesOf(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const stat = readProcStat(Number(entry));
      if (cmdline.split('\0').includes(marker) && stat !== null && stat.state !== 'Z')
        pids.push(Number(entry));
    } catch {
      // raced with its exit
    }
  }
  return pids;
}

/** Start a stand-in agent process running one service; resolves with the service's running status. */
async function startChildAgent(config: object): Promise<{ agent: ChildProcess; status: ServiceStatus }> {
  const agent = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const status = await new Promise<ServiceStatus>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error('child agent did not report a running service')), 60_000);
    agent.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const line = buffered.split('\n')[0];
      if (buffered.includes('\n') && line !== undefined) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as ServiceStatus);
      }
    });
    agent.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`child agent exited early (${code})`));
    });
  });
  return { agent, status };
}

async function killAgent(agent: ChildProcess): Promise<void> {
  if (agent.exitCode !== null || agent.signalCode !== null) return;
  const exited = new Promise((resolve) => agent.once('exit', resolve));
  agent.kill('SIGKILL');
  await exited;
}

function haveBwrap(): boolean {
  try {
    execFileSync('bwrap', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('orphan reaping after an agent restart', () => {
  test('a plain service left by a SIGKILLed agent is reaped: exactly one copy afterwards', async (t) => {
    const h = await makeHarness(t);
    const marker = `orphan-${randomBytes(4).toString('hex')}`;
    t.after(() => {
      for (const pid of copiesOf(marker)) killQuietly(pid, 'SIGKILL');
    });
    const spec = h.spec({ name: 'lonely', command: 'bin/forever.sh', args: [marker] });
    const { agent, status } = await startChildAgent({
      dataDir: h.dataDir,
      caPublicKey: h.caPublicKey,
      spec,
      sandbox: 'none',
    });
    t.after(() => killAgent(agent));
    assert.deepEqual(copiesOf(marker), [status.pid]);

    await killAgent(agent);
    // The plain service outlived its agent: that is the orphan.
    assert.ok(status.pid !== null && isSameProcessAlive(status.pid));
    assert.deepEqual(copiesOf(marker), [status.pid]);

    // A new agent on the same data dir reaps it before starting its own copy.
    await h.runtime.ensureRunning(spec);
    const fresh = await waitForStatus(h.runtime, 'lonely', (s) => s.phase === 'running', 'running');
    assert.ok(!isSameProcessAlive(status.pid));
    assert.notEqual(fresh.pid, status.pid);
    // "running" can come a moment before the new process has exec'd into the command that carries the marker.
    await waitFor(
      'the new copy carries the marker',
      () => copiesOf(marker).includes(fresh.pid as number),
      10_000,
    );
    assert.deepEqual(copiesOf(marker), [fresh.pid]);
  });

  test('a stale pid record whose start time does not match is never killed', async (t) => {
    const h = await makeHarness(t);
    const supervise = h.serviceDir('ghost', 'supervise');
    await mkdir(supervise, { recursive: true });
    // Our own pid with a wrong start time stands for a pid reused by an unrelated process.
    const record = {
      name: 'ghost',
      revision: 1,
      pid: process.pid,
      startTime: '1',
      childPid: null,
      childStartTime: null,
      cgroupDirs: [],
      writtenAt: Date.now(),
    };
    await writeFile(join(supervise, 'pid'), JSON.stringify(record));
    await writeFile(join(h.serviceDir('ghost'), 'garbage'), 'x');
    const reaped = await reapOrphans(h.dataDir);
    assert.deepEqual(reaped, [{ name: 'ghost', pid: process.pid, killed: false }]);
    await assert.rejects(stat(join(supervise, 'pid')), { code: 'ENOENT' });
  });

  test('a sandboxed service left by a SIGKILLed agent is reaped too: exactly one copy afterwards', {
    skip: sandboxSkipReason(haveBwrap()),
  }, async (t) => {
    const h = await makeHarness(t, { sandbox: 'bubblewrap' });
    const marker = `orphan-${randomBytes(4).toString('hex')}`;
    t.after(() => {
      for (const pid of copiesOf(marker)) killQuietly(pid, 'SIGKILL');
    });
    const spec = h.spec({ name: 'boxed', command: 'bin/forever.sh', args: [marker] });
    const { agent, status } = await startChildAgent({
      dataDir: h.dataDir,
      caPublicKey: h.caPublicKey,
      spec,
      sandbox: 'bubblewrap',
    });
    t.after(() => killAgent(agent));
    assert.equal(status.sandbox, 'bubblewrap');
    assert.ok(status.pid !== null);
    await killAgent(agent);
    // bwrap dies with its agent, but the service (pid 1 of its namespace, uid 65534) does not:
    // the parent-death signal from bwrap's capability-less monitor is not permitted against
    // another uid. The pid file names it; the next agent reaps it.
    await h.runtime.ensureRunning(spec);
    const fresh = await waitForStatus(h.runtime, 'boxed', (s) => s.phase === 'running', 'running');
    assert.ok(fresh.pid !== null && fresh.pid !== status.pid);
    assert.ok(!isSameProcessAlive(status.pid));
    // Every live process carrying the marker belongs to the new run: its service and its bwrap. "running"
    // can come a moment before the sandboxed process has exec'd into the command that carries the marker
    // (seen once in CI under load), so wait for it to show first.
    await waitFor(
      'the new copy carries the marker',
      () => copiesOf(marker).includes(fresh.pid as number),
      10_000,
    );
    const freshParent = readProcStat(fresh.pid)?.ppid;
    const copies = copiesOf(marker);
    assert.ok(
      copies.every((pid) => pid === fresh.pid || pid === freshParent),
      `copies ${copies.map((pid) => JSON.stringify(readProcStat(pid)))} vs service ${fresh.pid} (bwrap ${freshParent}), old ${status.pid}`,
    );
  });
});
