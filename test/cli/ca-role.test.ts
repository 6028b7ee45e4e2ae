import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NodeRow } from '../../src/agent/api/views.js';
import { renderNodes } from '../../src/cli/commands/query.js';
import { verifyEnrollmentBundle } from '../../src/identity/ca.js';
import { type RunResult, silo, tempDir } from './helpers.js';

/**
 * `silo ca sign --role` (docs/operations.md, "Clients"): the CA decides
 * what an identity is for; a client never becomes a witness, neither by
 * the bootstrap rule of `ca sign` nor by `ca witnesses set`; `silo nodes`
 * shows the role. The real CLI on real files, no agent.
 */
describe('ca sign --role', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let orgDir: string;

  async function nodeInit(id: string): Promise<string> {
    const identityDir = join(dir, id);
    const init = await silo(['node', 'init', '--dir', identityDir, '--id', id, '--json']);
    assert.equal(init.code, 0, init.stderr);
    return identityDir;
  }

  function sign(identityDir: string, extra: string[] = []): Promise<RunResult> {
    return silo([
      'ca',
      'sign',
      '--org',
      orgDir,
      join(identityDir, 'request.json'),
      '-o',
      join(identityDir, 'enrollment.json'),
      '--json',
      ...extra,
    ]);
  }

  before(async () => {
    ({ dir, remove } = await tempDir('silo-role-'));
    orgDir = join(dir, 'org');
    const init = await silo(['org', 'init', '--dir', orgDir, '--name', 'roles', '--cidr', '10.63.0.0/24']);
    assert.equal(init.code, 0, init.stderr);
  });
  after(() => remove());

  test('an unknown role is a usage error (exit 2) and nothing is written', async () => {
    const identityDir = await nodeInit('odd-1');
    const result = await sign(identityDir, ['--role', 'admin']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /--role <role>.*unknown role .*admin.*expected node or client/);
    assert.ok(!existsSync(join(identityDir, 'enrollment.json')));
    assert.ok(!existsSync(join(orgDir, 'issued', 'odd-1.json')));
  });

  test('a client is signed with its role and never becomes a bootstrap witness', async () => {
    const tool = await nodeInit('tool-1');
    const signed = await sign(tool, ['--role', 'client']);
    assert.equal(signed.code, 0, signed.stderr);
    const out = JSON.parse(signed.stdout) as { role: string; witnesses: unknown };
    assert.equal(out.role, 'client');
    assert.equal(out.witnesses, null, 'the org had no witnesses and still has none');
    const bundle = JSON.parse(await readFile(join(tool, 'enrollment.json'), 'utf8'));
    assert.equal(bundle.record.role, 'client');
    assert.equal(bundle.witnessConfig, undefined);
    assert.equal(verifyEnrollmentBundle(bundle), null);

    // The next node (default role) becomes witness v1 alone; its record carries no role field.
    const node = await nodeInit('node-1');
    const nodeSigned = await sign(node);
    assert.equal(nodeSigned.code, 0, nodeSigned.stderr);
    const nodeOut = JSON.parse(nodeSigned.stdout) as { role: string; witnesses: { witnesses: string[] } };
    assert.equal(nodeOut.role, 'node');
    assert.deepEqual(nodeOut.witnesses.witnesses, ['node-1']);
    const issued = JSON.parse(await readFile(join(orgDir, 'issued', 'node-1.json'), 'utf8'));
    assert.equal(Object.hasOwn(issued, 'role'), false);
  });

  test('ca witnesses set refuses a client, naming why', async () => {
    const result = await silo(['ca', 'witnesses', 'set', '--org', orgDir, 'node-1', 'tool-1']);
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /"tool-1" is enrolled as a client: clients are never witnesses/);
  });

  test('silo nodes shows a ROLE column once a client is enrolled', () => {
    const row = (nodeId: string, role: NodeRow['role']): NodeRow => ({
      nodeId,
      self: false,
      peerId: 'p',
      overlayIp: '10.63.0.1',
      endpoints: [],
      capacity: { cpus: 1, memoryMb: 256, scratchMb: 0 },
      labels: {},
      issuedAt: 1,
      role,
      liveness: 'alive',
      lastSeenAgoMs: 0,
      incarnation: 1,
      draining: false,
      drain: null,
      peers: null,
      revoked: null,
      digests: null,
      swim: null,
    });
    const mixed = renderNodes([row('node-1', 'node'), row('tool-1', 'client')]).split('\n');
    assert.match(mixed[0]!, /^NODE\s+ROLE\s+LIVENESS/);
    assert.match(mixed[2]!, /^tool-1\s+client\s+alive/);
    assert.doesNotMatch(renderNodes([row('node-1', 'node')]), /ROLE/);
  });
});
