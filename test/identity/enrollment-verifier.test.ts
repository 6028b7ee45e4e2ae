import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { signEnrollmentRecord, signRevocation } from '../../src/identity/ca.js';
import { computeActiveNodes, type EnrollmentInput } from '../../src/identity/enrollment-verifier.js';
import { createOrg } from '../../src/identity/org.js';
import type { Revocation, SignedEnrollment } from '../../src/state/schemas.js';
import { makeRequest } from './helpers.js';

const org = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/24' });
const rogue = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/24' });

async function record(
  nodeId: string,
  overlayIp: string,
  issuedAt: number,
  signer = org,
  overrides: Partial<SignedEnrollment> = {},
): Promise<SignedEnrollment> {
  const request = await makeRequest(nodeId);
  return signEnrollmentRecord(signer.caPrivateKey, { ...request, overlayIp, issuedAt, ...overrides });
}

function revoke(nodeId: string, revokedAt: number, signer = org): Revocation {
  return signRevocation(signer.caPrivateKey, { nodeId, revokedAt, reason: 'decommissioned' });
}

function input(records: [string, unknown][], revocations: [string, unknown][] = []): EnrollmentInput {
  return { caPublicKey: org.info.caPublicKey, records, revocations, overlayCidr: org.info.overlayCidr };
}

