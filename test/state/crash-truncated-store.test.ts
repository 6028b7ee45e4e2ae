import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { workloadSpec } from '../fixtures/state-records.js';
import { openState, tempDir } from '../fixtures/state-store.js';

/**
 * A store file cut short (a disk full, a partial copy) at page boundaries
 * across the whole file: lmdb-js would crash the process on some cuts, so
 * each is opened in a child process (test/fixtures/open-store-child.ts).
 * About 15 child processes: kept out of the unit run (test/run.mjs).
 */
test('a data.mdb cut anywhere is refused or read whole, never a crash (each cut opened in a child process)', {
  timeout: 300_000,
}, async (t) => {
  const { dir, cleanup } = await tempDir('cuts');
  t.after(cleanup);
  const real = join(dir, 'real');
  const s = openState(real);
  for (let i = 0; i < 300; i++) s.workloads.put(workloadSpec(`w${i}`));
  // Deleting frees pages: LMDB then may leave the file shorter than its meta page's last page.
  for (let i = 0; i < 300; i += 3) s.workloads.delete(`w${i}`);
  await s.state.close();
  const realBytes = await readFile(join(real, 'data.mdb'));
  const page = realBytes.readUInt32LE(48);
  const pages = Math.floor(realBytes.byteLength / page);
  const cuts = new Set<number>();
  for (let n = 2; n < pages; n += Math.max(1, Math.floor(pages / 12))) cuts.add(n * page);
  for (let n = Math.max(2, pages - 3); n < pages; n++) cuts.add(n * page);
  cuts.add(realBytes.byteLength - 100);
  const outcomes: string[] = [];
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    const store = join(dir, `cut-${cut}`);
    await mkdir(store);
    await writeFile(join(store, 'data.mdb'), realBytes.subarray(0, cut));
    const child = spawnSync(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(new URL('../fixtures/open-store-child.ts', import.meta.url)), store],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(child.signal, null, `cut at ${cut} bytes killed the process: ${child.signal}`);
    assert.equal(child.status, 0, `cut at ${cut} bytes: ${child.stderr}`);
    const result = JSON.parse(child.stdout) as { workloads?: number; refused?: string };
    if (result.refused !== undefined) {
      assert.match(result.refused, /cut short/);
      assert.ok(result.refused.includes(store), result.refused);
      outcomes.push('refused');
    } else {
      // Only freed pages were cut: nothing the store holds was lost.
      assert.equal(result.workloads, 200, `cut at ${cut} bytes opened with ${result.workloads} workloads`);
      outcomes.push('whole');
    }
  }
  assert.ok(outcomes.includes('refused'), `some cut must lose pages in use: ${outcomes.join(' ')}`);
});
