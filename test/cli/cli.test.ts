import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NodeRow, WorkloadRow } from '../../src/agent/api/views.js';
import {
  agentToml,
  BIN,
  type ClusterNode,
  duplicateTopLevelKeys,
  silo,
  siloProcess,
  startEnrolledAgents,
  tempDir,
  waitFor,
} from './helpers.js';

/**
 * The `silo` command end to end: a cluster of two agents, each a `silo agent`
 * child process, set up with the CLI's own org/node/ca commands; then every
 * command's happy path, --json, and bad input with its documented exit code.
 */

const TOKEN = 'cli-test-token-0123456789';

describe('silo CLI against running agents', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let orgDir: string;
  let apiPort: number;
  let orgJson: { org: { name: string; caPublicKey: string } };
  const nodes: ClusterNode[] = [];
  const n = (i: number): ClusterNode => nodes[i]!;
  const sock = (i = 0): string[] => ['--socket', n(i).socket];

  /**
   * Digests of the operator-written documents. The observed document is left
   * out: the agents' reconcilers update it in the background (statuses,
   * checkpoints, scratch usage) whatever the CLI does.
   */
  async function digests(i = 0): Promise<Record<string, string>> {
    const res = await silo(['status', '--json', ...sock(i)]);
    assert.equal(res.code, 0, res.stderr);
    const { enrollment, workloads } = (JSON.parse(res.stdout) as { digests: Record<string, string> }).digests;
    return { enrollment: enrollment!, workloads: workloads! };
  }

  before(async () => {
    ({ dir, remove } = await tempDir());
    await writeFile(join(dir, 'token'), `${TOKEN}\n`, { mode: 0o600 });
    const cluster = await startEnrolledAgents({
      dir,
      org: 'clitest',
      cidr: '10.60.0.0/24',
      ids: ['n1', 'n2'],
      nodeInitArgs: () => ['--cpus', '1', '--memory-mb', '256', '--scratch-mb', '512', '--label', 'zone=a'],
      extraPorts: 1,
      config: (i, [port]): Record<string, Record<string, unknown>> =>
        i === 0 ? { api: { tcp: `127.0.0.1:${port}`, token_file: join(dir, 'token') } } : {},
    });
    orgDir = cluster.orgDir;
    orgJson = JSON.parse(cluster.orgInit.stdout);
    apiPort = cluster.extraPorts[0]!;
    nodes.push(...cluster.nodes);
    // n2 was signed with n1 as its seed and registered with the running n1.
    assert.equal((JSON.parse(cluster.laterSigns[0]!.stdout) as { registered: boolean }).registered, true);
    await waitFor('both nodes alive and converged', async () => {
      const rows = await Promise.all(
        [0, 1].map(async (i) => {
          const res = await silo(['nodes', '--json', ...sock(i)]);
          return (JSON.parse(res.stdout) as { nodes: NodeRow[] }).nodes;
        }),
      );
      const [a, b] = await Promise.all([digests(0), digests(1)]);
      return (
        rows.every((list) => list.length === 2 && list.every((r) => r.liveness === 'alive')) &&
        JSON.stringify(a) === JSON.stringify(b)
      );
    });
  });

  after(async () => {
    for (const node of nodes) await node.agent?.stop();
    await remove?.();
  });

  test('org init / node init / ca sign wrote what the agents run on', async () => {
    assert.equal(orgJson.org.name, 'clitest');
    const bundle = JSON.parse(await readFile(join(n(1).identityDir, 'enrollment.json'), 'utf8'));
    assert.equal(bundle.caPublicKey, orgJson.org.caPublicKey);
    assert.deepEqual(bundle.seedPeers, [`/ip4/127.0.0.1/tcp/${n(0).port}/p2p/${n(0).peerId}`]);
    assert.equal(bundle.record.overlayIp, '10.60.0.2', 'second node gets the next overlay IP');
    assert.ok(existsSync(join(orgDir, 'issued', 'n2.json')));
  });

  test('identity and CA commands refuse bad input with exit code 3 (2 for a bad flag value)', async () => {
    const again = await silo(['org', 'init', '--dir', orgDir, '--name', 'clitest']);
    assert.equal(again.code, 3);
    assert.match(again.stderr, /refusing to overwrite/);
    const badCidr = await silo([
      'org',
      'init',
      '--dir',
      join(dir, 'org2'),
      '--name',
      'x',
      '--cidr',
      '10.0.0.1/33',
    ]);
    assert.equal(badCidr.code, 3);
    const org3 = ['org', 'init', '--dir', join(dir, 'org3'), '--name', 'x', '--cidr', '10.9.0.0/16'];
    const badRange = await silo([...org3, '--service-range', '10.8.0.0/24']);
    assert.equal(badRange.code, 3);
    assert.match(
      badRange.stderr,
      /service range 10\.8\.0\.0\/24 must be a smaller block inside the overlay CIDR 10\.9\.0\.0\/16/,
    );
    const badSuffix = await silo([...org3, '--dns-suffix', 'Not A Suffix']);
    assert.equal(badSuffix.code, 3);
    assert.match(badSuffix.stderr, /DNS suffix: dot-separated labels/);
    const good = await silo([...org3, '--service-range', '10.9.128.0/20', '--dns-suffix', 'corp', '--json']);
    assert.equal(good.code, 0, good.stderr);
    const created = JSON.parse(good.stdout) as { org: { serviceRange: string; dnsSuffix: string } };
    assert.deepEqual([created.org.serviceRange, created.org.dnsSuffix], ['10.9.128.0/20', 'corp']);
    const badId = await silo(['node', 'init', '--dir', join(dir, 'bad'), '--id', 'Bad_Id']);
    assert.equal(badId.code, 3);
    assert.match(badId.stderr, /invalid node id "Bad_Id"/);
    const badCpus = await silo(['node', 'init', '--dir', join(dir, 'bad'), '--id', 'x', '--cpus', 'many']);
    assert.equal(badCpus.code, 2);
    assert.match(badCpus.stderr, /--cpus/);
    await writeFile(join(dir, 'garbage.json'), '{"nodeId": ');
    const badRequest = await silo([
      'ca',
      'sign',
      '--org',
      orgDir,
      join(dir, 'garbage.json'),
      '-o',
      join(dir, 'b.json'),
    ]);
    assert.equal(badRequest.code, 3);
    assert.match(badRequest.stderr, /garbage\.json: not JSON/);
    assert.ok(!existsSync(join(dir, 'b.json')), 'nothing written');
    const noOrg = await silo([
      'ca',
      'sign',
      '--org',
      join(dir, 'none'),
      join(n(0).identityDir, 'request.json'),
      '-o',
      join(dir, 'b.json'),
    ]);
    assert.equal(noOrg.code, 3);
    assert.match(noOrg.stderr, /org info is missing/);
    // A request changed after `node init` signed it (here: another WireGuard key) is refused.
    const genuine = JSON.parse(await readFile(join(n(0).identityDir, 'request.json'), 'utf8'));
    // The 43rd character of a 32-byte key carries 4 bits (A, E, I, …): 'B' would make the key malformed rather
    // than another key, and the request would be refused for that instead (1 run in 16).
    const swappedKey = `${genuine.wgPublicKey.slice(0, 42)}${genuine.wgPublicKey[42] === 'A' ? 'E' : 'A'}=`;
    await writeFile(join(dir, 'altered.json'), JSON.stringify({ ...genuine, wgPublicKey: swappedKey }));
    const altered = await silo([
      'ca',
      'sign',
      '--org',
      orgDir,
      join(dir, 'altered.json'),
      '-o',
      join(dir, 'b.json'),
    ]);
    assert.equal(altered.code, 3);
    assert.match(altered.stderr, /altered\.json: .*proof does not verify under the key of peerId/);
    assert.ok(!existsSync(join(dir, 'b.json')), 'nothing written');
  });

  test('status, nodes: human and --json (real binary: one JSON document, exit 0)', async () => {
    const human = await silo(['status', ...sock()]);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /node {9}n1 \(org clitest\)/);
    assert.match(human.stdout, /n2 {2,}alive/);
    // Ownership health, not only document convergence: both nodes are witnesses (the first three signed).
    assert.match(human.stdout, /^liveness {5}swim$/m);
    assert.match(human.stdout, /^witnesses {4}v\d+: 2 of 2 alive, quorum 2: ok$/m);

    const json = await siloProcess(['status', '--json', ...sock()]);
    assert.equal(json.code, 0, json.stderr);
    const status = JSON.parse(json.stdout) as { nodeId: string; convergence: { converged: boolean } };
    assert.equal(status.nodeId, 'n1');
    assert.equal(typeof status.convergence.converged, 'boolean');

    // SWIM membership (on by default, docs/membership.md) sees the other agent alive too.
    const rows = await waitFor('n2 sees n1 alive through SWIM', async () => {
      const parsed = JSON.parse((await silo(['nodes', '--json', ...sock(1)])).stdout) as { nodes: NodeRow[] };
      const n1 = parsed.nodes.find((r) => r.nodeId === 'n1');
      return n1?.swim?.state === 'alive' && n1.swim.incarnation >= 0 ? parsed : null;
    });
    assert.equal(rows.nodes.find((r) => r.nodeId === 'n2')?.swim?.state, 'alive');
    const list = await silo(['nodes', ...sock(1)]);
    assert.equal(list.code, 0);
    assert.match(list.stdout, /^NODE +LIVENESS +SWIM/);
    assert.match(list.stdout, /n2\* +alive +alive +10\.60\.0\.2/);
    assert.deepEqual(
      rows.nodes.map((r) => [r.nodeId, r.liveness, r.self]),
      [
        ['n1', 'alive', false],
        ['n2', 'alive', true],
      ],
    );
  });

  test('apply builds, signs and uploads the image, writes the spec; every node sees it', async () => {
    const svc = join(dir, 'svc');
    await mkdir(join(svc, 'image', 'bin'), { recursive: true });
    await writeFile(join(svc, 'image', 'bin', 'counter'), '#!/bin/sh\nwhile true; do sleep 1; done\n', {
      mode: 0o755,
    });
    await writeFile(
      join(svc, 'manifest.toml'),
      'name = "counter"\nimage = "./image"\ncommand = "/bin/counter"\nscratch_class = "volatile"\n',
    );
    const applied = await silo(['apply', join(svc, 'manifest.toml'), '--org', orgDir, '--json', ...sock()]);
    assert.equal(applied.code, 0, applied.stderr);
    const result = JSON.parse(applied.stdout) as {
      name: string;
      revision: number;
      changed: boolean;
      uploaded: boolean;
      imageDigest: string;
    };
    assert.deepEqual(
      [result.name, result.revision, result.changed, result.uploaded],
      ['counter', 1, true, true],
    );
    assert.ok(
      existsSync(join(n(0).dir, 'images', 'sha256', result.imageDigest.slice(7))),
      'image in the agent store',
    );

    const again = await silo(['apply', join(svc, 'manifest.toml'), '--org', orgDir, ...sock()]);
    assert.equal(again.code, 0);
    assert.equal(again.stdout, '"counter" unchanged (revision 1)\n');

    // A tar image.
    const built = await silo(['image', 'build', join(svc, 'image'), '-o', join(svc, 'counter.tar')]);
    assert.equal(built.code, 0);
    assert.equal(built.stdout.trim(), result.imageDigest, 'image build is reproducible');
    await writeFile(
      join(svc, 'tar.toml'),
      'name = "counter-tar"\nimage = "counter.tar"\ncommand = "/bin/counter"\n',
    );
    const tarApplied = await silo(['apply', join(svc, 'tar.toml'), '--org', orgDir, ...sock()]);
    assert.equal(tarApplied.code, 0, tarApplied.stderr);
    assert.match(tarApplied.stdout, /applied "counter-tar" \(revision 1/);
    // --image replaces the manifest's image: the same tree builds to the same digest, so nothing changes.
    const override = await silo([
      'apply',
      join(svc, 'tar.toml'),
      '--image',
      join(svc, 'image'),
      '--org',
      orgDir,
      ...sock(),
    ]);
    assert.equal(override.code, 0, override.stderr);
    assert.equal(override.stdout, '"counter-tar" unchanged (revision 1)\n');

    const list = await silo(['workloads', ...sock()]);
    // The agents' reconcilers act on it at once, so its phase and holder move on by themselves.
    assert.match(
      list.stdout,
      /counter +1 +(pending|pulling|starting|running) +\S+ +(-|\d+) +(-|[\d.]+) +\d+ +image@/,
    );
    const detail = JSON.parse(
      (await silo(['workloads', 'counter', '--json', ...sock()])).stdout,
    ) as WorkloadRow;
    assert.equal(detail.spec.command, '/bin/counter');
    assert.equal(detail.spec.scratchClass, 'volatile');
    await waitFor('the spec on n2', async () => {
      const res = await silo(['workloads', '--json', ...sock(1)]);
      const rows = (JSON.parse(res.stdout) as { workloads: WorkloadRow[] }).workloads;
      return rows.some((w) => w.name === 'counter' && w.spec.imageDigest === result.imageDigest);
    });
  });

  test('a bad manifest exits 3 with the precise problem and changes nothing', async () => {
    const before = await digests();
    const file = join(dir, 'bad.toml');
    await writeFile(file, 'name = "bad"\nimage = "./image"\ncommand = "/x"\nmemroy_mb = 64\n');
    const res = await silo(['apply', file, '--org', orgDir, ...sock()]);
    assert.equal(res.code, 3);
    assert.equal(res.stderr, `silo: ${file}: memroy_mb: unknown field (did you mean "memory_mb"?)\n`);
    assert.equal(res.stdout, '');
    const noImage = join(dir, 'noimage.toml');
    await writeFile(noImage, 'name = "bad"\nimage = "./missing"\ncommand = "/x"\n');
    const missing = await silo(['apply', noImage, '--org', orgDir, ...sock()]);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /image: .*missing does not exist/);
    assert.match(missing.stderr, /build it with `silo image build <dir> -o <file\.tar>`, or pass --image/);
    // The example's layout: image = "./app.tar" not built yet, its directory beside it: the hint names both.
    const layout = join(dir, 'unbuilt');
    await mkdir(join(layout, 'image'), { recursive: true });
    await writeFile(join(layout, 'manifest.toml'), 'name = "unbuilt"\nimage = "./app.tar"\ncommand = "/x"\n');
    const unbuilt = await silo(['apply', join(layout, 'manifest.toml'), '--org', orgDir, ...sock()]);
    assert.equal(unbuilt.code, 3);
    assert.ok(
      unbuilt.stderr.includes(
        `build it with \`silo image build ${join(layout, 'image')} -o ${join(layout, 'app.tar')}\`, or pass --image ${join(layout, 'image')}`,
      ),
      unbuilt.stderr,
    );
    assert.deepEqual(await digests(), before);
  });

  test('usage errors exit 2 (real binary)', async () => {
    const flag = await siloProcess(['status', '--bogus', ...sock()]);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /^silo: unknown option '--bogus'/);
    const command = await siloProcess(['frobnicate']);
    assert.equal(command.code, 2);
    assert.match(command.stderr, /unknown command 'frobnicate'/);
    const missing = await silo(['apply', join(dir, 'x.toml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /required option '--org <orgdir>'/);
  });

  test('an unreachable agent exits 4 with a hint (real binary)', async () => {
    const socket = join(dir, 'nobody.sock');
    const res = await siloProcess(['workloads', '--socket', socket]);
    assert.equal(res.code, 4);
    assert.equal(
      res.stderr,
      `silo: cannot reach the agent (ENOENT): is the agent running? socket ${socket}\n`,
    );
    assert.ok(!res.stderr.includes('    at '), 'no stack trace');
    const viaEnv = await siloProcess(['status'], { SILO_SOCKET: socket });
    assert.equal(viaEnv.code, 4);
    assert.match(viaEnv.stderr, /nobody\.sock/);
  });

  test('with --json, errors are one JSON document on stderr too (real binary)', async () => {
    const socket = join(dir, 'nobody.sock');
    const unreachable = await siloProcess(['workloads', '--json', '--socket', socket]);
    assert.equal(unreachable.code, 4);
    assert.equal(unreachable.stdout, '');
    assert.deepEqual(JSON.parse(unreachable.stderr), {
      error: {
        message: `cannot reach the agent (ENOENT): is the agent running? socket ${socket}`,
        exitCode: 4,
      },
    });
    const usage = await siloProcess(['status', '--json', '--bogus', ...sock()]);
    assert.equal(usage.code, 2);
    const parsed = JSON.parse(usage.stderr) as { error: { message: string; exitCode: number } };
    assert.match(parsed.error.message, /unknown option '--bogus'/);
    assert.equal(parsed.error.exitCode, 2);
  });

  test('loopback TCP: the right token works, a wrong one exits 6', async () => {
    const url = `http://127.0.0.1:${apiPort}`;
    const ok = await silo(['status', '--json', '--url', url, '--token-file', join(dir, 'token')]);
    assert.equal(ok.code, 0, ok.stderr);
    await writeFile(join(dir, 'wrong'), 'not-the-token\n');
    const before = await digests();
    const wrong = await silo(['drain', 'n2', '--url', url, '--token-file', join(dir, 'wrong')]);
    assert.equal(wrong.code, 6);
    assert.match(wrong.stderr, /^silo: unauthorized: missing or wrong bearer token/);
    const none = await silo(['status', '--url', url]);
    assert.equal(none.code, 6);
    assert.deepEqual(await digests(), before, 'nothing changed');
  });

  test('unknown workloads and nodes exit 5 and change nothing', async () => {
    const before = await digests();
    for (const args of [
      ['delete', 'ghost'],
      ['workloads', 'ghost'],
      ['logs', 'ghost'],
      ['drain', 'ghost'],
    ]) {
      const res = await silo([...args, ...sock()]);
      assert.equal(res.code, 5, `${args.join(' ')}: ${res.stderr}`);
      assert.match(res.stderr, /^silo: unknown (workload|node) "ghost"/);
    }
    const badName = await silo(['delete', 'Not A Name', ...sock()]);
    assert.equal(badName.code, 3);
    assert.deepEqual(await digests(), before);
  });

  test('drain and undrain reach every node', async () => {
    const drained = await silo(['drain', 'n2', '--by', 'tester', '--json', ...sock()]);
    assert.equal(drained.code, 0);
    assert.equal((JSON.parse(drained.stdout) as { draining: boolean }).draining, true);
    await waitFor('drain flag on n2', async () => {
      const rows = (JSON.parse((await silo(['nodes', '--json', ...sock(1)])).stdout) as { nodes: NodeRow[] })
        .nodes;
      return rows.find((r) => r.nodeId === 'n2')?.drain?.by === 'tester';
    });
    // Every node draining: nowhere to go, so `counter` stays where it runs, and its row says why.
    // First it runs on n1 (n2 drains); a drain of n1 before that would leave it nowhere, not "staying".
    await waitFor(
      'counter running on n1',
      async () => {
        const row = JSON.parse(
          (await silo(['workloads', 'counter', '--json', ...sock()])).stdout,
        ) as WorkloadRow;
        return row.holder === 'n1' && row.phase === 'running';
      },
      120_000,
    );
    assert.equal((await silo(['drain', 'n1', ...sock()])).code, 0);
    let seen: WorkloadRow | null = null;
    const stays = await waitFor('counter says it stays on its drained holder', async () => {
      const row = JSON.parse(
        (await silo(['workloads', 'counter', '--json', ...sock()])).stdout,
      ) as WorkloadRow;
      seen = row;
      return row.holder !== null && row.reason?.startsWith('placement has no node for it') ? row : null;
    }).catch((err: unknown) => {
      throw new Error(
        `${(err as Error).message}; last row: ${JSON.stringify({ ...(seen ?? {}), spec: null })}`,
      );
    });
    assert.match(
      stays.reason ?? '',
      new RegExp(
        `^placement has no node for it \\(it stays on ${stays.holder}\\): no alive, non-draining node .*; holder ${stays.holder} is draining$`,
      ),
    );
    assert.equal((await silo(['undrain', 'n1', ...sock()])).code, 0);
    const undrained = await silo(['undrain', 'n2', ...sock(1)]);
    assert.equal(undrained.stdout, 'node "n2" is no longer draining\n');
  });

  test('logs: tail, --json, and -f follows the file (real binary, Ctrl-C ends it)', async () => {
    // A log with no spec and no holder (a service deleted earlier): the node that has the file serves it.
    const logs = join(n(0).dir, 'services', 'oldsvc', 'logs');
    await mkdir(logs, { recursive: true });
    await writeFile(join(logs, 'current'), 'a\nb\nc\n');
    assert.equal((await silo(['logs', 'oldsvc', ...sock()])).stdout, 'a\nb\nc\n');
    assert.equal((await silo(['logs', 'oldsvc', '-n', '1', ...sock()])).stdout, 'c\n');
    assert.deepEqual(JSON.parse((await silo(['logs', 'oldsvc', '--json', ...sock()])).stdout), {
      workload: 'oldsvc',
      lines: ['a', 'b', 'c'],
    });
    const elsewhere = await silo(['logs', 'oldsvc', ...sock(1)]);
    assert.equal(elsewhere.code, 5);
    assert.match(elsewhere.stderr, /unknown workload "oldsvc"/);
    // --node reads another node's file (over /silo/logs/1).
    assert.equal((await silo(['logs', 'oldsvc', '--node', 'n1', ...sock(1)])).stdout, 'a\nb\nc\n');
    assert.equal((await silo(['logs', 'oldsvc', '-f', '--json', ...sock()])).code, 2);

    const child = spawn(process.execPath, [BIN, 'logs', 'oldsvc', '-f', '-n', '1', ...sock()], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let appended = false;
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const followed = new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (!appended && out.includes('c\n')) {
          appended = true;
          void appendFile(join(logs, 'current'), 'd\n');
        }
        if (out.includes('d\n')) resolve();
      });
      // A follow that ends before the new line arrived fails here instead of hanging the file.
      void exited.then((code) =>
        reject(new Error(`logs -f exited ${code} early: ${JSON.stringify({ out, err })}`)),
      );
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    await followed;
    child.kill('SIGINT');
    assert.equal(await exited, 0);
    clearTimeout(timer);
    assert.equal(out, 'c\nd\n');
  });

  test('image build and image sign', async () => {
    const src = join(dir, 'img');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'hello'), 'hi\n');
    const built = await silo(['image', 'build', src, '-o', join(dir, 'img.tar'), '--json']);
    assert.equal(built.code, 0);
    const { digest } = JSON.parse(built.stdout) as { digest: string };
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);
    const signed = await silo(['image', 'sign', '--org', orgDir, digest, '--json']);
    assert.equal(signed.code, 0);
    assert.match((JSON.parse(signed.stdout) as { signature: string }).signature, /^[A-Za-z0-9+/]{86}==$/);
    assert.equal((await silo(['image', 'sign', '--org', orgDir, 'sha256:123'])).code, 3);
    assert.equal((await silo(['image', 'build', join(dir, 'nope'), '-o', join(dir, 'x.tar')])).code, 3);

    // push: the agent stores it (verified against the CA signature) and reports it present.
    const pushed = await silo(['image', 'push', join(dir, 'img.tar'), '--org', orgDir, '--json', ...sock()]);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.equal((JSON.parse(pushed.stdout) as { digest: string }).digest, digest);
    await n(0).agent!.client.request('GET', `/v1/images/${digest}`, { timeoutMs: 5000 });
    assert.equal((await silo(['image', 'push', join(dir, 'nope.tar'), '--org', orgDir, ...sock()])).code, 3);
  });

  test('delete removes a workload everywhere', async () => {
    const res = await silo(['delete', 'counter-tar', ...sock()]);
    assert.equal(res.code, 0);
    assert.equal(res.stdout, 'deleted "counter-tar"\n');
    await waitFor('deletion on n2', async () => {
      const rows = (
        JSON.parse((await silo(['workloads', '--json', ...sock(1)])).stdout) as { workloads: WorkloadRow[] }
      ).workloads;
      return !rows.some((w) => w.name === 'counter-tar');
    });
  });

  test('the agent refuses to start without identity or bundle (exit 3, names the fix)', async () => {
    const base = join(dir, 'n3');
    const config = join(base, 'agent.toml');
    await mkdir(base, { recursive: true });
    await writeFile(
      config,
      agentToml({
        org: 'clitest',
        node: { id: 'n3', data_dir: base },
        api: { socket: join(base, 's.sock') },
      }),
    );
    const noIdentity = await siloProcess(['agent', '--config', config]);
    assert.equal(noIdentity.code, 3);
    assert.match(
      noIdentity.stderr,
      /no node identity in .*identity .*`silo node init --dir .*identity --id n3`/,
    );
    assert.equal((await silo(['node', 'init', '--dir', join(base, 'identity'), '--id', 'n3'])).code, 0);
    const noBundle = await siloProcess(['agent', '--config', config]);
    assert.equal(noBundle.code, 3);
    assert.match(
      noBundle.stderr,
      /node "n3" is not enrolled: .*enrollment\.json is missing.*`silo ca sign --org <orgdir>/,
    );
    await writeFile(config, 'org = "clitest"\n[node]\nid = "n3"\nbogus = 1\n');
    const badConfig = await siloProcess(['agent', '--config', config]);
    assert.equal(badConfig.code, 3);
    assert.match(badConfig.stderr, /invalid configuration: node: unknown key\(s\) "bogus"/);
  });

  test('ca revoke: the agent verifies and records the signed revocation', async () => {
    const res = await silo([
      'ca',
      'revoke',
      '--org',
      orgDir,
      'n2',
      '--reason',
      'retired',
      '--json',
      ...sock(),
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal((JSON.parse(res.stdout) as { changed: boolean }).changed, true);
    const rows = (JSON.parse((await silo(['nodes', '--json', ...sock()])).stdout) as { nodes: NodeRow[] })
      .nodes;
    assert.equal(rows.find((r) => r.nodeId === 'n2')?.revoked?.reason, 'retired');
    assert.equal((await silo(['ca', 'revoke', '--org', orgDir, 'ghost', ...sock()])).code, 5);
  });

  test('the revoked node learns it: status says so, writes exit 7, one log line instead of retries', async () => {
    await waitFor('n2 knows it was revoked', async () => {
      const res = await silo(['status', '--json', ...sock(1)]);
      return (JSON.parse(res.stdout) as { revoked: { reason: string } | null }).revoked?.reason === 'retired';
    });
    const human = await silo(['status', ...sock(1)]);
    assert.match(human.stdout, /REVOKED +at .*\(retired\): this node belongs to no org now/);
    const write = await silo(['drain', 'n1', ...sock(1)]);
    assert.equal(write.code, 7, write.stderr);
    assert.match(write.stderr, /this node was revoked by the org CA at .* \(retired\): it takes no writes/);
    const json = await silo(['status', '--json', ...sock(1)]);
    assert.equal((JSON.parse(json.stdout) as { peers: number }).peers, 0, 'n2 has no connection left');
    // Writes elsewhere still work; n1 did not take n2's refused drain.
    assert.equal((await silo(['nodes', '--json', ...sock()])).code, 0);
    // No barrier reaches a revoked node (every member refuses it), so this waits several redial and
    // sync intervals of these agents for a retry to show in the log.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const log = n(1).agent!.log();
    assert.equal(log.match(/this node was revoked by the org CA/g)?.length, 1, log);
    assert.doesNotMatch(log, /could not open a sync stream/, 'no retries against members that refuse it');
    assert.deepEqual(duplicateTopLevelKeys('{"node":"a","x":{"node":1},"y":["node"],"node":"b"}'), ['node']);
    for (const line of log.split('\n').filter((l) => l.startsWith('{'))) {
      assert.deepEqual(duplicateTopLevelKeys(line), [], `one name per meaning: ${line}`);
    }
  });

  test('SIGTERM stops an agent cleanly: exit 0, socket removed', async () => {
    const code = await n(1).agent?.stop();
    assert.equal(code, 0, n(1).agent?.log());
    assert.ok(!existsSync(n(1).socket));
  });

  test('status says when the witnesses have no quorum (documents may still be converged)', async () => {
    const res = await waitFor(
      'n1 sees n2 gone and says so',
      async () => {
        const r = await silo(['status', ...sock(0)]);
        return /^witnesses {4}v\d+: 1 of 2 alive, quorum 2: NO QUORUM/m.test(r.stdout) ? r : null;
      },
      60_000,
    );
    assert.equal(res.code, 0);
    const json = JSON.parse((await silo(['status', '--json', ...sock(0)])).stdout) as {
      ownership: { witnesses: { hasQuorum: boolean; alive: number; total: number } };
    };
    assert.deepEqual(
      { ...json.ownership.witnesses, version: undefined },
      { version: undefined, total: 2, alive: 1, quorum: 2, hasQuorum: false },
    );
    // An exclusive workload applied now cannot start anywhere: its row says why, naming the missing
    // witness, in the API and in the table (not only "pending").
    const svc = join(dir, 'svc');
    await writeFile(
      join(svc, 'solo.toml'),
      'name = "solo"\nimage = "./image"\ncommand = "/bin/counter"\nscratch_class = "volatile"\non_partition = "stop"\n',
    );
    const applied = await silo(['apply', join(svc, 'solo.toml'), '--org', orgDir, ...sock(0)]);
    assert.equal(applied.code, 0, applied.stderr);
    let last: WorkloadRow | null = null;
    const row = await waitFor(
      'solo says there is no witness quorum',
      async () => {
        const res = await silo(['workloads', 'solo', '--json', ...sock(0)]);
        last = JSON.parse(res.stdout) as WorkloadRow;
        return last.reason?.includes('no witness quorum') ? last : null;
      },
      60_000,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; last row: ${JSON.stringify(last)}`);
    });
    assert.notEqual(row.phase, 'running');
    assert.match(row.reason ?? '', /no witness quorum: 1 of 2 witnesses alive, 2 needed \(missing: n2\)/);
    const table = await silo(['workloads', ...sock(0)]);
    assert.match(table.stdout, /^solo .*no witness quorum: 1 of 2 witnesses alive/m);
  });
});
