import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { RotatingLog } from '../../src/reconciler/log-rotation.js';
import {
  measureUsage,
  prepareDirs,
  purgeCache,
  type QuotaEvent,
  removeRuntime,
  ScratchQuotaMonitor,
  serviceDirs,
} from '../../src/reconciler/scratch.js';
import type { RuntimeEvent } from '../../src/reconciler/service-runtime.js';
import { makeHarness, waitForStatus } from './helpers.js';

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'silo-scratch-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('scratch directories', () => {
  test('layout, RUNTIME recreated empty, STATE/CACHE/LOGS kept, cache purge', async (t) => {
    const dataDir = await tempDir(t);
    const dirs = serviceDirs(dataDir, 'svc');
    assert.equal(dirs.state, join(dataDir, 'services', 'svc', 'state'));
    await prepareDirs(dirs);
    for (const dir of [dirs.runtime, dirs.state, dirs.cache, dirs.logs]) await writeFile(join(dir, 'f'), 'x');
    await prepareDirs(dirs);
    assert.deepEqual(await readdir(dirs.runtime), []);
    for (const dir of [dirs.state, dirs.cache, dirs.logs]) assert.deepEqual(await readdir(dir), ['f']);
    await purgeCache(dirs);
    assert.deepEqual(await readdir(dirs.cache), []);
    await removeRuntime(dirs);
    await assert.rejects(readdir(dirs.runtime), { code: 'ENOENT' });
    assert.throws(() => serviceDirs(dataDir, '../escape'), /invalid service name/);
  });

  test('measureUsage counts allocated bytes and stops at maxEntries', async (t) => {
    const dir = await tempDir(t);
    await mkdir(join(dir, 'a', 'b'), { recursive: true });
    await writeFile(join(dir, 'a', 'b', 'big'), Buffer.alloc(256 * 1024, 1));
    for (let i = 0; i < 20; i++) await writeFile(join(dir, `small-${i}`), 'x');
    const full = await measureUsage([dir]);
    assert.equal(full.truncated, false);
    assert.equal(full.entries, 24);
    assert.ok(full.bytes >= 256 * 1024, `${full.bytes} bytes`);
    const partial = await measureUsage([dir], 5);
    assert.equal(partial.truncated, true);
    assert.equal(partial.entries, 5);
    assert.deepEqual(await measureUsage([join(dir, 'missing')]), { bytes: 0, entries: 0, truncated: false });
  });

  test('quota monitor: over-quota event at once, quota-exceeded only after the grace, back-under resets', async (t) => {
    const dir = await tempDir(t);
    let now = 0;
    const events: QuotaEvent['type'][] = [];
    const monitor = new ScratchQuotaMonitor({
      paths: [dir],
      limitBytes: 64 * 1024,
      intervalMs: 1_000_000,
      graceMs: 1000,
      onEvent: (event) => events.push(event.type),
      now: () => now,
    });
    await monitor.tick();
    assert.deepEqual(events, []);
    await writeFile(join(dir, 'big'), Buffer.alloc(128 * 1024, 1));
    await monitor.tick();
    assert.deepEqual(events, ['over-quota']);
    now = 500;
    await monitor.tick();
    assert.deepEqual(events, ['over-quota']);
    await rm(join(dir, 'big'));
    await monitor.tick();
    assert.deepEqual(events, ['over-quota', 'back-under-quota']);
    await writeFile(join(dir, 'big'), Buffer.alloc(128 * 1024, 1));
    now = 600;
    await monitor.tick();
    now = 1599;
    await monitor.tick();
    assert.deepEqual(events, ['over-quota', 'back-under-quota', 'over-quota']);
    now = 1600;
    await monitor.tick();
    now = 5000;
    await monitor.tick();
    assert.deepEqual(events, ['over-quota', 'back-under-quota', 'over-quota', 'quota-exceeded']);
  });

  test('a service over scratch_mb for longer than the grace is stopped with the reason', async (t) => {
    const h = await makeHarness(t, { quota: { intervalMs: 50, graceMs: 200 } });
    const events: RuntimeEvent['type'][] = [];
    h.runtime.onEvent((event) => events.push(event.type));
    await h.runtime.ensureRunning(
      h.spec({ name: 'hog', command: 'bin/hog.sh', args: ['2048'], scratchMb: 1 }),
    );
    const failed = await waitForStatus(h.runtime, 'hog', (s) => s.phase === 'failed', 'stopped for quota');
    assert.match(
      failed.reason ?? '',
      /^scratch quota exceeded: 2\.\d MB used of 1\.0 MB for more than 0\.2 s$/,
    );
    assert.ok((failed.scratchUsedMb ?? 0) >= 2);
    assert.deepEqual(events, ['scratch-over-quota', 'scratch-quota-exceeded']);
    // STATE is kept (the data is the service's), RUNTIME is gone.
    assert.deepEqual(await readdir(h.serviceDir('hog', 'state')), ['big']);
    const metrics = await h.registry.getSingleMetricAsString('silo_service_scratch_used_bytes');
    assert.match(metrics, /silo_service_scratch_used_bytes\{service="hog"\} \d+/);
  });
});

describe('log rotation', () => {
  test('files never exceed maxBytes, lines are kept whole, only K rotated files remain', async (t) => {
    const dir = await tempDir(t);
    const log = new RotatingLog({ dir, maxBytes: 100, keep: 2 });
    const lines = Array.from(
      { length: 30 },
      (_, i) => `line ${String(i).padStart(2, '0')} ${'.'.repeat(20)}\n`,
    );
    // One big write and many small ones behave the same.
    log.write(Buffer.from(lines.slice(0, 15).join('')));
    for (const line of lines.slice(15)) log.write(Buffer.from(line));
    log.close();
    assert.deepEqual((await readdir(dir)).sort(), ['current', 'current.1', 'current.2']);
    const kept: string[] = [];
    for (const file of ['current.2', 'current.1', 'current']) {
      assert.ok((await stat(join(dir, file))).size <= 100);
      const text = await readFile(join(dir, file), 'utf8');
      assert.ok(text.endsWith('\n'), `${file} ends with a whole line`);
      kept.push(text);
    }
    // The newest lines, in order, without gaps.
    const joined = kept.join('');
    assert.ok(joined.endsWith(lines.slice(-3).join('')));
    assert.ok(lines.join('').endsWith(joined));
  });

  test('a line longer than maxBytes is split rather than lost', async (t) => {
    const dir = await tempDir(t);
    const log = new RotatingLog({ dir, maxBytes: 10, keep: 5 });
    log.write(Buffer.from('abcdefghijklmnopqrstuvwxy\n'));
    log.close();
    const parts = await Promise.all(
      ['current.2', 'current.1', 'current'].map((f) => readFile(join(dir, f), 'utf8')),
    );
    assert.equal(parts.join(''), 'abcdefghijklmnopqrstuvwxy\n');
    assert.throws(() => new RotatingLog({ dir, maxBytes: 0, keep: 1 }), /maxBytes/);
  });
});
