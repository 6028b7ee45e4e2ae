import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  caFingerprint,
  formatJoinToken,
  type JoinToken,
  JoinTokenError,
  joinKeyOf,
  joinRequestMac,
  newTokenId,
  newTokenSecret,
  openFromProvisioner,
  parseHostPort,
  parseJoinToken,
  sealForJoiner,
  verifyJoinRequestMac,
} from '../../src/identity/join-token.js';
import { createOrg } from '../../src/identity/org.js';

function sampleToken(): JoinToken {
  const org = createOrg({ name: 'acme', overlayCidr: '10.42.0.0/16' });
  return {
    v: 1,
    org: 'acme',
    ca: caFingerprint(org.info.caPublicKey),
    at: '192.0.2.1:7948',
    id: newTokenId(),
    s: newTokenSecret(),
  };
}

describe('join token string', () => {
  test('round-trips and starts with silo1.', () => {
    const token = sampleToken();
    const text = formatJoinToken(token);
    assert.match(text, /^silo1\.[A-Za-z0-9_-]+$/);
    assert.deepEqual(parseJoinToken(text), token);
    assert.deepEqual(parseJoinToken(`  ${text}\n`), token);
  });

  test('garbage, a truncated token and a wrong field are refused without echoing the secret', () => {
    const token = sampleToken();
    const text = formatJoinToken(token);
    for (const bad of ['', 'hello', 'silo1.', 'silo1.!!!', text.slice(0, -5), `silo2.${text.slice(6)}`]) {
      assert.throws(() => parseJoinToken(bad), JoinTokenError, bad);
    }
    const wrong = `silo1.${Buffer.from(JSON.stringify({ ...token, ca: 'sha1:00' })).toString('base64url')}`;
    assert.throws(
      () => parseJoinToken(wrong),
      (err: Error) => err.message.includes('bad ca') && !err.message.includes(token.s),
    );
  });

  test('the CA fingerprint is SHA-256 of the raw public key', () => {
    const org = createOrg({ name: 'acme', overlayCidr: '10.42.0.0/16' });
    const raw = Buffer.from(org.info.caPublicKey, 'base64');
    assert.equal(
      caFingerprint(org.info.caPublicKey),
      `sha256:${createHash('sha256').update(raw).digest('hex')}`,
    );
    assert.notEqual(
      caFingerprint(createOrg({ name: 'acme', overlayCidr: '10.42.0.0/16' }).info.caPublicKey),
      caFingerprint(org.info.caPublicKey),
    );
  });

  test('host:port', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:7948'), { host: '127.0.0.1', port: 7948 });
    assert.deepEqual(parseHostPort('[::1]:80'), { host: '::1', port: 80 });
    assert.deepEqual(parseHostPort('ca.example.org:7948'), { host: 'ca.example.org', port: 7948 });
    for (const bad of ['127.0.0.1', ':80', 'a:0', 'a:70000', 'a b:1', 'http://a:1'])
      assert.equal(parseHostPort(bad), null, bad);
  });
});

describe('join key, request MAC and sealed answer', () => {
  const token = sampleToken();
  const key = joinKeyOf(token.id, token.s);
  const request = { nodeId: 'n7', peerId: '12D3KooWexample', labels: { zone: 'a' } };

  test('the join key is a one-way function of the secret, salted by the token id', () => {
    assert.equal(key.length, 32);
    assert.notEqual(key.toString('base64url'), token.s);
    assert.deepEqual(joinKeyOf(token.id, token.s), key);
    assert.notDeepEqual(joinKeyOf(newTokenId(), token.s), key);
    assert.throws(() => joinKeyOf(token.id, 'c2hvcnQ'), JoinTokenError);
  });

  test('the MAC verifies only for the same key, token id and request', () => {
    const mac = joinRequestMac(key, token.id, request);
    assert.equal(verifyJoinRequestMac(key, token.id, request, mac), true);
    assert.equal(verifyJoinRequestMac(joinKeyOf(token.id, newTokenSecret()), token.id, request, mac), false);
    assert.equal(verifyJoinRequestMac(key, newTokenId(), request, mac), false);
    assert.equal(verifyJoinRequestMac(key, token.id, { ...request, labels: { zone: 'b' } }, mac), false);
    assert.equal(verifyJoinRequestMac(key, token.id, request, mac.slice(0, -2)), false);
    assert.equal(verifyJoinRequestMac(key, token.id, request, ''), false);
    // Key order does not matter: the MAC covers the canonical encoding.
    const reordered = { labels: { zone: 'a' }, peerId: request.peerId, nodeId: request.nodeId };
    assert.equal(verifyJoinRequestMac(key, token.id, reordered, mac), true);
  });

  test('a sealed answer opens only with the same key, token id and peer id, and not after tampering', () => {
    const box = sealForJoiner(key, token.id, 'peer-a', '{"bundle":1}');
    assert.equal(box.alg, 'A256GCM');
    assert.ok(!box.ct.includes('bundle'));
    assert.equal(openFromProvisioner(key, token.id, 'peer-a', box), '{"bundle":1}');
    assert.equal(openFromProvisioner(joinKeyOf(token.id, newTokenSecret()), token.id, 'peer-a', box), null);
    assert.equal(openFromProvisioner(key, token.id, 'peer-b', box), null);
    assert.equal(openFromProvisioner(key, newTokenId(), 'peer-a', box), null);
    const flipped = Buffer.from(box.ct, 'base64url');
    flipped[0] = flipped[0]! ^ 1;
    assert.equal(
      openFromProvisioner(key, token.id, 'peer-a', { ...box, ct: flipped.toString('base64url') }),
      null,
    );
    assert.equal(openFromProvisioner(key, token.id, 'peer-a', { nope: true }), null);
    assert.equal(openFromProvisioner(key, token.id, 'peer-a', undefined), null);
  });
});
