import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadScenario, parseScenario, ScenarioError } from '../../sim/scenario/load.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const GOOD = `
name = "ok"
nodes = 4

[timing]
dead_after = "8s"

[[steps]]
at = "1s"
action = "partition"
groups = [["n1", "n2"], "rest"]

[[steps]]
at = "+500ms"
action = "heal"
`;

function problemsOf(text: string): string[] {
  try {
    parseScenario(text, 'bad.toml');
  } catch (err) {
    assert.ok(err instanceof ScenarioError, `expected a ScenarioError, got ${String(err)}`);
    assert.equal(err.file, 'bad.toml');
    assert.match(err.message, /^invalid scenario bad\.toml:/);
    return err.problems;
  }
  assert.fail('the scenario was accepted');
}

describe('scenario files', () => {
  test('a valid file parses into milliseconds, defaults filled in', () => {
    const scenario = parseScenario(GOOD, 'ok.toml');
    assert.equal(scenario.name, 'ok');
    assert.equal(scenario.nodes, 4);
    assert.equal(scenario.timing.deadAfterMs, 8000);
    assert.deepEqual(scenario.steps[0]?.at, { ms: 1000, relative: false });
    assert.deepEqual(scenario.steps[1]?.at, { ms: 500, relative: true });
    assert.deepEqual(scenario.expect.invariants, ['convergence', 'writes', 'safety', 'liveness', 'state']);
  });

  test('every shipped scenario is valid', async () => {
    const dir = join(ROOT, 'sim', 'scenarios');
    const files = (await readdir(dir)).filter((f) => f.endsWith('.toml'));
    assert.ok(files.length >= 11, `expected the shipped scenarios, found ${files.join(', ')}`);
    for (const file of files) await loadScenario(join(dir, file));
  });

  test('errors name the step, its time and action, and the field', () => {
    assert.deepEqual(problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "explode"\n`), [
      'step 1 (at "1s", action "explode"): action must be one of partition, heal, cut, link, loss, crash, restart, copy-data, join, skew, witnesses, epoch, write, writes, apply, drain, kill-service, wait, flap',
    ]);
    const [bad] = problemsOf(
      `nodes = 3\n[[steps]]\nat = "1s"\naction = "heal"\n[[steps]]\nat = "soon"\naction = "crash"\nnodes = "n1"\n`,
    );
    assert.match(bad ?? '', /^step 2 \(at "soon", action "crash"\): at: expected a duration/);
    assert.match(
      problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "writes"\nn = 10\n`)[0] ?? '',
      /^step 1 \(at "1s", action "writes"\): rate: /,
    );
    assert.match(
      problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "heal"\ncolour = "red"\n`)[0] ?? '',
      /step 1 .*Unrecognized key.*colour/,
    );
  });

  test('node selectors are checked: syntax, existence (joins counted), "rest" only in partitions', () => {
    assert.match(
      problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "crash"\nnodes = "node-7"\n`)[0] ?? '',
      /step 1 .*nodes: unknown node selector "node-7"/,
    );
    assert.match(
      problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "crash"\nnodes = "n4"\n`)[0] ?? '',
      /step 1 .*"n4" names a node that does not exist at this point \(n1\.\.n3\)/,
    );
    // After a join, n4 exists.
    parseScenario(
      `nodes = 3\n[[steps]]\nat = "1s"\naction = "join"\n[[steps]]\nat = "2s"\naction = "crash"\nnodes = "n4"\n`,
      'join.toml',
    );
    assert.match(
      problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "crash"\nnodes = "rest"\n`)[0] ?? '',
      /"rest" is only meaningful in partition groups/,
    );
  });

  test('membership: SWIM settings parse; bad ones are errors', () => {
    const swim = parseScenario(
      `nodes = 3\n[membership]\nliveness = "swim"\nprobe_interval = "500ms"\nprobe_timeout = "200ms"\n`,
      'swim.toml',
    );
    assert.deepEqual(swim.membership, {
      liveness: 'swim',
      params: { probeIntervalMs: 500, probeTimeoutMs: 200 },
    });
    assert.equal(parseScenario('nodes = 3\n', 'plain.toml').membership, undefined);
    assert.match(
      problemsOf(`nodes = 3\n[membership]\nswim = false\nliveness = "swim"\n`)[0] ?? '',
      /membership: liveness = "swim" needs swim = true/,
    );
    assert.match(
      problemsOf(`nodes = 3\n[membership]\nprobe_timeout = "2s"\n`)[0] ?? '',
      /membership: probe_timeout \(2000 ms\) must be below probe_interval \(1000 ms\)/,
    );
    assert.match(
      problemsOf(`nodes = 3\n[membership]\nliveness = "gut-feeling"\n`)[0] ?? '',
      /membership\.liveness/,
    );
  });

  test('copies of data dirs: copy-data and restart from_copy parse; a stop_timeout above max_stop_timeout is an error', () => {
    const steps =
      `nodes = 3\n[[steps]]\nat = "1s"\naction = "crash"\nnodes = "n2"\n` +
      `[[steps]]\nat = "+0s"\naction = "copy-data"\nnodes = "n2"\nname = "old"\n` +
      `[[steps]]\nat = "+1s"\naction = "restart"\nnodes = "n2"\nfrom_copy = "old"\n`;
    const parsed = parseScenario(steps, 'copies.toml');
    assert.deepEqual(
      parsed.steps.map((step) => step.action),
      ['crash', 'copy-data', 'restart'],
    );
    assert.equal((parsed.steps[2] as { from_copy?: string }).from_copy, 'old');
    assert.match(
      problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "copy-data"\nnodes = "n2"\n`)[0] ?? '',
      /step 1 .*name/,
    );
    assert.match(
      problemsOf(
        `nodes = 3\n[timing]\nmax_stop_timeout = "1s"\n[[steps]]\nat = "0s"\naction = "apply"\nworkload = { name = "db", stop_timeout = "5s" }\n`,
      )[0] ?? '',
      /workload stop_timeout \(5000 ms\) is above timing\.max_stop_timeout \(1000 ms\); the witnesses would refuse its lease/,
    );
  });

  test('witness lists and clock rates name existing nodes', () => {
    assert.match(
      problemsOf(`nodes = 3\nwitnesses = ["n1", "n9"]\n`)[0] ?? '',
      /witnesses: "n9" names a node that does not exist at this point \(n1\.\.n3\)/,
    );
    assert.match(
      problemsOf(`nodes = 3\nwitnesses = 5\n`)[0] ?? '',
      /witnesses: 5 witnesses but only 3 nodes/,
    );
    assert.match(problemsOf(`nodes = 3\n[clock_rates]\nn1 = 2.0\n`)[0] ?? '', /clock_rates/);
    assert.match(
      problemsOf(`nodes = 3\nimage_on = ["n4"]\n`)[0] ?? '',
      /image_on: "n4" names a node that does not exist at this point \(n1\.\.n3\)/,
    );
    assert.deepEqual(parseScenario(`nodes = 3\nimage_on = ["n3"]\n`, 'image.toml').imageOn, ['n3']);
    assert.match(
      problemsOf(`nodes = 3\n[clock_rates]\nnode-1 = 1.0\n`)[0] ?? '',
      /"node-1" is not a node name/,
    );
    assert.match(
      problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "witnesses"\nset = ["n1", "n1"]\n`)[0] ?? '',
      /step 1 .*set: a node is listed twice/,
    );
    assert.match(
      problemsOf(`nodes = 3\n[[steps]]\nat = "1s"\naction = "witnesses"\nset = []\n`)[0] ?? '',
      /step 1 .*set/,
    );
    const ok = parseScenario(
      `nodes = 4\nwitnesses = ["n1", "n2", "n3"]\n[clock_rates]\nn1 = 0.99\n[[steps]]\nat = "1s"\naction = "witnesses"\nset = ["n1", "n2", "n3", "n4"]\nvia = "n2"\n`,
      'w.toml',
    );
    assert.deepEqual(ok.witnesses, ['n1', 'n2', 'n3']);
    assert.deepEqual(ok.clockRates, { n1: 0.99 });
  });

  test('time order, timing rules, bad TOML and unknown top-level keys are errors', () => {
    assert.match(
      problemsOf(
        `nodes = 3\n[[steps]]\nat = "5s"\naction = "heal"\n[[steps]]\nat = "1s"\naction = "heal"\n`,
      )[0] ?? '',
      /step 2 .*steps must be in time order/,
    );
    assert.match(
      problemsOf(`nodes = 3\n[timing]\nfence_after = "10s"\ndead_after = "5s"\n`)[0] ?? '',
      /fence_after \(10000 ms\) must be below dead_after \(5000 ms\)/,
    );
    assert.match(problemsOf('nodes = = 3')[0] ?? '', /not valid TOML \(line 1, column/);
    assert.match(problemsOf('nodes = 3\nspeed = 9\n')[0] ?? '', /Unrecognized key.*speed/);
    assert.match(problemsOf('name = "x"\n')[0] ?? '', /^nodes: /);
  });

  test('npm run sim exits 2 with a clear message for a bad file, and for a missing one', {
    timeout: 60_000,
  }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'silo-sim-bad-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'bad.toml');
    await writeFile(file, 'nodes = 3\n[[steps]]\nat = "1s"\naction = "crash"\nnodes = "n9"\n');
    const bad = await runSim([file]);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, new RegExp(`invalid scenario ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:`));
    assert.match(
      bad.stderr,
      /step 1 \(at "1s", action "crash"\): nodes: "n9" names a node that does not exist/,
    );
    assert.equal(bad.stdout, '');
    const missing = await runSim([join(dir, 'nope.toml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read the file/);
    const noArgs = await runSim([]);
    assert.equal(noArgs.code, 2);
    assert.match(noArgs.stderr, /usage: npm run sim/);
  });
});

function runSim(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'sim/run.ts', ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
