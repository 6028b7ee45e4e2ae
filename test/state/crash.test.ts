import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DOC_NAMES } from '../../src/state/names.js';
import { metricValue, openState, tempDir } from '../fixtures/state-store.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const writer = join(repoRoot, 'test/fixtures/state-writer.ts');

interface RoundResult {
  acked: string[];
  compactions: number;
  signal: NodeJS.Signals | null;
}

/**
 * Runs the writer until `killWhen` says so, then SIGKILLs it. Returns every
 * key the writer acknowledged (complete lines only: a line cut by the kill
 * was never fully acknowledged).
 */
function runRound(
  path: string,
  prefix: string,
  killWhen: { afterMs: number } | { atCompaction: number },
  children: Set<ChildProcess>,
): Promise<RoundResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', writer, path, 'node-a', prefix, '3'], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const acked: string[] = [];
  let compactions = 0;
  let pending = '';
  let stderr = '';
  const kill = () => child.kill('SIGKILL');
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  child.stdout?.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (line === 'ready') {
        if ('afterMs' in killWhen) setTimeout(kill, killWhen.afterMs);
      } else if (line.startsWith('compact ')) {
        compactions++;
        if ('atCompaction' in killWhen && compactions === killWhen.atCompaction) kill();
      } else {
        acked.push(line);
      }
    }
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      children.delete(child);
      if (signal !== 'SIGKILL') {
        reject(new Error(`writer exited with code ${code} signal ${signal} before the kill:\n${stderr}`));
        return;
      }
      resolve({ acked, compactions, signal });
    });
  });
}

test('SIGKILL at random moments, compaction included, loses no acknowledged write', async (t) => {
  const { dir, cleanup } = await tempDir('sigkill');
  const children = new Set<ChildProcess>();
  t.after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await cleanup();
  });
  const path = join(dir, 'store');
  const acked: string[] = [];
  const rounds = 8;
  for (let round = 0; round < rounds; round++) {
    // Even rounds: a random moment. Odd rounds: right after a compaction was announced
    // (with compactEvery 3 a third of all writes compact, so kills also land inside them).
    const killWhen =
      round % 2 === 0
        ? { afterMs: 100 + Math.floor(Math.random() * 800) }
        : { atCompaction: 1 + Math.floor(Math.random() * 60) };
    const result = await runRound(path, `r${round}`, killWhen, children);
    t.diagnostic(
      `round ${round}: ${JSON.stringify(killWhen)}, ${result.acked.length} acked, ${result.compactions} compactions`,
    );
    acked.push(...result.acked);
  }
  assert.ok(acked.length > rounds * 10, `writers acknowledged ${acked.length} writes`);

  const s = openState(path, { nodeId: 'node-a', compactEvery: 3 });
  t.after(() => s.state.close());
  const missing: string[] = [];
  for (const line of acked) {
    const [kind, key = ''] = line.split(' ');
    const present =
      kind === 'w'
        ? s.workloads.get(key) !== undefined
        : kind === 'o'
          ? s.observed.get('node-a', key) !== undefined
          : kind === 'd'
            ? s.enrollment.drainFlags().has(key)
            : false;
    if (!present) missing.push(line);
  }
  assert.deepEqual(missing, [], `${missing.length} of ${acked.length} acknowledged writes lost`);
  // lmdb's commits are atomic: a kill never leaves a torn entry behind.
  assert.equal(await metricValue(s.registry, 'silo_state_log_corrupt_entries_total'), 0);
  for (const doc of DOC_NAMES) assert.equal(s.log.quarantined(doc).length, 0);
});
