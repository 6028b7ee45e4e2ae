import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { WitnessesView } from '../../src/agent/api/views.js';
import { signWitnessConfig } from '../../src/identity/ca.js';
import { createOrg, loadOrg } from '../../src/identity/org.js';
import { type ClusterNode, type RunResult, silo, startEnrolledAgents, tempDir, waitFor } from './helpers.js';

/**
 * Witness configurations end to end: `ca sign` grows the org's set to three
 * witnesses, one version per node; `ca witnesses set` refuses what may not
 * follow the current version and hands a permitted change to a running agent
 * (`silo agent` child processes), whose `/v1/witnesses` and `silo witnesses`
 * then report it; bad API input gets the documented error shape.
 */

interface SignJson {
  nodeId: string;
  registered: boolean;
  witnesses: { version: number; witnesses: string[]; changed: boolean; submitted: boolean } | null;
}

type WitnessesJson = WitnessesView & { quorum: number | null };

function post(socketPath: string, path: string, body: string): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { socketPath, method: 'POST', path, headers: { 'content-type': 'application/json' } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function ok(result: RunResult, what: string): RunResult {
  assert.equal(result.code, 0, `${what}: ${result.stderr}`);
  return result;
}

describe('witness configuration through the CLI and a running agent', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let orgDir: string;
  const nodes: ClusterNode[] = [];
  const signs: SignJson[] = [];
  const sock = (i = 0): string[] => ['--socket', nodes[i]!.socket];

  async function witnesses(i = 0): Promise<WitnessesJson> {
    const res = ok(await silo(['witnesses', '--json', ...sock(i)]), 'silo witnesses');
    return JSON.parse(res.stdout) as WitnessesJson;
  }

  before(async () => {
    ({ dir, remove } = await tempDir('silo-wit-'));
    const cluster = await startEnrolledAgents({
      dir,
      org: 'wittest',
      cidr: '10.61.0.0/24',
      ids: ['w1', 'w2'],
      nodeInitArgs: () => ['--cpus', '1', '--memory-mb', '256', '--scratch-mb', '512'],
    });
    orgDir = cluster.orgDir;
    nodes.push(...cluster.nodes);
    // w1 was signed alone (no agent to submit to), w2 with --socket of the running w1.
    signs.push(
      { nodeId: 'w1', registered: false, witnesses: null },
      ...cluster.laterSigns.map((r) => JSON.parse(r.stdout) as SignJson),
    );
    // Two more nodes are enrolled (registered with w1) but never started: witnesses may be down.
    for (const id of ['w3', 'w4']) {
      const identityDir = join(dir, id, 'identity');
      ok(
        await silo(['node', 'init', '--dir', identityDir, '--id', id, '--cpus', '1', '--json']),
        'node init',
      );
      const signed = ok(
        await silo([
          'ca',
          'sign',
          '--org',
          orgDir,
          join(identityDir, 'request.json'),
          '-o',
          join(identityDir, 'enrollment.json'),
          ...sock(0),
          '--json',
        ]),
        `ca sign ${id}`,
      );
      signs.push(JSON.parse(signed.stdout) as SignJson);
    }
  });

  after(async () => {
    for (const node of nodes) await node.agent?.stop();
    await remove?.();
  });

  test('ca sign of four nodes: versions 1..3 with 1, 2, 3 witnesses; the fourth node is not added', async () => {
    const bundles = await Promise.all(
      ['w1', 'w2', 'w3', 'w4'].map(
        async (id) =>
          JSON.parse(await readFile(join(dir, id, 'identity', 'enrollment.json'), 'utf8')) as {
            witnessConfig?: { version: number; witnesses: string[] };
          },
      ),
    );
    assert.deepEqual(
      bundles.map((b) => [b.witnessConfig?.version, b.witnessConfig?.witnesses]),
      [
        [1, ['w1']],
        [2, ['w1', 'w2']],
        [3, ['w1', 'w2', 'w3']],
        [3, ['w1', 'w2', 'w3']],
      ],
    );
    assert.deepEqual(signs[1]!.witnesses, {
      version: 2,
      witnesses: ['w1', 'w2'],
      changed: true,
      submitted: true,
    });
    assert.deepEqual(signs[3]!.witnesses, {
      version: 3,
      witnesses: ['w1', 'w2', 'w3'],
      changed: false,
      submitted: false,
    });
    for (const v of [1, 2, 3]) assert.ok(existsSync(join(orgDir, 'witnesses', `v${v}.json`)));
    assert.ok(!existsSync(join(orgDir, 'witnesses', 'v4.json')));

    const show = JSON.parse(
      ok(await silo(['ca', 'witnesses', 'show', '--org', orgDir, '--json']), 'show').stdout,
    );
    assert.deepEqual(show.config.witnesses, ['w1', 'w2', 'w3']);
    assert.equal(show.quorum, 2);
    assert.deepEqual(
      show.history.map((h: { version: number }) => h.version),
      [1, 2, 3],
    );
  });

  test('silo witnesses: the agent reports v3 with liveness; the other agent learns it by gossip', async () => {
    const view = await witnesses(0);
    assert.equal(view.config?.version, 3);
    assert.equal(view.quorum, 2);
    const row = (id: string) => view.witnesses.find((w) => w.nodeId === id);
    assert.deepEqual(row('w1'), { nodeId: 'w1', enrolled: true, liveness: 'self' });
    assert.equal(row('w3')?.enrolled, true);
    assert.equal(row('w3')?.liveness, 'unknown', 'w3 never ran');
    await waitFor('w2 alive as seen by w1, and w2 at v3', async () => {
      const [a, b] = [await witnesses(0), await witnesses(1)];
      return a.witnesses.find((w) => w.nodeId === 'w2')?.liveness === 'alive' && b.config?.version === 3;
    });
    const human = ok(await silo(['witnesses', ...sock(0)]), 'silo witnesses');
    assert.match(human.stdout, /version\s+3/);
    assert.match(human.stdout, /quorum\s+2 of 3/);
    assert.match(human.stdout, /w1\*\s+yes\s+self/);
  });

  test('ca witnesses set refuses a two-node change, a node that is not enrolled, too many witnesses (exit 3)', async () => {
    const twoChanges = await silo(['ca', 'witnesses', 'set', '--org', orgDir, 'w1', 'w2', 'w4', ...sock()]);
    assert.equal(twoChanges.code, 3, twoChanges.stderr);
    assert.match(
      twoChanges.stderr,
      /^silo: witness change refused: a change adds or removes exactly one witness \(this one adds 1 and removes 1\); replace a witness in two steps/,
    );
    const ghost = await silo(['ca', 'witnesses', 'set', '--org', orgDir, 'w1', 'w2', 'w3', 'ghost']);
    assert.equal(ghost.code, 3);
    assert.match(ghost.stderr, /node "ghost" is not an enrolled node of the org/);
    const many = await silo([
      'ca',
      'witnesses',
      'set',
      '--org',
      orgDir,
      'a',
      'b',
      'c',
      'd',
      'e',
      'f',
      'g',
      'h',
    ]);
    assert.equal(many.code, 3);
    assert.match(many.stderr, /at most 7 witnesses, 8 given/);
    const badId = await silo(['ca', 'witnesses', 'set', '--org', orgDir, 'w1', 'W_2']);
    assert.equal(badId.code, 3);
    assert.match(badId.stderr, /"W_2" is not a node id/);
    assert.ok(!existsSync(join(orgDir, 'witnesses', 'v4.json')), 'nothing signed');
    assert.equal((await witnesses(0)).config?.version, 3, 'nothing submitted');
  });

  test('a permitted change (add a fourth) is signed, kept, submitted; the agents report v4', async () => {
    const set = ok(
      await silo(['ca', 'witnesses', 'set', '--org', orgDir, 'w1', 'w2', 'w3', 'w4', ...sock(), '--json']),
      'ca witnesses set',
    );
    const out = JSON.parse(set.stdout);
    assert.equal(out.version, 4);
    assert.deepEqual(out.witnesses, ['w1', 'w2', 'w3', 'w4']);
    assert.deepEqual(out.added, ['w4']);
    assert.deepEqual(out.removed, []);
    assert.equal(out.quorum, 3);
    assert.equal(out.submitted, true);
    assert.ok(existsSync(join(orgDir, 'witnesses', 'v4.json')));
    const view = await witnesses(0);
    assert.equal(view.config?.version, 4);
    assert.equal(view.quorum, 3);
    assert.deepEqual(
      view.witnesses.map((w) => w.nodeId),
      ['w1', 'w2', 'w3', 'w4'],
    );
    await waitFor('w2 reports v4', async () => (await witnesses(1)).config?.version === 4);
  });

  test('POST /v1/witnesses: malformed, forged and wrong-version records get the documented errors', async () => {
    const socket = nodes[0]!.socket;
    const org = await loadOrg(orgDir);
    const error =
      (status: number, code: string, message: RegExp) => (res: { status: number; json: unknown }) => {
        assert.equal(res.status, status, JSON.stringify(res.json));
        const body = res.json as { error: { code: string; message: string } };
        assert.deepEqual(Object.keys(body), ['error']);
        assert.equal(body.error.code, code);
        assert.match(body.error.message, message);
      };
    error(400, 'bad_request', /JSON/i)(await post(socket, '/v1/witnesses', '{"version": '));
    error(400, 'bad_request', /^invalid witness configuration: /)(await post(socket, '/v1/witnesses', '{}'));
    const next = { version: 5, witnesses: ['w1', 'w2', 'w3'], issuedAt: Date.now() };
    const genuine = signWitnessConfig(org.caPrivateKey, next);
    error(
      400,
      'bad_request',
      /^invalid witness configuration: /,
    )(await post(socket, '/v1/witnesses', JSON.stringify({ ...genuine, note: 'unsigned field' })));
    const forged = signWitnessConfig(
      createOrg({ name: 'wittest', overlayCidr: '10.61.0.0/24' }).caPrivateKey,
      next,
    );
    error(
      400,
      'bad_request',
      /^witness configuration refused \(bad-signature\): /,
    )(await post(socket, '/v1/witnesses', JSON.stringify(forged)));
    error(
      400,
      'bad_request',
      /bad-signature/,
    )(await post(socket, '/v1/witnesses', JSON.stringify({ ...genuine, witnesses: ['w1'] })));
    const skip = signWitnessConfig(org.caPrivateKey, { ...next, version: 6 });
    error(
      409,
      'conflict',
      /the next version after 4 is 5, not 6/,
    )(await post(socket, '/v1/witnesses', JSON.stringify(skip)));
    const older = signWitnessConfig(org.caPrivateKey, { ...next, version: 3 });
    error(
      409,
      'conflict',
      /the next version after 4 is 5, not 3/,
    )(await post(socket, '/v1/witnesses', JSON.stringify(older)));
    const twoAtOnce = signWitnessConfig(org.caPrivateKey, { ...next, witnesses: ['w1', 'w2'] });
    error(
      409,
      'conflict',
      /adds 0 and removes 2/,
    )(await post(socket, '/v1/witnesses', JSON.stringify(twoAtOnce)));
    const sameVersion = signWitnessConfig(org.caPrivateKey, { ...next, version: 4 });
    error(
      409,
      'conflict',
      /v4 is in force already with other content/,
    )(await post(socket, '/v1/witnesses', JSON.stringify(sameVersion)));
    // The record in force again (a retried submission): accepted, nothing changes.
    const v4 = JSON.parse(await readFile(join(orgDir, 'witnesses', 'v4.json'), 'utf8'));
    const again = await post(socket, '/v1/witnesses', JSON.stringify(v4));
    assert.equal(again.status, 200);
    assert.equal((again.json as { changed: boolean }).changed, false);
    assert.equal((await witnesses(0)).config?.version, 4, 'none of these changed anything');
  });

  test('set without --socket keeps the new version in the org; ca witnesses submit hands it over', async () => {
    const set = ok(await silo(['ca', 'witnesses', 'set', '--org', orgDir, 'w1', 'w2', 'w3']), 'set');
    assert.match(set.stdout, /witness configuration v5: w1, w2, w3 \(removed w4\); quorum 2 of 3/);
    assert.match(set.stdout, /not submitted/);
    assert.equal((await witnesses(0)).config?.version, 4);
    const submit = JSON.parse(
      ok(await silo(['ca', 'witnesses', 'submit', '--org', orgDir, ...sock(), '--json']), 'submit').stdout,
    );
    assert.equal(submit.version, 5);
    assert.equal(submit.submitted, true);
    assert.equal((await witnesses(0)).config?.version, 5);
    const again = ok(await silo(['ca', 'witnesses', 'submit', '--org', orgDir, ...sock()]), 'submit again');
    assert.match(again.stdout, /the cluster has the org's current witness configuration, v5/);

    // v6 kept in the org only; v7 submitted while the agent is still at v5: the agent's 409 is exit code 1.
    ok(await silo(['ca', 'witnesses', 'set', '--org', orgDir, 'w1', 'w2', 'w3', 'w4']), 'set v6');
    const ahead = await silo(['ca', 'witnesses', 'set', '--org', orgDir, 'w1', 'w2', 'w4', ...sock()]);
    assert.equal(ahead.code, 1, ahead.stderr);
    assert.match(
      ahead.stderr,
      /^silo: witness configuration v7 is signed and kept in .*v7\.json, but the agent refused it: witness configuration v7 refused: the next version after 5 is 6, not 7/,
    );
    // One version per submit: v6 first, then v7.
    const sixth = ok(await silo(['ca', 'witnesses', 'submit', '--org', orgDir, ...sock()]), 'submit v6');
    assert.match(sixth.stdout, /submitted witness configuration v6: w1, w2, w3, w4\nthe org is at v7: /);
    ok(await silo(['ca', 'witnesses', 'submit', '--org', orgDir, ...sock()]), 'submit v7');
    assert.deepEqual((await witnesses(0)).config, {
      version: 7,
      witnesses: ['w1', 'w2', 'w4'],
      issuedAt: JSON.parse(await readFile(join(orgDir, 'witnesses', 'v7.json'), 'utf8')).issuedAt,
    });
  });
});
