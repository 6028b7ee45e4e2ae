import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { JoinError, Provisioner } from '../../src/agent/provisioner.js';
import {
  joinKeyOf,
  joinRequestMac,
  newTokenId,
  newTokenSecret,
  openFromProvisioner,
} from '../../src/identity/join-token.js';
import { createNodeIdentity, enrollmentRequest, x25519WgKeys } from '../../src/identity/node-identity.js';
import { createOrg, saveOrg } from '../../src/identity/org.js';
import { loadToken, saveToken } from '../../src/identity/token-store.js';

/** The provisioner on its own (no agent): serialized uses, refunds, conflicts, rate limit. */
describe('join provisioner', () => {
  let dir: string;
  let provisioner: Provisioner;
  let url: string;
  let registered: string[];

  const newToken = async (uses: number): Promise<{ id: string; key: Buffer }> => {
    const id = newTokenId();
    const key = joinKeyOf(id, newTokenSecret());
    const now = Date.now();
    await saveToken(dir, {
      v: 1,
      id,
      joinKey: key.toString('base64url'),
      provisioner: 'test',
      createdAt: now,
      expiresAt: now + 60_000,
      uses,
      usesLeft: uses,
      labels: { pool: 'p' },
      revoked: false,
      joined: [],
    });
    return { id, key };
  };

  const requestFor = async (nodeId: string) =>
    enrollmentRequest(await createNodeIdentity(nodeId, { wgKeys: x25519WgKeys }), {
      endpoints: [],
      capacity: { cpus: 1, memoryMb: 512, scratchMb: 0 },
    });

  const post = async (
    body: unknown,
    to: string = url,
  ): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(to, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  const joinWith = (token: { id: string; key: Buffer }, request: unknown) =>
    post({ v: 1, tokenId: token.id, request, mac: joinRequestMac(token.key, token.id, request) });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'silo-prov-'));
    await saveOrg(dir, createOrg({ name: 'acme', overlayCidr: '10.70.0.0/24' }));
    registered = [];
    provisioner = await Provisioner.start({
      orgDir: dir,
      host: '127.0.0.1',
      port: 0,
      seeds: () => [],
      logger: pino({ level: 'silent' }),
      register: async (signed) => {
        registered.push(signed.bundle.record.nodeId);
      },
    });
    url = `http://127.0.0.1:${provisioner.address!.port}/v1/join`;
  });

  after(async () => {
    await provisioner.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('concurrent joins spend a token exactly as often as it has uses, each with its own address', async () => {
    const token = await newToken(2);
    const requests = await Promise.all(['c1', 'c2', 'c3', 'c4'].map(requestFor));
    const answers = await Promise.all(requests.map((request) => joinWith(token, request)));
    const ok = answers.filter((a) => a.status === 201);
    assert.equal(ok.length, 2);
    for (const refused of answers.filter((a) => a.status !== 201)) {
      assert.equal(refused.status, 403);
      assert.equal((refused.body.error as { code: string }).code, 'token_used_up');
    }
    const ips = ok.map((answer, i) => {
      const request = requests[answers.indexOf(answer)]!;
      const opened = openFromProvisioner(token.key, token.id, request.peerId, answer.body.sealed);
      assert.ok(opened, `answer ${i} opens with the token's key`);
      const { bundle } = JSON.parse(opened) as { bundle: { record: { overlayIp: string; labels: object } } };
      assert.deepEqual(bundle.record.labels, { pool: 'p' });
      return bundle.record.overlayIp;
    });
    assert.notEqual(ips[0], ips[1]);
    assert.equal((await loadToken(dir, token.id))?.usesLeft, 0);
    assert.equal(registered.length, 2);
  });

  test('a refused request gives its use back; an id enrolled with another key is a 409', async () => {
    const token = await newToken(1);
    const request = await requestFor('x1');
    const tampered = { ...request, labels: { sneaky: 'yes' } };
    const bad = await joinWith(token, tampered);
    assert.equal(bad.status, 400);
    assert.match((bad.body.error as { message: string }).message, /proof does not verify/);
    assert.equal((await loadToken(dir, token.id))?.usesLeft, 1);

    assert.equal((await joinWith(token, request)).status, 201);
    const again = await newToken(1);
    const conflict = await joinWith(again, await requestFor('x1'));
    assert.equal(conflict.status, 409);
    assert.match((conflict.body.error as { message: string }).message, /enrolled with another key/);
    assert.equal((await loadToken(dir, again.id))?.usesLeft, 1);
  });

  test('a record the cluster refuses is answered as the cluster said, and the use is given back', async () => {
    const refusing = await Provisioner.start({
      orgDir: dir,
      host: '127.0.0.1',
      port: 0,
      seeds: () => [],
      logger: pino({ level: 'silent' }),
      register: async () => {
        throw new JoinError('conflict', 'the cluster refused the signed record: peer id clash');
      },
    });
    try {
      const token = await newToken(1);
      const request = await requestFor('k1');
      const res = await post(
        { v: 1, tokenId: token.id, request, mac: joinRequestMac(token.key, token.id, request) },
        `http://127.0.0.1:${refusing.address!.port}/v1/join`,
      );
      assert.equal(res.status, 409);
      assert.match((res.body.error as { message: string }).message, /peer id clash/);
      assert.equal((await loadToken(dir, token.id))?.usesLeft, 1);
    } finally {
      await refusing.close();
    }
  });

  test('malformed bodies are 400s; repeated token refusals from one address are rate-limited', async () => {
    assert.equal((await post({ hello: 1 })).status, 400);
    const other = await fetch(url.replace('/v1/join', '/v1/status'));
    assert.equal(other.status, 404);
    assert.equal(((await other.json()) as { error: { code: string } }).error.code, 'not_found');
    const strict = await Provisioner.start({
      orgDir: dir,
      host: '127.0.0.1',
      port: 0,
      seeds: () => [],
      logger: pino({ level: 'silent' }),
      maxFailuresPerMinute: 5,
    });
    after(() => strict.close());
    const strictUrl = `http://127.0.0.1:${strict.address!.port}/v1/join`;
    const token = await newToken(3);
    const request = await requestFor('r1');
    const wrongKey = joinKeyOf(token.id, newTokenSecret());
    for (let i = 0; i < 5; i++) {
      const res = await post(
        { v: 1, tokenId: token.id, request, mac: joinRequestMac(wrongKey, token.id, request) },
        strictUrl,
      );
      assert.equal(res.status, 401);
      assert.deepEqual(res.body, {
        error: {
          code: 'invalid_token',
          message: 'join token not accepted (unknown token, or not its secret)',
        },
      });
    }
    // Even the right secret waits now: guessing must cost time.
    const limited = await post(
      { v: 1, tokenId: token.id, request, mac: joinRequestMac(token.key, token.id, request) },
      strictUrl,
    );
    assert.equal(limited.status, 429);
    assert.equal((limited.body.error as { code: string }).code, 'rate_limited');
    assert.equal((await loadToken(dir, token.id))?.usesLeft, 3);
  });
});
