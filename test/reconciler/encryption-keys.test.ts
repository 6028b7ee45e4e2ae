import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { x25519WgKeys } from '../../src/identity/node-identity.js';
import {
  deriveScratchKey,
  newScratchSecret,
  ScratchKeyError,
  ScratchKeyring,
  scratchPassword,
  sealScratchSecret,
  unsealScratchSecret,
} from '../../src/reconciler/scratch-keys.js';

async function nodeKeys(): Promise<{ privateKey: string; publicKey: string }> {
  const privateKey = await x25519WgKeys.genkey();
  return { privateKey, publicKey: await x25519WgKeys.pubkey(privateKey) };
}

describe('deriveScratchKey', () => {
  const secret = Buffer.alloc(32, 7);

  test('is deterministic per secret, workload and generation, and unrelated otherwise', () => {
    const key = deriveScratchKey(secret, 'db', 1);
    assert.equal(key.length, 32);
    assert.deepEqual(deriveScratchKey(secret, 'db', 1), key);
    assert.notDeepEqual(deriveScratchKey(secret, 'db2', 1), key);
    assert.notDeepEqual(deriveScratchKey(secret, 'db', 2), key);
    assert.notDeepEqual(deriveScratchKey(Buffer.alloc(32, 8), 'db', 1), key);
  });

  test('bad input fails clearly', () => {
    assert.throws(() => deriveScratchKey(Buffer.alloc(16), 'db', 1), /32 bytes, got 16/);
    assert.throws(() => deriveScratchKey(secret, '../etc', 1), /invalid workload name/);
    assert.throws(() => deriveScratchKey(secret, 'db', 0), /positive integer/);
    assert.throws(() => deriveScratchKey(secret, 'db', 1.5), ScratchKeyError);
  });

  test('the gocryptfs password is one hex line', () => {
    const password = scratchPassword(deriveScratchKey(secret, 'db', 1)).toString('utf8');
    assert.match(password, /^[0-9a-f]{64}\n$/);
    assert.throws(() => scratchPassword(Buffer.alloc(3)), /32 bytes/);
  });
});

describe('sealed scratch secrets', () => {
  test('round trip to the right node', async () => {
    const keys = await nodeKeys();
    const secret = newScratchSecret();
    const sealed = sealScratchSecret(secret, { nodeId: 'n1', publicKey: keys.publicKey }, 3);
    assert.equal(sealed.generation, 3);
    assert.ok(!JSON.stringify(sealed).includes(secret.toString('base64')));
    assert.deepEqual(unsealScratchSecret(sealed, { nodeId: 'n1', privateKey: keys.privateKey }), secret);
  });

  test('another node, another key, a changed generation or flipped bytes are refused', async () => {
    const keys = await nodeKeys();
    const other = await nodeKeys();
    const sealed = sealScratchSecret(newScratchSecret(), { nodeId: 'n1', publicKey: keys.publicKey }, 1);
    assert.throws(
      () => unsealScratchSecret(sealed, { nodeId: 'n2', privateKey: keys.privateKey }),
      /sealed to node "n1", not "n2"/,
    );
    assert.throws(
      () => unsealScratchSecret(sealed, { nodeId: 'n1', privateKey: other.privateKey }),
      /cannot be opened with this node's key/,
    );
    assert.throws(
      () => unsealScratchSecret({ ...sealed, generation: 2 }, { nodeId: 'n1', privateKey: keys.privateKey }),
      /cannot be opened/,
    );
    const ct = Buffer.from(sealed.ct, 'base64');
    ct[0]! ^= 1;
    assert.throws(
      () =>
        unsealScratchSecret(
          { ...sealed, ct: ct.toString('base64') },
          { nodeId: 'n1', privateKey: keys.privateKey },
        ),
      /cannot be opened/,
    );
    assert.throws(
      () => unsealScratchSecret({ ...sealed, epk: 'short' }, { nodeId: 'n1', privateKey: keys.privateKey }),
      /32 bytes of base64/,
    );
    assert.throws(
      () => sealScratchSecret(Buffer.alloc(5), { nodeId: 'n1', publicKey: keys.publicKey }, 1),
      /32 bytes, got 5/,
    );
  });
});

describe('ScratchKeyring', () => {
  test('derives per generation, reports the newest, refuses unknown generations', () => {
    const ring = new ScratchKeyring();
    assert.equal(ring.current(), null);
    const s1 = newScratchSecret();
    const s2 = newScratchSecret();
    ring.add(1, s1);
    ring.add(2, s2);
    assert.equal(ring.current(), 2);
    assert.deepEqual(ring.keyFor('db', 1), deriveScratchKey(s1, 'db', 1));
    assert.throws(() => ring.keyFor('db', 3), /no scratch key generation 3 on this node \(held: 1, 2\)/);
    ring.clear();
    assert.equal(ring.current(), null);
    assert.throws(() => ring.keyFor('db', 1), /held: none/);
  });
});
