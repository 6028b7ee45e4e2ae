import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { NodeRow } from '../../src/agent/api/views.js';
import { Provisioner } from '../../src/agent/provisioner.js';
import { freeLoopbackPorts } from '../../src/cli/demo/free-port.js';
import { EXIT } from '../../src/cli/errors.js';
import { formatJoinToken, newTokenSecret, parseJoinToken } from '../../src/identity/join-token.js';
import {
  type AgentProcess,
  agentToml,
  BIN,
  type ClusterNode,
  type RunResult,
  silo,
  siloProcess,
  startAgentProcess,
  startEnrolledAgents,
  tempDir,
  waitFor,
} from './helpers.js';

/**
 * `silo token` and `silo join` against a real agent running the join
 * provisioner (docs/operations.md, "Adding a node"): one full join with real
 * processes, then every refusal.
 */
describe('silo join with a token', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let orgDir: string;
  let n1: ClusterNode;
  let provisionerAt: string;
  let joined: AgentProcess | undefined;
  let singleUse: string;

  const tokenCreate = async (...extra: string[]): Promise<{ token: string; id: string }> => {
    const res = await silo([
      'token',
      'create',
      '--org',
      orgDir,
      '--provisioner',
      provisionerAt,
      '--json',
      ...extra,
    ]);
    assert.equal(res.code, 0, res.stderr);
    return JSON.parse(res.stdout) as { token: string; id: string };
  };
  const joinAs = (token: string, id: string, ...extra: string[]): Promise<RunResult> =>
    silo(['join', token, '--dir', join(dir, id, 'identity'), '--id', id, ...extra]);

  before(async () => {
    ({ dir, remove } = await tempDir('silo-join-'));
    const cluster = await startEnrolledAgents({
      dir,
      org: 'acme',
      cidr: '10.60.0.0/24',
      ids: ['n1'],
      nodeInitArgs: () => [],
      extraPorts: 1,
      config: (_i, [port]) => ({ provisioner: { org_dir: join(dir, 'org'), listen: `127.0.0.1:${port}` } }),
    });
    orgDir = cluster.orgDir;
    n1 = cluster.nodes[0]!;
    provisionerAt = `127.0.0.1:${cluster.extraPorts[0]}`;
  });

  after(async () => {
    await joined?.stop();
    await n1?.agent?.stop();
    await remove();
  });

  test('a machine joins with one command and shows up alive on the first agent', async () => {
    const { token, id } = await tokenCreate('--uses', '1', '--label', 'zone=eu-1', '--ttl', '10m');
    singleUse = token;
    const [port] = await freeLoopbackPorts(1);
    const res = await siloProcess([
      'join',
      token,
      '--dir',
      join(dir, 'j1', 'identity'),
      '--id',
      'j1',
      '--endpoint',
      `/ip4/127.0.0.1/tcp/${port}`,
      '--label',
      'disk=ssd',
      '--json',
    ]);
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout) as {
      nodeId: string;
      overlayIp: string;
      config: string;
      command: string;
    };
    assert.equal(out.nodeId, 'j1');
    assert.equal(out.config, join(dir, 'j1', 'agent.toml'));
    assert.equal(out.command, `silo agent --config ${out.config}`);
    const toml = await readFile(out.config, 'utf8');
    assert.match(toml, /org = "acme"/);
    assert.match(toml, new RegExp(`/ip4/127.0.0.1/tcp/${port}`));

    // The token's labels are in the CA-signed record, beside the machine's own.
    const bundle = JSON.parse(await readFile(join(dir, 'j1', 'identity', 'enrollment.json'), 'utf8'));
    assert.deepEqual(bundle.record.labels, { disk: 'ssd', zone: 'eu-1' });
    assert.equal(bundle.record.overlayIp, out.overlayIp);
    assert.ok(
      bundle.seedPeers.some((addr: string) => addr.endsWith(`/p2p/${n1.peerId}`)),
      'n1 is the seed',
    );

    // The token is spent and remembers who joined with it.
    const list = JSON.parse((await silo(['token', 'list', '--org', orgDir, '--json'])).stdout) as {
      tokens: { id: string; state: string; usesLeft: number; joined: string[] }[];
    };
    assert.deepEqual(
      list.tokens.find((t) => t.id === id),
      { ...list.tokens.find((t) => t.id === id), state: 'used-up', usesLeft: 0, joined: ['j1'] },
    );

    // Started from the agent.toml join wrote, it is admitted at once: the provisioner registered its record.
    joined = await startAgentProcess(out.config, join(dir, 'j1', 'silo.sock'));
    await waitFor('j1 alive on n1', async () => {
      const res = await silo(['nodes', '--json', '--socket', n1.socket]);
      const rows = (JSON.parse(res.stdout) as { nodes: NodeRow[] }).nodes;
      return rows.find((row) => row.nodeId === 'j1')?.liveness === 'alive';
    });
  });

  test('a garbage token exits 3 and contacts nobody', async () => {
    const res = await joinAs('silo1.bm9wZQ', 'g1');
    assert.equal(res.code, EXIT.input);
    assert.match(res.stderr, /^silo: not a silo join token/);
    // A host name that is no node id (the default --id) is caught before the provisioner spends a use.
    const { token, id } = await tokenCreate();
    const badId = await silo(['join', token, '--dir', join(dir, 'bad', 'identity'), '--id', 'Not_An_Id']);
    assert.equal(badId.code, EXIT.input);
    assert.match(badId.stderr, /"Not_An_Id" is not a node id .*: pass --id <node id>/);
    const list = JSON.parse((await silo(['token', 'list', '--org', orgDir, '--json'])).stdout) as {
      tokens: { id: string; usesLeft: number }[];
    };
    assert.equal(list.tokens.find((t) => t.id === id)?.usesLeft, 1);
  });

  test('a token with the wrong secret is refused, and says no more than "not accepted"', async () => {
    const { token } = await tokenCreate();
    const forged = formatJoinToken({ ...parseJoinToken(token), s: newTokenSecret() });
    const res = await joinAs(forged, 'w1');
    assert.equal(res.code, EXIT.unauthorized, res.stderr);
    assert.match(res.stderr, /join refused: join token not accepted \(unknown token, or not its secret\)/);
    assert.equal(res.stderr.trim().split('\n').length, 1);
    // An unknown token id gets the very same answer.
    const unknown = formatJoinToken({ ...parseJoinToken(token), id: '0123456789abcdef' });
    const res2 = await joinAs(unknown, 'w2');
    assert.equal(res2.code, EXIT.unauthorized);
    assert.equal(res2.stderr, res.stderr);
  });

  test('an expired token is refused with its expiry', async () => {
    const { token } = await tokenCreate('--ttl', '1s');
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const res = await joinAs(token, 'e1');
    assert.equal(res.code, EXIT.unauthorized, res.stderr);
    assert.match(res.stderr, /join refused: join token [0-9a-f]{16} expired at \d{4}-\d\d-\d\dT/);
  });

  test('a single-use token cannot be used twice', async () => {
    assert.ok(singleUse, 'the full join ran first');
    const res = await joinAs(singleUse, 'r1');
    assert.equal(res.code, EXIT.unauthorized, res.stderr);
    assert.match(res.stderr, /join refused: join token [0-9a-f]{16} is used up \(1 use\)/);
  });

  test('a revoked token is refused; nodes are not enrolled by refused joins', async () => {
    const { token, id } = await tokenCreate('--uses', '5');
    const revoked = await silo(['token', 'revoke', '--org', orgDir, id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`revoked join token ${id}`));
    const res = await joinAs(token, 'v1');
    assert.equal(res.code, EXIT.unauthorized, res.stderr);
    assert.match(res.stderr, new RegExp(`join refused: join token ${id} was revoked`));
    assert.equal((await silo(['token', 'revoke', '--org', orgDir, 'ffffffffffffffff'])).code, EXIT.notFound);
    const issued = await readdir(join(orgDir, 'issued'));
    assert.deepEqual(issued.sort(), ['j1.json', 'n1.json']);
  });

  test('a provisioner signing with another CA than the token pins is refused, nothing written', async () => {
    // Another org's CA that somehow holds this token's stored key: it passes the MAC, its bundle must not.
    const other = join(dir, 'other-org');
    assert.equal(
      (await silo(['org', 'init', '--dir', other, '--name', 'acme', '--cidr', '10.61.0.0/24'])).code,
      0,
    );
    const [port] = await freeLoopbackPorts(1);
    const created = await silo([
      'token',
      'create',
      '--org',
      orgDir,
      '--provisioner',
      `127.0.0.1:${port}`,
      '--json',
    ]);
    const { token, id } = JSON.parse(created.stdout) as { token: string; id: string };
    await cp(join(orgDir, 'tokens', `${id}.json`), join(other, 'tokens', `${id}.json`));
    const rogue = await Provisioner.start({
      orgDir: other,
      host: '127.0.0.1',
      port: port!,
      seeds: () => [],
      logger: pino({ level: 'silent' }),
    });
    try {
      const res = await joinAs(token, 'm1');
      assert.equal(res.code, EXIT.unauthorized, res.stderr);
      assert.match(
        res.stderr,
        /the provisioner's bundle is refused: it is signed by CA sha256:[0-9a-f]{64}, the token pins sha256:/,
      );
      await assert.rejects(stat(join(dir, 'm1', 'identity', 'enrollment.json')), { code: 'ENOENT' });
      await assert.rejects(stat(join(dir, 'm1', 'agent.toml')), { code: 'ENOENT' });
    } finally {
      await rogue.close();
    }
  });

  test('an agent whose provisioner.org_dir is another org refuses to start (exit 3)', async () => {
    const other = join(dir, 'third-org');
    assert.equal(
      (await silo(['org', 'init', '--dir', other, '--name', 'acme', '--cidr', '10.62.0.0/24'])).code,
      0,
    );
    const config = join(dir, 'wrong-provisioner.toml');
    await writeFile(
      config,
      agentToml({
        org: 'acme',
        // n1's identity: the check runs before the agent opens its store or listens anywhere.
        node: { id: 'n1', data_dir: n1.dir },
        provisioner: { org_dir: other, listen: '127.0.0.1:0' },
      }),
    );
    const res = await siloProcess(['agent', '--config', config], {}, 60_000);
    assert.equal(res.code, EXIT.input, res.stderr);
    assert.match(
      res.stderr,
      /provisioner\.org_dir = ".*third-org" is the org "acme" with CA .*; this agent is enrolled in "acme" with CA /,
    );
  });

  test('an unreachable provisioner exits 4 with a hint', async () => {
    const [port] = await freeLoopbackPorts(1);
    const created = await silo([
      'token',
      'create',
      '--org',
      orgDir,
      '--provisioner',
      `127.0.0.1:${port}`,
      '--json',
    ]);
    const { token } = JSON.parse(created.stdout) as { token: string };
    const res = await joinAs(token, 'u1');
    assert.equal(res.code, EXIT.unreachable);
    assert.match(
      res.stderr,
      /cannot reach the provisioner at 127\.0\.0\.1:\d+ \(ECONNREFUSED\): is the agent with \[provisioner\] running/,
    );
  });

  test('the org dir never holds a token secret', async () => {
    const { token } = await tokenCreate('--uses', '3');
    const { s } = parseJoinToken(token);
    const secretForms = [
      s,
      Buffer.from(s, 'base64url').toString('base64'),
      Buffer.from(s, 'base64url').toString('hex'),
    ];
    const files = (await readdir(orgDir, { recursive: true })) as string[];
    for (const file of files) {
      const path = join(orgDir, file);
      if (!(await stat(path)).isFile()) continue;
      const text = await readFile(path, 'utf8');
      for (const form of secretForms) assert.ok(!text.includes(form), `${file} holds the secret`);
      assert.ok(!text.includes(token.slice(6, 60)), `${file} holds the token string`);
    }
    const tokenFiles = await readdir(join(orgDir, 'tokens'));
    assert.ok(tokenFiles.length >= 5);
    for (const name of tokenFiles)
      assert.equal((await stat(join(orgDir, 'tokens', name))).mode & 0o777, 0o600);
  });

  test('join --start runs the agent it configured; SIGTERM stops it cleanly', async () => {
    const { token } = await tokenCreate();
    const [port] = await freeLoopbackPorts(1);
    const child = spawn(
      process.execPath,
      [
        BIN,
        'join',
        token,
        '--dir',
        join(dir, 'j2', 'identity'),
        '--id',
        'j2',
        '--endpoint',
        `/ip4/127.0.0.1/tcp/${port}`,
        '--start',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SILO_LOG_LEVEL: 'warn', SILO_SOCKET: '' } },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      await waitFor('j2 alive on n1', async () => {
        const res = await silo(['nodes', '--json', '--socket', n1.socket]);
        const rows = (JSON.parse(res.stdout) as { nodes: NodeRow[] }).nodes;
        return rows.find((row) => row.nodeId === 'j2')?.liveness === 'alive';
      });
      assert.match(output, new RegExp(`starting: silo agent --config ${join(dir, 'j2', 'agent.toml')}`));
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, output);
  });

  test('bad token create arguments are usage errors', async () => {
    for (const args of [
      ['--ttl', '5x'],
      ['--ttl', '0s'],
      ['--uses', '0'],
      ['--uses', 'two'],
      ['--label', 'novalue'],
      ['--label', '=x'],
    ]) {
      const res = await silo(['token', 'create', '--org', orgDir, '--provisioner', provisionerAt, ...args]);
      assert.equal(res.code, EXIT.usage, `${args.join(' ')}: ${res.stderr}`);
    }
    const noPort = await silo(['token', 'create', '--org', orgDir, '--provisioner', 'localhost']);
    assert.equal(noPort.code, EXIT.usage);
    const noOrg = await silo([
      'token',
      'create',
      '--org',
      join(dir, 'nowhere'),
      '--provisioner',
      provisionerAt,
    ]);
    assert.equal(noOrg.code, EXIT.input);
  });
});
