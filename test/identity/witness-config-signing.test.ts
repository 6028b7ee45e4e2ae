import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { EnrollmentTrust } from '../../src/agent/trust.js';
import { EnrollmentFormatError, parseEnrollmentBundle } from '../../src/identity/bundle.js';
import {
  checkWitnessConfigRecord,
  issueEnrollment,
  signWitnessConfig,
  verifyEnrollmentBundle,
  verifyWitnessConfigRecord,
  witnessConfigSigningPayload,
} from '../../src/identity/ca.js';
import { canonicalBytes } from '../../src/identity/canonical.js';
import { signBytes } from '../../src/identity/ed25519.js';
import { signatureHooks } from '../../src/identity/enrollment-verifier.js';
import { KeyFileError } from '../../src/identity/key-files.js';
import {
  createOrg,
  currentWitnessConfig,
  readWitnessConfigs,
  saveWitnessConfig,
  witnessConfigPath,
} from '../../src/identity/org.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { EnrollmentView } from '../../src/state/enrollment-view.js';
import type { InvalidRecord } from '../../src/state/record-check.js';
import type { WitnessConfigRecord } from '../../src/state/schemas.js';
import { quietLogger } from '../fixtures/state-store.js';
import { makeRequest, tempDir } from './helpers.js';

const org = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/24' });
const otherOrg = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/24' });
const ISSUED = 1_700_000_000_000;

function viewWithHooks() {
  const state = new ClusterState({ logger: quietLogger });
  const invalid: InvalidRecord[] = [];
  const enrollment = new EnrollmentView({
    state,
    logger: quietLogger,
    registry: new Registry(),
    onInvalid: (r) => invalid.push(r),
    ...signatureHooks(org.info.caPublicKey),
  });
  return { enrollment, invalid };
}

