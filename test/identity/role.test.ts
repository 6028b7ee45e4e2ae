import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  checkEnrollmentRecord,
  enrollmentSigningPayload,
  issueEnrollment,
  verifyEnrollmentRecord,
} from '../../src/identity/ca.js';
import { canonicalBytes } from '../../src/identity/canonical.js';
import { signBytes } from '../../src/identity/ed25519.js';
import { computeActiveNodes } from '../../src/identity/enrollment-verifier.js';
import { createOrg } from '../../src/identity/org.js';
import { isClient, ownershipMembers, parseRole, roleOf } from '../../src/identity/role.js';
import type { SignedEnrollment } from '../../src/state/schemas.js';
import { makeRequest } from './helpers.js';

const org = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/24' });
const ca = org.info.caPublicKey;

/** A record signed exactly as the CA signed before roles existed: the payload has no `role` key at all. */
async function preRoleRecord(nodeId: string): Promise<SignedEnrollment> {
  const req = await makeRequest(nodeId);
  const body = {
    nodeId: req.nodeId,
    peerId: req.peerId,
    wgPublicKey: req.wgPublicKey,
    overlayIp: '10.88.0.7',
    endpoints: req.endpoints,
    capacity: req.capacity,
    labels: req.labels,
    issuedAt: 1_700_000_000_000,
  };
  const cert = signBytes(org.caPrivateKey, canonicalBytes({ kind: 'silo-enrollment', record: body }));
  return { ...body, cert };
}

describe('enrollment roles: the signature', () => {
  test('a record signed before roles existed still verifies, byte for byte', async () => {
    const old = await preRoleRecord('node-old');
    const { cert: _cert, ...body } = old;
    assert.deepEqual(
      enrollmentSigningPayload(body),
      canonicalBytes({ kind: 'silo-enrollment', record: body }),
    );
    const checked = checkEnrollmentRecord(ca, old);
    assert.ok(checked.ok);
    assert.equal(checked.value.role, undefined);
    assert.equal(roleOf(checked.value), 'node');
  });

  test('adding a role to a signed record without one breaks its signature', async () => {
    const old = await preRoleRecord('node-old');
    for (const role of ['node', 'client'] as const) {
      assert.equal(verifyEnrollmentRecord(ca, { ...old, role })?.reason, 'bad-signature', role);
    }
  });

  test('a client record verifies; changing or removing its role breaks the signature', async () => {
    const { record } = issueEnrollment(org, await makeRequest('tool-1'), {
      allocatedIps: [],
      role: 'client',
    });
    assert.equal(record.role, 'client');
    assert.equal(verifyEnrollmentRecord(ca, record), null);
    assert.equal(verifyEnrollmentRecord(ca, { ...record, role: 'node' })?.reason, 'bad-signature');
    const { role: _role, ...without } = record;
    assert.equal(verifyEnrollmentRecord(ca, without)?.reason, 'bad-signature');
  });

  test('a node role is recorded as no field, so agents before roles accept the record', async () => {
    const request = await makeRequest('node-1');
    for (const options of [{}, { role: 'node' as const }]) {
      const { record } = issueEnrollment(org, request, { allocatedIps: [], ...options });
      assert.equal(Object.hasOwn(record, 'role'), false);
      assert.equal(verifyEnrollmentRecord(ca, record), null);
    }
  });

  test('an unknown role is a schema failure, even when signed', async () => {
    const { record } = issueEnrollment(org, await makeRequest('tool-1'), { allocatedIps: [] });
    const { cert: _cert, ...body } = record;
    const odd = { ...body, role: 'admin' };
    const cert = signBytes(org.caPrivateKey, canonicalBytes({ kind: 'silo-enrollment', record: odd }));
    assert.equal(verifyEnrollmentRecord(ca, { ...odd, cert })?.reason, 'schema');
    assert.equal(parseRole('admin'), null);
    assert.equal(parseRole('client'), 'client');
  });
});

describe('enrollment roles: the active set', () => {
  test('a client is active (admitted) but not an ownership member', async () => {
    const node = issueEnrollment(org, await makeRequest('node-1'), { allocatedIps: [] }).record;
    const tool = issueEnrollment(org, await makeRequest('tool-1'), {
      allocatedIps: [node.overlayIp],
      role: 'client',
    }).record;
    const view = computeActiveNodes({
      caPublicKey: ca,
      records: [
        [node.nodeId, node],
        [tool.nodeId, tool],
      ],
      revocations: [],
    });
    assert.deepEqual(
      view.active.map((r) => r.nodeId),
      ['node-1', 'tool-1'],
    );
    assert.ok(view.byPeerId.has(tool.peerId), 'the gater admits the client');
    assert.deepEqual(
      view.members.map((r) => r.nodeId),
      ['node-1'],
    );
    assert.deepEqual([...view.clientIds], ['tool-1']);
    assert.equal(isClient(tool), true);
    assert.deepEqual(ownershipMembers([node, tool]), [node]);
  });
});