describe('enrollment verifier', () => {
  test('valid records are all active, sorted by nodeId and indexed by peer id', async () => {
    const b = await record('b', '10.88.0.2', 2);
    const a = await record('a', '10.88.0.1', 1);
    const view = computeActiveNodes(
      input([
        ['b', b],
        ['a', a],
      ]),
    );
    assert.deepEqual(
      view.active.map((r) => r.nodeId),
      ['a', 'b'],
    );
    assert.equal(view.byPeerId.get(a.peerId)?.nodeId, 'a');
    assert.equal(view.byNodeId.get('b'), view.active[1]);
    assert.deepEqual(view.rejectedRecords, []);
  });

  test('records with bad signatures, from another CA, malformed or under the wrong key are skipped and reported', async () => {
    const good = await record('good', '10.88.0.1', 1);
    const forged = { ...(await record('forged', '10.88.0.2', 1)), labels: { role: 'admin' } };
    const foreign = await record('foreign', '10.88.0.3', 1, rogue);
    const misfiled = await record('real-id', '10.88.0.4', 1);
    const outside = await record('outside', '10.99.0.1', 1);
    const view = computeActiveNodes(
      input([
        ['good', good],
        ['forged', forged],
        ['foreign', foreign],
        ['garbage', 'not a record'],
        ['partial', { nodeId: 'partial' }],
        ['other-id', misfiled],
        ['outside', outside],
      ]),
    );
    assert.deepEqual(
      view.active.map((r) => r.nodeId),
      ['good'],
    );
    assert.deepEqual(
      view.rejectedRecords.map(({ key, reason }) => [key, reason]),
      [
        ['foreign', 'bad-signature'],
        ['forged', 'bad-signature'],
        ['garbage', 'schema'],
        ['other-id', 'key-mismatch'],
        ['outside', 'outside-cidr'],
        ['partial', 'schema'],
      ],
    );
    for (const rejection of view.rejectedRecords) assert.ok(rejection.message.length > 0);
  });

  test('duplicate overlay IP: earliest issuedAt keeps it, then nodeId; independent of input order', async () => {
    const early = await record('zeta', '10.88.0.5', 100);
    const late = await record('alpha', '10.88.0.5', 200);
    const tieA = await record('m-one', '10.88.0.6', 300);
    const tieB = await record('m-two', '10.88.0.6', 300);
    const entries: [string, unknown][] = [
      ['alpha', late],
      ['zeta', early],
      ['m-two', tieB],
      ['m-one', tieA],
    ];
    const view = computeActiveNodes(input(entries));
    assert.deepEqual(
      view.active.map((r) => r.nodeId),
      ['m-one', 'zeta'],
    );
    assert.deepEqual(
      view.rejectedRecords.map(({ key, reason }) => [key, reason]),
      [
        ['alpha', 'duplicate-overlay-ip'],
        ['m-two', 'duplicate-overlay-ip'],
      ],
    );
    assert.match(view.rejectedRecords[0]!.message, /10\.88\.0\.5 is already held by zeta/);

    fc.assert(
      fc.property(fc.shuffledSubarray(entries, { minLength: 4, maxLength: 4 }), (shuffled) => {
        const again = computeActiveNodes(input(shuffled));
        assert.deepEqual(again.active, view.active);
        assert.deepEqual(again.rejectedRecords, view.rejectedRecords);
      }),
      { numRuns: 30 },
    );
  });

  test('duplicate peer id or WireGuard key are rejected the same way', async () => {
    const first = await record('first', '10.88.0.1', 1);
    const samePeer = await record('second', '10.88.0.2', 2, org, { peerId: first.peerId });
    const sameWg = await record('third', '10.88.0.3', 3, org, { wgPublicKey: first.wgPublicKey });
    const view = computeActiveNodes(
      input([
        ['third', sameWg],
        ['second', samePeer],
        ['first', first],
      ]),
    );
    assert.deepEqual(
      view.active.map((r) => r.nodeId),
      ['first'],
    );
    assert.deepEqual(
      view.rejectedRecords.map(({ key, reason }) => [key, reason]),
      [
        ['second', 'duplicate-peer-id'],
        ['third', 'duplicate-wg-key'],
      ],
    );
  });

  test('a valid revocation removes a node, and frees its overlay IP for a later duplicate', async () => {
    const revoked = await record('old', '10.88.0.7', 100);
    const successor = await record('new', '10.88.0.7', 200);
    const view = computeActiveNodes(
      input(
        [
          ['old', revoked],
          ['new', successor],
        ],
        [['old', revoke('old', 150)]],
      ),
    );
    assert.deepEqual(
      view.active.map((r) => r.nodeId),
      ['new'],
    );
    assert.deepEqual(
      view.rejectedRecords.map(({ key, reason }) => [key, reason]),
      [['old', 'revoked']],
    );
    assert.match(view.rejectedRecords[0]!.message, /revoked at 150: decommissioned/);
    assert.equal(view.revocations.get('old')?.revokedAt, 150);
  });

  test('a revocation applies to records issued at or before it; re-enrollment after it is active', async () => {
    const reissued = await record('node', '10.88.0.8', 500);
    assert.deepEqual(
      computeActiveNodes(input([['node', reissued]], [['node', revoke('node', 400)]])).active.map(
        (r) => r.nodeId,
      ),
      ['node'],
    );
    assert.deepEqual(
      computeActiveNodes(input([['node', reissued]], [['node', revoke('node', 500)]])).active,
      [],
    );
  });

  test('invalid revocations are ignored and reported', async () => {
    const node = await record('node', '10.88.0.9', 1);
    const forged = { ...revoke('node', 10), revokedAt: 11 };
    const view = computeActiveNodes(
      input(
        [['node', node]],
        [
          ['node', revoke('node', 10, rogue)],
          ['forged', forged],
          ['misfiled', revoke('node', 10)],
          ['junk', [1, 2, 3]],
        ],
      ),
    );
    assert.deepEqual(
      view.active.map((r) => r.nodeId),
      ['node'],
    );
    assert.deepEqual(
      view.rejectedRevocations.map(({ key, reason }) => [key, reason]),
      [
        ['forged', 'bad-signature'],
        ['junk', 'schema'],
        ['misfiled', 'key-mismatch'],
        ['node', 'bad-signature'],
      ],
    );
  });

  test('accepts Map entries and works without a CIDR', async () => {
    const outside = await record('outside', '10.99.0.1', 1);
    const view = computeActiveNodes({
      caPublicKey: org.info.caPublicKey,
      records: new Map([['outside', outside]]),
      revocations: new Map(),
    });
    assert.deepEqual(
      view.active.map((r) => r.nodeId),
      ['outside'],
    );
  });
});