describe('witness configuration signing', () => {
  test('round trip: signed records verify, witnesses sorted, the payload is the documented envelope', () => {
    const record = signWitnessConfig(org.caPrivateKey, {
      version: 2,
      witnesses: ['n3', 'n1'],
      issuedAt: ISSUED,
    });
    assert.deepEqual(record.witnesses, ['n1', 'n3']);
    assert.equal(record.version, 2);
    assert.equal(record.issuedAt, ISSUED);
    assert.equal(verifyWitnessConfigRecord(org.info.caPublicKey, record), null);
    const checked = checkWitnessConfigRecord(org.info.caPublicKey, JSON.parse(JSON.stringify(record)));
    assert.ok(checked.ok);
    assert.deepEqual(checked.value, record);
    assert.deepEqual(
      witnessConfigSigningPayload(record),
      canonicalBytes({
        kind: 'silo-witness-config',
        config: { version: 2, witnesses: ['n1', 'n3'], issuedAt: ISSUED },
      }),
    );
    // A set: the same witnesses in another order carry the same signature.
    assert.equal(
      verifyWitnessConfigRecord(org.info.caPublicKey, { ...record, witnesses: ['n3', 'n1'] }),
      null,
    );
  });

  test('refuses to sign a malformed configuration', () => {
    const bad = [
      { version: 0, witnesses: ['n1'], issuedAt: ISSUED },
      { version: 1, witnesses: [], issuedAt: ISSUED },
      { version: 1, witnesses: ['n1', 'n1'], issuedAt: ISSUED },
      { version: 1, witnesses: ['N_1'], issuedAt: ISSUED },
      { version: 1, witnesses: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'], issuedAt: ISSUED },
    ];
    for (const body of bad) {
      assert.throws(
        () => signWitnessConfig(org.caPrivateKey, body),
        EnrollmentFormatError,
        JSON.stringify(body),
      );
    }
  });

  test('tampered, foreign-CA, unsigned, extra-field and other-domain records fail', () => {
    const record = signWitnessConfig(org.caPrivateKey, { version: 1, witnesses: ['n1'], issuedAt: ISSUED });
    const reason = (value: unknown) => verifyWitnessConfigRecord(org.info.caPublicKey, value)?.reason;
    assert.equal(reason({ ...record, witnesses: ['n1', 'n2'] }), 'bad-signature');
    assert.equal(reason({ ...record, version: 2 }), 'bad-signature');
    assert.equal(reason({ ...record, issuedAt: ISSUED + 1 }), 'bad-signature');
    assert.equal(
      reason(signWitnessConfig(otherOrg.caPrivateKey, { version: 1, witnesses: ['n1'], issuedAt: ISSUED })),
      'bad-signature',
    );
    const { cert: _cert, ...unsigned } = record;
    assert.equal(reason(unsigned), 'schema');
    assert.equal(reason({ ...record, extra: true }), 'schema');
    assert.equal(reason({ ...record, witnesses: ['n1', 'n1'] }), 'schema');
    // A signature made for another purpose (a revocation envelope over the same fields) is not a witness one.
    const otherDomain = signBytes(
      org.caPrivateKey,
      canonicalBytes({
        kind: 'silo-revocation',
        config: { version: 1, witnesses: ['n1'], issuedAt: ISSUED },
      }),
    );
    assert.equal(reason({ ...record, cert: otherDomain }), 'bad-signature');
  });

  test('an EnrollmentView with the signature hooks ignores tampered, foreign and unsigned configurations', () => {
    const { enrollment, invalid } = viewWithHooks();
    const v1 = signWitnessConfig(org.caPrivateKey, { version: 1, witnesses: ['n1'], issuedAt: ISSUED });
    enrollment.putWitnessConfig(v1);
    assert.deepEqual(enrollment.witnessConfig(), v1);

    // v2: tampered after signing (a second witness slipped in).
    const genuineV2 = signWitnessConfig(org.caPrivateKey, {
      version: 2,
      witnesses: ['n1', 'n2'],
      issuedAt: ISSUED + 1,
    });
    enrollment.putWitnessConfig({ ...genuineV2, witnesses: ['n1', 'n2', 'evil'] });
    // v3: signed by another CA key.
    enrollment.putWitnessConfig(
      signWitnessConfig(otherOrg.caPrivateKey, { version: 3, witnesses: ['evil'], issuedAt: ISSUED + 2 }),
    );
    // v4: no signature at all (a cert of the right shape that signs nothing).
    enrollment.putWitnessConfig({
      version: 4,
      witnesses: ['evil'],
      issuedAt: ISSUED + 3,
      cert: Buffer.alloc(64).toString('base64'),
    });
    assert.deepEqual(enrollment.witnessConfig(), v1, 'the newest VALID version is in force');
    const unverified = invalid.filter((r) => r.kind === 'unverified' && r.map === 'witnesses');
    assert.deepEqual(unverified.map((r) => r.key).sort(), ['v2', 'v3', 'v4']);

    enrollment.putWitnessConfig(genuineV2);
    assert.deepEqual(enrollment.witnessConfig(), genuineV2);
  });
});

describe('enrollment bundle with a witness configuration', () => {
  test('carries it optionally; old bundles without it still load; a forged one fails verification', async () => {
    const bundle = issueEnrollment(org, await makeRequest('n1'), { allocatedIps: [], issuedAt: ISSUED });
    assert.equal(bundle.witnessConfig, undefined);
    assert.deepEqual(parseEnrollmentBundle(JSON.stringify(bundle)), bundle, 'a bundle without it loads');
    assert.equal(verifyEnrollmentBundle(bundle), null);

    const witnessConfig = signWitnessConfig(org.caPrivateKey, {
      version: 1,
      witnesses: ['n1'],
      issuedAt: ISSUED,
    });
    const withConfig = { ...bundle, witnessConfig };
    assert.deepEqual(parseEnrollmentBundle(JSON.stringify(withConfig)), withConfig);
    assert.equal(verifyEnrollmentBundle(withConfig), null);
    const forged = {
      ...bundle,
      witnessConfig: signWitnessConfig(otherOrg.caPrivateKey, {
        version: 1,
        witnesses: ['n1'],
        issuedAt: ISSUED,
      }),
    };
    assert.equal(verifyEnrollmentBundle(forged)?.reason, 'bad-signature');
    assert.throws(
      () => parseEnrollmentBundle({ ...withConfig, witnessConfig: { ...witnessConfig, extra: 1 } }),
      EnrollmentFormatError,
    );
  });
});

describe('agent start (EnrollmentTrust.start)', () => {
  async function startWith(
    witnessConfig: WitnessConfigRecord | undefined,
    inDocument: WitnessConfigRecord[],
  ) {
    const { enrollment } = viewWithHooks();
    for (const record of inDocument) enrollment.putWitnessConfig(record);
    const bundle = {
      ...issueEnrollment(org, await makeRequest('n1'), { allocatedIps: [], issuedAt: ISSUED }),
      ...(witnessConfig ? { witnessConfig } : {}),
    };
    const trust = new EnrollmentTrust({ bundle, enrollment, logger: quietLogger, registry: new Registry() });
    trust.start();
    trust.stop();
    return enrollment.witnessConfig();
  }
  const v1 = signWitnessConfig(org.caPrivateKey, { version: 1, witnesses: ['n1'], issuedAt: ISSUED });
  const v2 = signWitnessConfig(org.caPrivateKey, {
    version: 2,
    witnesses: ['n1', 'n2'],
    issuedAt: ISSUED + 1,
  });

  test("puts the bundle's configuration when the document has none or an older one, never an older one", async () => {
    assert.deepEqual(await startWith(v1, []), v1);
    assert.deepEqual(await startWith(v2, [v1]), v2);
    assert.deepEqual(await startWith(v1, [v2]), v2, 'a newer one in the document stays');
    assert.equal(await startWith(undefined, []), null, 'an old bundle without one');
  });

  test('does not carry a forged configuration from a bundle', async () => {
    const forged = signWitnessConfig(otherOrg.caPrivateKey, {
      version: 3,
      witnesses: ['evil'],
      issuedAt: ISSUED,
    });
    assert.deepEqual(await startWith(forged, [v1]), v1);
  });
});

describe('org directory witness history', () => {
  const verify = (record: WitnessConfigRecord) => {
    const failure = verifyWitnessConfigRecord(org.info.caPublicKey, record);
    return failure === null ? null : failure.message;
  };

  test('keeps every version, reads the current one, refuses a second record under a version', async (t) => {
    const dir = await tempDir(t);
    assert.deepEqual(await readWitnessConfigs(dir), []);
    assert.equal(await currentWitnessConfig(dir), null);
    const v1 = signWitnessConfig(org.caPrivateKey, { version: 1, witnesses: ['n1'], issuedAt: ISSUED });
    const v2 = signWitnessConfig(org.caPrivateKey, {
      version: 2,
      witnesses: ['n1', 'n2'],
      issuedAt: ISSUED + 1,
    });
    assert.equal(await saveWitnessConfig(dir, v2), witnessConfigPath(dir, 2));
    await saveWitnessConfig(dir, v1);
    await saveWitnessConfig(dir, v1); // the same record again: no change
    assert.deepEqual(await readWitnessConfigs(dir, verify), [v1, v2]);
    assert.deepEqual(await currentWitnessConfig(dir, verify), v2);
    const other = signWitnessConfig(org.caPrivateKey, {
      version: 2,
      witnesses: ['n3'],
      issuedAt: ISSUED + 2,
    });
    await assert.rejects(saveWitnessConfig(dir, other), KeyFileError);
    assert.deepEqual(JSON.parse(await readFile(witnessConfigPath(dir, 2), 'utf8')), v2);
  });

  test('a file that is malformed, misnamed or not signed by the CA fails naming the file', async (t) => {
    const dir = await tempDir(t);
    const v1 = signWitnessConfig(org.caPrivateKey, { version: 1, witnesses: ['n1'], issuedAt: ISSUED });
    await saveWitnessConfig(dir, v1);
    const path = witnessConfigPath(dir, 1);
    await writeFile(path, JSON.stringify({ ...v1, witnesses: ['n1', 'n2'] }));
    await assert.rejects(currentWitnessConfig(dir, verify), (err: unknown) => {
      assert.ok(err instanceof KeyFileError);
      assert.equal(err.path, path);
      assert.match(err.message, /cert is not a valid CA signature/);
      return true;
    });
    await writeFile(path, JSON.stringify({ ...v1, version: 2 }));
    await assert.rejects(currentWitnessConfig(dir), /holds witness configuration version 2/);
    await writeFile(path, '{"version": 1');
    await assert.rejects(currentWitnessConfig(dir), KeyFileError);
  });
});
