import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { EnrollmentFormatError, parseEnrollmentBundle } from '../../src/identity/bundle.js';
import {
  allocateOverlayIp,
  enrollmentSigningPayload,
  issueEnrollment,
  OverlayIpExhaustedError,
  signEnrollmentRecord,
  signRevocation,
  verifyEnrollmentBundle,
  verifyEnrollmentRecord,
  verifyRevocation,
} from '../../src/identity/ca.js';
import { canonicalBytes } from '../../src/identity/canonical.js';
import { privateKeyFromText, publicKeyToBase64, signBytes } from '../../src/identity/ed25519.js';
import { signImageDigest, verifyImageDigest } from '../../src/identity/image-signing.js';
import { createOrg } from '../../src/identity/org.js';
import { makeRequest } from './helpers.js';

const org = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/24' });
const otherOrg = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/24' });

describe('enrollment CA', () => {
  test('issues a bundle whose record verifies under the CA', async () => {
    const request = await makeRequest('node-1');
    const bundle = issueEnrollment(org, request, {
      allocatedIps: [],
      issuedAt: 1_700_000_000_000,
      seedPeers: [],
    });
    assert.equal(bundle.v, 1);
    assert.equal(bundle.org, 'acme');
    assert.equal(bundle.overlayCidr, '10.88.0.0/24');
    assert.equal(bundle.caPublicKey, org.info.caPublicKey);
    assert.equal(bundle.record.overlayIp, '10.88.0.1');
    assert.equal(bundle.record.issuedAt, 1_700_000_000_000);
    assert.equal(bundle.record.peerId, request.peerId);
    assert.equal(verifyEnrollmentRecord(org.info.caPublicKey, bundle.record), null);
    assert.equal(verifyEnrollmentBundle(bundle), null);
    assert.equal(verifyEnrollmentBundle(bundle, { caPublicKey: org.info.caPublicKey, org: 'acme' }), null);
    // The bundle survives JSON (it is a file handed to the node).
    const roundTripped = parseEnrollmentBundle(JSON.stringify(bundle));
    assert.deepEqual(roundTripped, bundle);
    assert.equal(verifyEnrollmentBundle(roundTripped), null);
  });

  test('a tampered record fails with bad-signature', async () => {
    const { record } = issueEnrollment(org, await makeRequest('node-1'), { allocatedIps: [] });
    const tampered = [
      { ...record, overlayIp: '10.88.0.9' },
      { ...record, labels: { zone: 'b' } },
      { ...record, endpoints: [...record.endpoints, 'wg://198.51.100.1:51820'] },
      { ...record, capacity: { ...record.capacity, cpus: 64 } },
      { ...record, issuedAt: record.issuedAt + 1 },
      { ...record, nodeId: 'node-2' },
    ];
    // Signed by the right key but over the bare record, without the domain envelope.
    const { cert: _cert, ...body } = record;
    tampered.push({ ...record, cert: signBytes(org.caPrivateKey, canonicalBytes(body)) });
    for (const value of tampered) {
      assert.equal(verifyEnrollmentRecord(org.info.caPublicKey, value)?.reason, 'bad-signature');
    }
    const flipped = Buffer.from(record.cert, 'base64');
    flipped[10] = flipped[10]! ^ 1;
    assert.equal(
      verifyEnrollmentRecord(org.info.caPublicKey, { ...record, cert: flipped.toString('base64') })?.reason,
      'bad-signature',
    );
  });

  test('a record from another CA fails; a bundle from another CA is wrong-ca', async () => {
    const bundle = issueEnrollment(otherOrg, await makeRequest('node-1'), { allocatedIps: [] });
    assert.equal(verifyEnrollmentRecord(org.info.caPublicKey, bundle.record)?.reason, 'bad-signature');
    const failure = verifyEnrollmentBundle(bundle, { caPublicKey: org.info.caPublicKey });
    assert.equal(failure?.reason, 'wrong-ca');
    assert.match(failure?.message ?? '', /expected/);
    // A foreign record dressed up with our CA's public key.
    assert.equal(
      verifyEnrollmentBundle({ ...bundle, caPublicKey: org.info.caPublicKey })?.reason,
      'bad-signature',
    );
    assert.equal(verifyEnrollmentBundle(bundle, { org: 'other' })?.reason, 'wrong-org');
  });

  test('a bundle whose IP is outside its CIDR fails', async () => {
    const request = await makeRequest('node-1');
    const record = signEnrollmentRecord(org.caPrivateKey, {
      ...request,
      overlayIp: '10.99.0.1',
      issuedAt: 1,
    });
    const bundle = {
      v: 1,
      org: 'acme',
      overlayCidr: '10.88.0.0/24',
      caPublicKey: org.info.caPublicKey,
      seedPeers: [],
      record,
    };
    assert.equal(verifyEnrollmentBundle(bundle)?.reason, 'outside-cidr');
  });

  test('malformed bundles and records are rejected as schema errors with the field named', async () => {
    const seed = `/ip4/192.0.2.1/tcp/4001/p2p/${(await makeRequest('seed')).peerId}`;
    const bundle = issueEnrollment(org, await makeRequest('node-1'), { allocatedIps: [], seedPeers: [seed] });
    const { record, ...withoutRecord } = bundle;
    const malformed: [unknown, RegExp][] = [
      [null, /\(root\)/],
      ['just a string', /\(root\)/],
      [withoutRecord, /record/],
      [{ ...bundle, v: 2 }, /^v:/],
      [{ ...bundle, extra: true }, /extra/],
      [{ ...bundle, seedPeers: ['not a multiaddr'] }, /seedPeers\.0: not a multiaddr/],
      [{ ...bundle, overlayCidr: '10.88.0.1/24' }, /overlayCidr/],
      [{ ...bundle, record: { ...record, cert: undefined } }, /record\.cert/],
      [{ ...bundle, record: { ...record, overlayIp: '10.88.0' } }, /record\.overlayIp/],
      [{ ...bundle, record: { ...record, unsigned: 'x' } }, /unsigned/],
      [{ ...bundle, caPublicKey: 'short' }, /caPublicKey/],
    ];
    for (const [value, message] of malformed) {
      const failure = verifyEnrollmentBundle(value);
      assert.equal(failure?.reason, 'schema', JSON.stringify(value)?.slice(0, 80));
      assert.match(failure?.message ?? '', message);
      assert.throws(() => parseEnrollmentBundle(value), EnrollmentFormatError);
    }
    assert.throws(() => parseEnrollmentBundle('{"v":1,'), /malformed enrollment bundle: not JSON/);
    // Records: extra (unsigned) fields are refused, not silently dropped.
    assert.equal(verifyEnrollmentRecord(org.info.caPublicKey, { ...record, note: 'hi' })?.reason, 'schema');
    assert.equal(verifyEnrollmentRecord(org.info.caPublicKey, 42)?.reason, 'schema');
    assert.equal(verifyEnrollmentRecord(org.info.caPublicKey, { ...record, cert: '!!!' })?.reason, 'schema');
    assert.equal(
      verifyEnrollmentRecord(org.info.caPublicKey, { ...record, cert: 'AAAA' })?.reason,
      'bad-signature',
    );
  });

  test('issuing validates the request, peer id, endpoints and seed peers', async () => {
    const cases: [unknown, RegExp][] = [
      [{ ...(await makeRequest('n1')), peerId: 'not-a-peer-id' }, /peerId "not-a-peer-id"/],
      [
        { ...(await makeRequest('n1')), endpoints: ['192.0.2.1:51820'] },
        /neither wg:\/\/host:port nor a multiaddr/,
      ],
      [{ ...(await makeRequest('n1')), endpoints: ['wg://192.0.2.1:99999'] }, /is not wg:\/\/host:port/],
      [
        { ...(await makeRequest('n1')), wgPublicKey: `${'A'.repeat(43)}=`.replace(/A=$/, 'B=') },
        /WireGuard public key/,
      ],
      [{ ...(await makeRequest('n1')), nodeId: 'UPPER' }, /nodeId/],
      [{ ...(await makeRequest('n1')), overlayIp: '10.88.0.5' }, /overlayIp/],
      ['{"nodeId":', /not JSON/],
    ];
    for (const [request, message] of cases) {
      assert.throws(() => issueEnrollment(org, request, { allocatedIps: [] }), message);
    }
    assert.throws(
      () => issueEnrollment(org, cases[0]![0], { allocatedIps: [] }),
      (err: unknown) => err instanceof EnrollmentFormatError,
    );
    const request = await makeRequest('n1');
    assert.throws(
      () => issueEnrollment(org, request, { allocatedIps: [], seedPeers: ['/nope'] }),
      /seed peer/,
    );
    const rsaLikePeer = { ...request, peerId: 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N' };
    assert.throws(() => issueEnrollment(org, rsaLikePeer, { allocatedIps: [] }), /expected Ed25519/);
  });

  test('issuing requires the node key’s proof of possession over the whole request', async () => {
    const request = await makeRequest('n1');
    const other = await makeRequest('n1');
    const cases: [string, unknown, RegExp][] = [
      ['no proof', { ...request, proof: undefined }, /proof: missing: .*proof of possession.*silo node init/],
      ['a changed WireGuard key', { ...request, wgPublicKey: other.wgPublicKey }, /proof does not verify/],
      ['a changed label', { ...request, labels: { zone: 'b' } }, /proof does not verify/],
      [
        'a changed capacity',
        { ...request, capacity: { ...request.capacity, cpus: 64 } },
        /proof does not verify/,
      ],
      ['another node’s proof', { ...request, proof: other.proof }, /proof does not verify/],
      ['another node’s peer id', { ...request, peerId: other.peerId }, /proof does not verify/],
      ['a proof that is no signature', { ...request, proof: `${'A'.repeat(86)}==` }, /proof does not verify/],
      ['a malformed proof', { ...request, proof: 'short' }, /proof: Ed25519 signature/],
    ];
    for (const [what, input, message] of cases) {
      assert.throws(() => issueEnrollment(org, input, { allocatedIps: [] }), message, what);
    }
    // The untouched request still signs.
    assert.equal(issueEnrollment(org, request, { allocatedIps: [] }).record.peerId, request.peerId);
  });

  test('issuing uses a requested overlay IP when it is free', async () => {
    const bundle = issueEnrollment(org, await makeRequest('n1'), {
      allocatedIps: ['10.88.0.1'],
      overlayIp: '10.88.0.77',
    });
    assert.equal(bundle.record.overlayIp, '10.88.0.77');
  });
});

describe('overlay IP allocation', () => {
  test('lowest free host address, skipping network and broadcast', () => {
    assert.equal(allocateOverlayIp('10.88.0.0/24', []), '10.88.0.1');
    assert.equal(allocateOverlayIp('10.88.0.0/24', ['10.88.0.1', '10.88.0.3']), '10.88.0.2');
    assert.equal(allocateOverlayIp('10.88.0.0/24', ['garbage', '10.88.0.1', '']), '10.88.0.2');
    assert.equal(allocateOverlayIp('10.88.0.0/16', ['10.88.0.1']), '10.88.0.2');
    const all = Array.from({ length: 253 }, (_, i) => `10.88.0.${i + 1}`);
    assert.equal(allocateOverlayIp('10.88.0.0/24', all), '10.88.0.254');
  });

  test('exhaustion is an explicit error', () => {
    assert.deepEqual(
      [allocateOverlayIp('10.88.0.0/30', []), allocateOverlayIp('10.88.0.0/30', ['10.88.0.1'])],
      ['10.88.0.1', '10.88.0.2'],
    );
    assert.throws(
      () => allocateOverlayIp('10.88.0.0/30', ['10.88.0.1', '10.88.0.2']),
      (err: unknown) => err instanceof OverlayIpExhaustedError && /10\.88\.0\.0\/30/.test(err.message),
    );
  });

  test('a requested IP must be a free host address of the CIDR', () => {
    assert.equal(allocateOverlayIp('10.88.0.0/24', [], '10.88.0.200'), '10.88.0.200');
    assert.throws(
      () => allocateOverlayIp('10.88.0.0/24', ['10.88.0.200'], '10.88.0.200'),
      /already allocated/,
    );
    assert.throws(() => allocateOverlayIp('10.88.0.0/24', [], '10.88.0.0'), /not a host address/);
    assert.throws(() => allocateOverlayIp('10.88.0.0/24', [], '10.88.0.255'), /not a host address/);
    assert.throws(() => allocateOverlayIp('10.88.0.0/24', [], '10.88.1.1'), /not a host address/);
    assert.throws(() => allocateOverlayIp('10.88.0.0/24', [], '10.88.1'), /not an IPv4 address/);
  });

  test('property: repeated allocation yields unique in-range addresses until exhaustion', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 24, max: 30 }),
        fc.array(fc.integer({ min: 0, max: 255 })),
        (prefix, pre) => {
          const cidr = `10.77.0.0/${prefix}`;
          const size = 2 ** (32 - prefix);
          const allocated = new Set(pre.filter((n) => n < size).map((n) => `10.77.0.${n}`));
          const hosts = new Set(Array.from({ length: size - 2 }, (_, i) => `10.77.0.${i + 1}`));
          const expectedFree = [...hosts].filter((ip) => !allocated.has(ip)).length;
          for (let i = 0; i < expectedFree; i++) {
            const ip = allocateOverlayIp(cidr, allocated);
            assert.ok(hosts.has(ip), `${ip} in ${cidr}`);
            assert.ok(!allocated.has(ip), `${ip} unique`);
            allocated.add(ip);
          }
          assert.throws(() => allocateOverlayIp(cidr, allocated), OverlayIpExhaustedError);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('revocations', () => {
  test('sign and verify; tampering and other CAs fail', () => {
    const revocation = signRevocation(org.caPrivateKey, {
      nodeId: 'node-1',
      revokedAt: 5,
      reason: 'lost disk',
    });
    assert.equal(verifyRevocation(org.info.caPublicKey, revocation), null);
    assert.equal(
      verifyRevocation(org.info.caPublicKey, { ...revocation, revokedAt: 4 })?.reason,
      'bad-signature',
    );
    assert.equal(
      verifyRevocation(org.info.caPublicKey, { ...revocation, nodeId: 'node-2' })?.reason,
      'bad-signature',
    );
    assert.equal(verifyRevocation(otherOrg.info.caPublicKey, revocation)?.reason, 'bad-signature');
    assert.equal(verifyRevocation(org.info.caPublicKey, { nodeId: 'node-1' })?.reason, 'schema');
    assert.throws(
      () => signRevocation(org.caPrivateKey, { nodeId: 'X', revokedAt: -1, reason: '' }),
      /nodeId/,
    );
  });

  test('signatures are domain-separated: a revocation cert is not an enrollment cert', async () => {
    const { record } = issueEnrollment(org, await makeRequest('node-1'), { allocatedIps: [] });
    const revocation = signRevocation(org.caPrivateKey, { nodeId: 'node-1', revokedAt: 5, reason: '' });
    assert.equal(
      verifyEnrollmentRecord(org.info.caPublicKey, { ...record, cert: revocation.cert })?.reason,
      'bad-signature',
    );
  });
});

describe('image signing', () => {
  const digest = `sha256:${'ab'.repeat(32)}`;

  test('sign and verify a digest', () => {
    const signature = signImageDigest(org.caPrivateKey, digest);
    assert.equal(verifyImageDigest(org.info.caPublicKey, digest, signature), null);
    assert.equal(
      verifyImageDigest(org.info.caPublicKey, `sha256:${'cd'.repeat(32)}`, signature),
      'bad-signature',
    );
    assert.equal(verifyImageDigest(otherOrg.info.caPublicKey, digest, signature), 'bad-signature');
    assert.equal(verifyImageDigest(org.info.caPublicKey, digest, 'garbage'), 'bad-signature');
    assert.equal(verifyImageDigest(org.info.caPublicKey, 'sha256:ABC', signature), 'bad-digest');
    assert.throws(() => signImageDigest(org.caPrivateKey, 'md5:abc'), /sha256:<64 lowercase hex digits>/);
  });

  test('the signed message is the canonical {kind, digest} object', () => {
    const signature = signImageDigest(org.caPrivateKey, digest);
    const manual = signBytes(org.caPrivateKey, Buffer.from(`{"digest":"${digest}","kind":"silo-image"}`));
    // Ed25519 is deterministic: same key and message, same signature.
    assert.equal(signature, manual);
  });
});

describe('test vectors (docs/protocol.md, "Enrollment records, certificates and revocations")', () => {
  // Ed25519 is deterministic, so these pin the whole signing pipeline: canonical encoding, domain envelope, key format.
  const ca = privateKeyFromText('AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=');
  const caPublicKey = 'A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=';
  const record = {
    nodeId: 'node-1',
    peerId: '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA',
    wgPublicKey: 'cuprkYKf5y/Z8YWTjTLzUGMjiTmF/7xl2uxMcG4RxRA=',
    overlayIp: '10.88.0.1',
    endpoints: ['wg://192.0.2.1:51820', '/ip4/192.0.2.1/tcp/4001'],
    capacity: { cpus: 2, memoryMb: 4096, scratchMb: 10240 },
    labels: { zone: 'eu-1' },
    issuedAt: 1700000000000,
  };

  test('CA key, enrollment cert, revocation cert and image signature', () => {
    assert.equal(publicKeyToBase64(createPublicKey(ca)), caPublicKey);
    assert.equal(
      Buffer.from(enrollmentSigningPayload(record)).toString(),
      '{"kind":"silo-enrollment","record":{"capacity":{"cpus":2,"memoryMb":4096,"scratchMb":10240},' +
        '"endpoints":["wg://192.0.2.1:51820","/ip4/192.0.2.1/tcp/4001"],"issuedAt":1700000000000,' +
        '"labels":{"zone":"eu-1"},"nodeId":"node-1","overlayIp":"10.88.0.1",' +
        '"peerId":"12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",' +
        '"wgPublicKey":"cuprkYKf5y/Z8YWTjTLzUGMjiTmF/7xl2uxMcG4RxRA="}}',
    );
    const signed = signEnrollmentRecord(ca, record);
    assert.equal(
      signed.cert,
      'vHWkarJLWLVlekp4W4xEIsxXK6e92sO50o0XBlICHZ7pFSGmPIA9kxR8VnC3+sr/kn4VDFJPrn3JP8J9mi/XCg==',
    );
    assert.equal(verifyEnrollmentRecord(caPublicKey, signed), null);
    const revocation = signRevocation(ca, {
      nodeId: 'node-1',
      revokedAt: 1700000600000,
      reason: 'decommissioned',
    });
    assert.equal(
      revocation.cert,
      'cq8AYRXl9eRQfBWxwHilrjtFzaTsrz8myg8EAKJqdao4AsyIeWyQg3Y/CzdW6KWMWzosTD0xR7qKenLx+qyzBw==',
    );
    assert.equal(
      signImageDigest(ca, `sha256:${'ab'.repeat(32)}`),
      'Tawg/l60EaY5MudjbryzRPl2+wspomvvl5c0g8l3OzgBSZ7vvSeIcBLyzU8UEYldo3WatEsr+g05NDKDdaYTDQ==',
    );
  });
});
