import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { WorkloadRow } from '../../src/agent/api/views.js';
import { BIN, type ClusterNode, silo, startEnrolledAgents, tempDir, waitFor } from './helpers.js';

/**
 * `silo logs` across the cluster, end to end: two `silo agent` processes,
 * a service that only n2 may run (placement label), and the CLI talking to
 * n1 — whose control API fetches the log from n2 over `/silo/logs/1`.
 */

describe('silo logs across nodes', { timeout: 240_000 }, () => {
  let dir: string;
  let remove: () => Promise<void>;
  let orgDir: string;
  const nodes: ClusterNode[] = [];
  const n = (i: number): ClusterNode => nodes[i]!;
  const sock = (i = 0): string[] => ['--socket', n(i).socket];

  async function metricsOf(i: number): Promise<string> {
    return n(i).agent!.client.request<string>('GET', '/v1/metrics', { timeoutMs: 10_000 });
  }

  before(async () => {
    ({ dir, remove } = await tempDir('silo-logs-'));
    const cluster = await startEnrolledAgents({
      dir,
      org: 'logtest',
      cidr: '10.61.0.0/24',
      ids: ['n1', 'n2'],
      nodeInitArgs: (i) => [
        ...['--cpus', '1', '--memory-mb', '256', '--scratch-mb', '256'],
        ...(i === 1 ? ['--label', 'role=talker'] : []),
      ],
      config: () => ({ services: { sandbox: 'none' }, storage: { durability: 'nosync' } }),
    });
    orgDir = cluster.orgDir;
    nodes.push(...cluster.nodes);

    // A service that prints a numbered line every 200 ms; only n2 carries its label.
    const svc = join(dir, 'svc');
    await mkdir(join(svc, 'image', 'bin'), { recursive: true });
    await writeFile(
      join(svc, 'image', 'bin', 'talker'),
      '#!/bin/sh\ni=0\nwhile true; do i=$((i + 1)); echo "line $i"; sleep 0.2; done\n',
      { mode: 0o755 },
    );
    await writeFile(
      join(svc, 'manifest.toml'),
      [
        'name = "talker"',
        'image = "./image"',
        'command = "/bin/talker"',
        'scratch_class = "volatile"',
        '[constraints]',
        'role = "talker"',
        '',
      ].join('\n'),
    );
    const applied = await silo(['apply', join(svc, 'manifest.toml'), '--org', orgDir, ...sock(0)]);
    assert.equal(applied.code, 0, applied.stderr);
    // One that no node may run: a spec, but nothing holds it.
    await writeFile(
      join(svc, 'nowhere.toml'),
      [
        'name = "nowhere"',
        'image = "./image"',
        'command = "/bin/talker"',
        '[constraints]',
        'role = "none"',
        '',
      ].join('\n'),
    );
    const nowhere = await silo(['apply', join(svc, 'nowhere.toml'), '--org', orgDir, ...sock(0)]);
    assert.equal(nowhere.code, 0, nowhere.stderr);
    await waitFor(
      'talker running on n2, as n1 sees it',
      async () => {
        const res = await silo(['workloads', 'talker', '--json', ...sock(0)]);
        const row = JSON.parse(res.stdout) as WorkloadRow;
        return row.holder === 'n2' && row.phase === 'running';
      },
      120_000,
    );
    // Nothing runs it, yet `silo workloads` says why: placement's reason, first from n1's own
    // placement, then from the `not placed` report a node writes for it (both are right).
    // Until n1 has heard n2 the reason also names the missing witness quorum (also right
    // then), so this waits for the row without it: n2 alive, as above.
    const why = await waitFor('placement alone says why nowhere is pending', async () => {
      const row = JSON.parse(
        (await silo(['workloads', 'nowhere', '--json', ...sock(0)])).stdout,
      ) as WorkloadRow;
      return row.placement !== null && !row.reason?.includes('witness quorum') ? row : null;
    });
    assert.equal(why.placement, 'pending: no node matches constraints {role=none}');
    assert.match(why.reason ?? '', /^(not placed: )?no node matches constraints \{role=none\}$/);
    const table = await silo(['workloads', ...sock(0)]);
    assert.match(table.stdout, /^nowhere .* no node matches constraints \{role=none\}/m);
  });

  after(async () => {
    for (const node of nodes) await node.agent?.stop();
    await remove?.();
  });

  test("n1's API serves the log of a workload held by n2", async () => {
    const res = await waitFor('a few lines logged', async () => {
      const r = await silo(['logs', 'talker', '--tail', '3', ...sock(0)]);
      return r.code === 0 && r.stdout.split('\n').length === 4 ? r : null;
    });
    assert.match(res.stdout, /^line \d+\nline \d+\nline \d+\n$/);
    const json = await silo(['logs', 'talker', '-n', '2', '--json', ...sock(0)]);
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as { workload: string; lines: string[] };
    assert.equal(parsed.workload, 'talker');
    assert.equal(parsed.lines.length, 2);
    // --node forces a node: n2's own copy through n2's id works from n1; n1 has none.
    const forced = await silo(['logs', 'talker', '--node', 'n2', '--tail', '1', ...sock(0)]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /^line \d+\n$/);
    const onN1 = await silo(['logs', 'talker', '--node', 'n1', ...sock(0)]);
    assert.equal(onN1.code, 5);
    assert.match(onN1.stderr, /^silo: no log of "talker" on node n1/);
  });

  test('-f across nodes receives lines written after the request; Ctrl-C ends it on both nodes', async () => {
    const child = spawn(process.execPath, [BIN, 'logs', 'talker', '-f', '--tail', '1', ...sock(0)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    try {
      let out = '';
      const numbers = (): number[] => [...out.matchAll(/line (\d+)\n/g)].map((m) => Number(m[1]));
      const got = new Promise<void>((resolve) => {
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const seen = numbers();
          // The tail was one line; two more numbers after it were written after the request.
          if (seen.length >= 3) resolve();
        });
      });
      await got;
      const seen = numbers();
      assert.deepEqual(
        seen.slice(0, 3),
        [seen[0]!, seen[0]! + 1, seen[0]! + 2],
        'consecutive lines, nothing lost',
      );
      await waitFor('n2 serves the stream', async () =>
        /silo_log_streams_serving 1\b/.test(await metricsOf(1)),
      );
      child.kill('SIGINT');
      assert.equal(await exited, 0);
      await waitFor('n2 stops serving once the CLI is gone', async () =>
        /silo_log_streams_serving 0\b/.test(await metricsOf(1)),
      );
    } finally {
      clearTimeout(timer);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  test("-f follows a workload that moves (drain): the note on stderr, then the new holder's lines", async () => {
    const svc = join(dir, 'svc');
    const holderOf = async (): Promise<string | null> => {
      const row = JSON.parse(
        (await silo(['workloads', 'talker', '--json', ...sock(0)])).stdout,
      ) as WorkloadRow;
      return row.phase === 'running' ? row.holder : null;
    };
    const child = spawn(process.execPath, [BIN, 'logs', 'talker', '-f', '--tail', '1', ...sock(0)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    try {
      await waitFor("the follow prints n2's lines", async () => /line \d+\n/.test(out));
      // Any node may run it now; draining n2 moves it to n1.
      await writeFile(
        join(svc, 'anywhere.toml'),
        [
          'name = "talker"',
          'image = "./image"',
          'command = "/bin/talker"',
          'scratch_class = "volatile"',
          '',
        ].join('\n'),
      );
      const relaxed = await silo(['apply', join(svc, 'anywhere.toml'), '--org', orgDir, ...sock(0)]);
      assert.equal(relaxed.code, 0, relaxed.stderr);
      assert.equal((await silo(['drain', 'n2', ...sock(0)])).code, 0);
      await waitFor('talker runs on n1', async () => (await holderOf()) === 'n1', 120_000);
      await waitFor(
        'the CLI says it follows the move',
        async () => /moved from n2 to n1; following it there/.test(err),
        60_000,
      );
      const linesBefore = out.length;
      await waitFor(
        'lines from n1 arrive on the same command',
        async () => {
          // An exit here is the failure to report (with what the command said), not a timeout.
          if (child.exitCode !== null) return `exited ${child.exitCode}: ${err}`;
          return /line \d+\n/.test(out.slice(linesBefore));
        },
        60_000,
      );
      assert.equal(child.exitCode, null, `the follow ended: ${err}`);
      assert.equal(child.exitCode, null, 'the follow is still running');
      child.kill('SIGINT');
      assert.equal(await exited, 0);
    } finally {
      clearTimeout(timer);
      if (child.exitCode === null) child.kill('SIGKILL');
      // Back as it was for the tests below: only n2 may run it.
      await silo(['undrain', 'n2', ...sock(0)]);
      await silo(['apply', join(svc, 'manifest.toml'), '--org', orgDir, ...sock(0)]);
      await waitFor('talker back on n2', async () => (await holderOf()) === 'n2', 120_000);
    }
  });

  test('bad input: unknown workload or node exits 5, a not-held workload 5, a bad --tail 2', async () => {
    const ghost = await silo(['logs', 'ghost', ...sock(0)]);
    assert.equal(ghost.code, 5);
    assert.equal(ghost.stderr, 'silo: unknown workload "ghost"\n');
    const badNode = await silo(['logs', 'talker', '--node', 'n9', ...sock(0)]);
    assert.equal(badNode.code, 5);
    assert.match(badNode.stderr, /unknown node "n9"/);
    const notHeld = await silo(['logs', 'nowhere', ...sock(0)]);
    assert.equal(notHeld.code, 5);
    // No node may run it: either no node reported on it (not_held), or one reported a non-holding
    // phase and has no log of it. Both are "nothing to show" (exit 5), never a hang or a 5xx.
    assert.match(notHeld.stderr, /"nowhere" is not running on any node|no log of "nowhere" on node n[12]/);
    for (const bad of ['abc', '-1', '100001', '1.5']) {
      const res = await silo(['logs', 'talker', '--tail', bad, ...sock(0)]);
      assert.equal(res.code, 2, `--tail ${bad}: ${res.stderr}`);
      assert.match(
        res.stderr,
        /--tail <n>' argument '.*' is invalid\. expected a whole number of lines from 0 to 100000/,
      );
    }
    const badNodeId = await silo(['logs', 'talker', '--node', 'Not_A_Node', ...sock(0)]);
    assert.equal(badNodeId.code, 3);
    assert.match(badNodeId.stderr, /invalid logs query: node/);
  });

  test("/v1/metrics has libp2p's own metrics besides silo's", async () => {
    const text = await metricsOf(0);
    assert.match(text, /^silo_/m);
    assert.match(text, /^libp2p_connection_manager_connections\{[^}]*\} \d+/m);
    assert.match(text, /^libp2p_data_transfer_bytes_total\{/m);
  });

  test('a holder that cannot be reached exits 4 with its name', async () => {
    await n(1).agent!.stop();
    const res = await waitFor('n1 reports n2 unreachable', async () => {
      const r = await silo(['logs', 'talker', ...sock(0)]);
      return r.code === 4 ? r : null;
    });
    assert.match(res.stderr, /^silo: cannot read the log from node n2 \(unreachable\)/);
  });
});
