import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { ScratchKeyIntake } from '../../src/agent/scratch-key-intake.js';
import { initNode } from '../../src/cli/commands/node.js';
import { initOrg } from '../../src/cli/commands/org.js';
import { signRevocation } from '../../src/identity/ca.js';
import { signatureHooks } from '../../src/identity/enrollment-verifier.js';
import { loadNodeIdentity, x25519WgKeys } from '../../src/identity/node-identity.js';
import { createOrg, loadOrg } from '../../src/identity/org.js';
import { SCRATCH_SECRETS_FILE, sealScratchSecretsFor } from '../../src/identity/org-scratch.js';
import { scratchKeysAfterRevocation, signEnrollment } from '../../src/identity/org-signing.js';
import { scratchSecretProblem } from '../../src/identity/scratch-secret-signing.js';
import { ScratchKeyring, unsealScratchSecret } from '../../src/reconciler/scratch-keys.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { EnrollmentView } from '../../src/state/enrollment-view.js';
import type { SignedScratchSecret } from '../../src/state/schemas.js';
import { tempDir } from '../cli/helpers.js';
import { quietLogger } from '../fixtures/state-store.js';

/**
 * Scratch key provisioning on the CA's side (docs/security.md, "Encrypted
 * scratch"): the org's generations, the sealed copies in bundles, the new
 * generation after a revocation, and the agent's intake of the enrollment
 * document's envelopes.
 */
