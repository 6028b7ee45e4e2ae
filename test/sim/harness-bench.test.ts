import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { writeConvergenceReport } from '../../bench/convergence/report.js';
import { type ConvergenceReport, runConvergence } from '../../bench/convergence/run-convergence.js';
import { runDocGrowth, writeDocGrowthReport } from '../../bench/doc-growth.js';
import { runRecovery, writeRecoveryReport } from '../../bench/recovery.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

test('a tiny convergence bench (2 sizes, few writes) writes valid JSON, markdown and SVG', {
  timeout: 180_000,
}, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'silo-bench-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const report = await runConvergence({
    nodes: [2, 3],
    latencyMs: 5,
    jitterMs: 0,
    writes: 8,
    gapMs: 10,
    partitionWrites: 3,
    pushPullIntervalMs: 100,
    sustainRates: [10],
    sustainSeconds: 1,
    seed: 1,
    baselines: true,
    settleMs: 300,
    idleMs: 300,
    timing: {
      heartbeatMs: 300,
      suspectAfterMs: 900,
      deadAfterMs: 1800,
      fenceAfterMs: 1200,
      syncGraceMs: 600,
    },
    log: () => undefined,
  });
  const files = await writeConvergenceReport(report, dir);

  const json = JSON.parse(await readFile(files.json, 'utf8')) as ConvergenceReport;
  assert.equal(json.bench, 'convergence');
  assert.deepEqual(
    json.sizes.map((s) => s.nodes),
    [2, 3],
  );
  for (const size of json.sizes) {
    assert.deepEqual(
      size.systems.map((s) => s.system),
      ['silo', 'floodsub', 'push-pull'],
    );
    for (const run of size.systems) {
      assert.equal(run.writes.writes, 8);
      assert.equal(run.writes.timeouts, 0, `${run.system} at N=${size.nodes} lost writes`);
      assert.equal(run.writes.latencyMs.count, 8);
      assert.ok((run.writes.latencyMs.p50 ?? -1) >= 0);
      // Nothing travels faster than the link: 5 ms per hop.
      assert.ok((run.writes.latencyMs.p50 ?? 0) >= 5, `${run.system} beat the lower bound`);
      assert.ok(run.writes.lowerBoundMs.p50 !== null && run.writes.lowerBoundMs.p50 >= 5);
      assert.ok(run.writes.updateBytes > 0);
      assert.equal(typeof run.writes.load.cpuPct, 'number');
    }
    const silo = size.systems[0];
    assert.ok(silo?.heal?.healToEqualMs !== null, 'silo healed the partition');
    assert.ok(size.sustained !== null);
  }

  const markdown = await readFile(files.markdown, 'utf8');
  assert.match(markdown, /^Machine: \d+ cores/);
  assert.match(markdown, /\| N \| system \| write→all p50 \/ p99 \/ max \(ms\)/);
  for (const n of [2, 3]) {
    for (const system of ['silo', 'floodsub', 'push-pull']) {
      assert.match(markdown, new RegExp(`^\\| ${n} \\| ${system} \\| \\d`, 'm'));
    }
  }

  const svg = await readFile(files.svg, 'utf8');
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg.trim(), /<\/svg>$/);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 6, 'one CDF per size and system');
  assert.doesNotMatch(svg, /NaN|undefined/);
});

test('a tiny recovery bench: every phase finishes, the report has its row', {
  timeout: 120_000,
}, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'silo-bench-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const report = await runRecovery({
    records: [30],
    batch: 7,
    latencyMs: 2,
    timeoutS: 60,
    seed: 1,
    log: () => {},
  });
  const row = report.rows[0];
  assert.ok(row);
  assert.ok(row.docBytes > 30 * 100, `the workloads document holds 30 specs (${row.docBytes} bytes)`);
  for (const name of ['write', 'follow', 'restart', 'restartEqual', 'catchUp'] as const)
    assert.equal(typeof row[name].ms, 'number', `${name} finished`);
  await writeRecoveryReport(dir, report);
  assert.match(await readFile(join(dir, 'recovery.md'), 'utf8'), /^\| 30 \| \d+ KB \| \d+ ms/m);
  assert.deepEqual(JSON.parse(await readFile(join(dir, 'recovery.json'), 'utf8')).rows[0].records, 30);
});

test('a tiny doc-growth bench: observed stays the size of its content, on disk too', {
  timeout: 120_000,
}, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'silo-bench-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const report = await runDocGrowth({ updates: 2000, workloads: 10, specUpdates: 200, log: () => {} });
  const o = report.observed;
  for (const [what, bytes] of [
    ['writer', o.writerDocBytes],
    ['replica', o.replicaDocBytes],
  ] as const) {
    assert.ok(bytes <= 2 * o.liveBytes + 512, `${what}: ${bytes} bytes for ${o.liveBytes} of content`);
  }
  assert.ok(o.logBytes <= 2 * o.writerDocBytes + 64 * 1024, `log ${o.logBytes} bytes`);
  // The workloads document still keeps history per spec rewrite (not compacted yet).
  assert.ok(report.workloadsDoc.docBytes > report.workloadsDoc.liveBytes);
  await writeDocGrowthReport(dir, report);
  assert.match(await readFile(join(dir, 'doc-growth.md'), 'utf8'), /^\| observed \| 2000 status \|/m);
  assert.equal(JSON.parse(await readFile(join(dir, 'doc-growth.json'), 'utf8')).updates, 2000);
});

test('npm run bench rejects bad arguments with exit 2', { timeout: 60_000 }, async () => {
  const unknown = await runBench(['nope']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown benchmark "nope"/);
  const noOut = await runBench(['convergence', '--nodes', '2']);
  assert.equal(noOut.code, 2);
  assert.match(noOut.stderr, /--out is required/);
  const badNodes = await runBench(['convergence', '--nodes', '2,x', '--out', '/tmp/never']);
  assert.equal(badNodes.code, 2);
  assert.match(badNodes.stderr, /--nodes must be a number, got "x"/);
  const badRecords = await runBench(['recovery', '--records', '0', '--out', '/tmp/never']);
  assert.equal(badRecords.code, 2);
  assert.match(badRecords.stderr, /--records must be > 0, got 0/);
  const badUpdates = await runBench(['doc-growth', '--updates', '0', '--out', '/tmp/never']);
  assert.equal(badUpdates.code, 2);
  assert.match(badUpdates.stderr, /--updates must be > 0, got 0/);
});

function runBench(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { cwd: ROOT });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}
