import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type RunResult, silo, tempDir } from './helpers.js';

/**
 * `silo ca sign` of a request whose node id is enrolled with another key
 * (outside testing: it enrolled the new key as node-1 with node-1's overlay
 * IP, and the real node-1 dropped out). Refused unless the operator says
 * `--rekey`, which revokes the old key first; the real `silo` CLI on real
 * files.
 */
describe('ca sign: an enrolled node id with another key', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let orgDir: string;

  async function nodeInit(identityDir: string, id: string): Promise<string> {
    const init = await silo([
      'node',
      'init',
      '--dir',
      identityDir,
      '--id',
      id,
      '--endpoint',
      '/ip4/127.0.0.1/tcp/9',
      '--json',
    ]);
    assert.equal(init.code, 0, init.stderr);
    return (JSON.parse(init.stdout) as { peerId: string }).peerId;
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

  async function issued(id: string): Promise<{ peerId: string; overlayIp: string; issuedAt: number }> {
    return JSON.parse(await readFile(join(orgDir, 'issued', `${id}.json`), 'utf8'));
  }

  before(async () => {
    ({ dir, remove } = await tempDir('silo-rekey-'));
    orgDir = join(dir, 'org');
    const init = await silo(['org', 'init', '--dir', orgDir, '--name', 'rekey', '--cidr', '10.62.0.0/24']);
    assert.equal(init.code, 0, init.stderr);
  });
  after(() => remove());

  test('refused without --rekey; --rekey revokes the old key and keeps the address; the same key re-signs freely', async () => {
    const first = join(dir, 'first');
    const firstPeer = await nodeInit(first, 'node-1');
    assert.equal((await sign(first)).code, 0);
    const original = await issued('node-1');
    assert.equal(original.peerId, firstPeer);

    // Same id, a new key (a new directory).
    const second = join(dir, 'second');
    const secondPeer = await nodeInit(second, 'node-1');
    const refused = await sign(second);
    assert.equal(refused.code, 3, refused.stderr);
    // (--json: the error is a JSON document on stderr.)
    const { error } = JSON.parse(refused.stderr) as { error: { message: string; exitCode: number } };
    assert.equal(error.exitCode, 3);
    assert.match(error.message, /node "node-1" is enrolled with another key \(peer id /);
    assert.match(error.message, /--rekey/);
    // Nothing changed: the live node's record is still the CA's word.
    assert.deepEqual(await issued('node-1'), original);

    const rekeyed = await sign(second, ['--rekey']);
    assert.equal(rekeyed.code, 0, rekeyed.stderr);
    assert.equal((JSON.parse(rekeyed.stdout) as { rekeyed: boolean }).rekeyed, true);
    const record = await issued('node-1');
    assert.equal(record.peerId, secondPeer);
    assert.equal(record.overlayIp, original.overlayIp);
    const revocation = JSON.parse(await readFile(join(orgDir, 'revoked', 'node-1.json'), 'utf8')) as {
      revokedAt: number;
      reason: string;
    };
    // The old record is revoked, the new one issued after the revocation (so it is not).
    assert.ok(revocation.revokedAt >= original.issuedAt);
    assert.ok(record.issuedAt > revocation.revokedAt);
    assert.match(revocation.reason, /re-keyed/);

    // The current key re-signs without --rekey; the old key is refused again.
    assert.equal((await sign(second)).code, 0);
    assert.equal((await sign(first)).code, 3);
  });
});