describe('org scratch secrets and their envelopes', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let orgDir: string;
  const nodes = new Map<string, { request: unknown; wgPrivateKey: string }>();

  before(async () => {
    ({ dir, remove } = await tempDir('silo-orgscratch-'));
    orgDir = join(dir, 'org');
    await initOrg({ dir: orgDir, name: 'scratchorg', cidr: '10.77.0.0/24' });
    for (const id of ['n1', 'n2', 'n3', 'tool']) {
      const identityDir = join(dir, id);
      const init = await initNode({
        dir: identityDir,
        id,
        endpoints: ['/ip4/127.0.0.1/tcp/1'],
        cpus: 1,
        memoryMb: 256,
        scratchMb: 100,
        labels: {},
      });
      const identity = await loadNodeIdentity(identityDir, { wgKeys: x25519WgKeys });
      nodes.set(id, {
        request: JSON.parse(await readFile(init.requestFile, 'utf8')),
        wgPrivateKey: identity.wgPrivateKey,
      });
    }
  });
  after(() => remove());

  const sign = (id: string, role?: 'client') =>
    signEnrollment({
      orgDir,
      request: nodes.get(id)!.request,
      source: id,
      seeds: [],
      ...(role ? { role } : {}),
    });
  const open = (id: string, envelope: SignedScratchSecret) =>
    unsealScratchSecret(envelope, { nodeId: id, privateKey: nodes.get(id)!.wgPrivateKey });

  test('org init makes generation 1, kept as secret as the CA key', async () => {
    const info = await stat(join(orgDir, SCRATCH_SECRETS_FILE));
    assert.equal(info.mode & 0o777, 0o600);
    const file = JSON.parse(await readFile(join(orgDir, SCRATCH_SECRETS_FILE), 'utf8')) as {
      generations: { generation: number }[];
    };
    assert.deepEqual(
      file.generations.map((g) => g.generation),
      [1],
    );
  });

  test('a signed bundle carries every generation sealed to the node; a client gets none', async () => {
    const { bundle } = await sign('n1');
    const caKey = bundle.caPublicKey;
    assert.equal(bundle.scratchKeys?.length, 1);
    const envelope = bundle.scratchKeys![0]!;
    assert.equal(scratchSecretProblem(caKey, envelope), null);
    assert.equal(open('n1', envelope).length, 32);
    // Another node's key cannot open it, even claiming the id.
    assert.throws(() => open('n2', { ...envelope, nodeId: 'n2' }), /sealed to node "n2"|cannot be opened/);
    assert.throws(
      () => unsealScratchSecret(envelope, { nodeId: 'n1', privateKey: nodes.get('n2')!.wgPrivateKey }),
      /cannot be opened with this node's key/,
    );
    const client = await sign('tool', 'client');
    assert.equal(client.bundle.scratchKeys, undefined);
    await sign('n2');
    await sign('n3');
  });

  test('an envelope not signed by the org CA, or altered, is refused', async () => {
    const org = await loadOrg(orgDir);
    const other = createOrg({ name: 'other', overlayCidr: '10.78.0.0/24' });
    const record = (await sign('n1')).bundle.record;
    const secrets = new Map([[1, Buffer.alloc(32, 7)]]);
    const [forged] = sealScratchSecretsFor(other.caPrivateKey, secrets, record);
    assert.match(scratchSecretProblem(org.info.caPublicKey, forged) ?? '', /not the org CA's signature/);
    const [genuine] = sealScratchSecretsFor(org.caPrivateKey, secrets, record);
    assert.equal(scratchSecretProblem(org.info.caPublicKey, genuine), null);
    assert.match(
      scratchSecretProblem(org.info.caPublicKey, { ...genuine!, generation: 2 }) ?? '',
      /not the org CA's signature/,
    );
    assert.match(
      scratchSecretProblem(org.info.caPublicKey, { ...genuine!, extra: 1 }) ?? '',
      /malformed scratch key envelope/,
    );
  });

  test('a revocation starts a generation the revoked node never gets; a retry does not rotate again', async () => {
    const org = await loadOrg(orgDir);
    const revocation = signRevocation(org.caPrivateKey, { nodeId: 'n3', revokedAt: Date.now(), reason: 't' });
    const first = await scratchKeysAfterRevocation(orgDir, revocation);
    assert.equal(first.generation, 2);
    assert.equal(first.rotated, true);
    assert.deepEqual(first.keys.map((k) => k.nodeId).sort(), ['n1', 'n2'], 'not n3, not the client');
    assert.ok(first.keys.every((k) => k.generation === 2));
    const retry = await scratchKeysAfterRevocation(orgDir, revocation);
    assert.equal(retry.generation, 2);
    assert.equal(retry.rotated, false);
    // n1's copy of generation 2 is the same secret the org holds, and a later bundle carries 1 and 2.
    const fromRevoke = open('n1', first.keys.find((k) => k.nodeId === 'n1')!);
    const { bundle } = await sign('n1');
    assert.deepEqual(
      bundle.scratchKeys?.map((k) => k.generation),
      [1, 2],
    );
    assert.deepEqual(open('n1', bundle.scratchKeys![1]!), fromRevoke);
  });

  test('the agent takes signed envelopes for itself from the enrollment document, as they arrive', async () => {
    const org = await loadOrg(orgDir);
    const state = new ClusterState({ logger: quietLogger });
    const enrollment = new EnrollmentView({
      state,
      logger: quietLogger,
      registry: new Registry(),
      ...signatureHooks(org.info.caPublicKey),
    });
    const keyring = new ScratchKeyring();
    const intake = new ScratchKeyIntake({
      keyring,
      self: { nodeId: 'n2', wgPrivateKey: nodes.get('n2')!.wgPrivateKey },
      caPublicKey: org.info.caPublicKey,
      logger: quietLogger,
    });
    const { bundle } = await sign('n2');
    intake.addBundle(bundle.scratchKeys!.filter((k) => k.generation === 1));
    intake.start(enrollment);
    assert.equal(keyring.current(), 1);

    // An envelope another CA signed: ignored (a member cannot push a key of its choosing).
    const other = createOrg({ name: 'other', overlayCidr: '10.78.0.0/24' });
    const secrets = new Map([[5, Buffer.alloc(32, 9)]]);
    enrollment.putScratchKeys(sealScratchSecretsFor(other.caPrivateKey, secrets, bundle.record));
    assert.equal(keyring.current(), 1);
    assert.equal(enrollment.scratchKeysFor('n2').length, 0, 'the view hides unverified envelopes');

    const revocation = signRevocation(org.caPrivateKey, { nodeId: 'n3', revokedAt: 0, reason: 't' });
    const rotation = await scratchKeysAfterRevocation(orgDir, revocation);
    enrollment.putScratchKeys(rotation.keys);
    assert.equal(keyring.current(), 2, 'generation 2 arrived through the document');
    assert.ok(keyring.has(1), 'older generations stay');
    const expected = new ScratchKeyring();
    expected.add(2, open('n2', rotation.keys.find((k) => k.nodeId === 'n2')!));
    assert.deepEqual(keyring.keyFor('svc', 2), expected.keyFor('svc', 2), 'the org secret of generation 2');
    intake.stop();
    keyring.clear();
    assert.equal(keyring.current(), null);
    // A bundle with a forged envelope is a setup error, not silently ignored.
    const fresh = new ScratchKeyIntake({
      keyring: new ScratchKeyring(),
      self: { nodeId: 'n2', wgPrivateKey: nodes.get('n2')!.wgPrivateKey },
      caPublicKey: org.info.caPublicKey,
      logger: quietLogger,
    });
    assert.throws(
      () => fresh.addBundle(sealScratchSecretsFor(other.caPrivateKey, secrets, bundle.record)),
      /enrollment bundle: .*not the org CA's signature/,
    );
  });
});
