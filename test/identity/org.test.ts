import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { preSharedKey } from '@libp2p/pnet';
import { generateEd25519KeyPair, privateKeyToPem, publicKeyToBase64 } from '../../src/identity/ed25519.js';
import { KeyFileError } from '../../src/identity/key-files.js';
import {
  createOrg,
  generatePnetKey,
  loadOrg,
  ORG_FILES,
  parsePnetKey,
  saveOrg,
} from '../../src/identity/org.js';
import { tempDir } from './helpers.js';

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

function keyFileError(path: string, message: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof KeyFileError, `expected KeyFileError, got ${String(err)}`);
    assert.equal(err.path, path);
    assert.ok(err.message.includes(path), 'the message names the file');
    assert.match(err.message, message);
    return true;
  };
}

describe('org', () => {
  test('create, save and load round-trip with 0600 secrets', async (t) => {
    const dir = await tempDir(t);
    const org = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/16', privateNetwork: true });
    assert.equal(org.info.caPublicKey.length, 44);
    assert.equal(org.info.caPublicKey, publicKeyToBase64(createPublicKey(org.caPrivateKey)));
    await saveOrg(dir, org);
    assert.equal(await mode(join(dir, ORG_FILES.caKey)), 0o600);
    assert.equal(await mode(join(dir, ORG_FILES.pnetKey)), 0o600);
    assert.equal(await mode(join(dir, ORG_FILES.info)), 0o644);
    assert.match(await readFile(join(dir, ORG_FILES.caKey), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);

    const loaded = await loadOrg(dir);
    assert.deepEqual(loaded.info, org.info);
    assert.deepEqual(loaded.pnetKey, org.pnetKey);
    assert.equal(
      loaded.caPrivateKey.export({ format: 'pem', type: 'pkcs8' }),
      org.caPrivateKey.export({ format: 'pem', type: 'pkcs8' }),
    );
  });

  test('an org without a private-network key has no swarm.key', async (t) => {
    const dir = await tempDir(t);
    await saveOrg(dir, createOrg({ name: 'plain', overlayCidr: '10.89.0.0/24' }));
    const loaded = await loadOrg(dir);
    assert.equal(loaded.pnetKey, undefined);
  });

  test('refuses to overwrite an existing CA key unless asked', async (t) => {
    const dir = await tempDir(t);
    await saveOrg(dir, createOrg({ name: 'acme', overlayCidr: '10.88.0.0/16' }));
    const other = createOrg({ name: 'acme', overlayCidr: '10.88.0.0/16' });
    await assert.rejects(
      saveOrg(dir, other),
      keyFileError(join(dir, ORG_FILES.caKey), /refusing to overwrite/),
    );
    await saveOrg(dir, other, { overwrite: true });
    assert.equal((await loadOrg(dir)).info.caPublicKey, other.info.caPublicKey);
  });

  test('validates name and overlay CIDR', () => {
    const bad: [string, string, RegExp][] = [
      ['Acme', '10.0.0.0/16', /org name/],
      ['', '10.0.0.0/16', /org name/],
      ['acme', '10.0.0.1/16', /host bits set \(did you mean 10\.0\.0\.0\/16\?\)/],
      ['acme', '10.0.0.0/31', /prefix must be between/],
      ['acme', '10.0.0.0/4', /prefix must be between/],
      ['acme', '10.0.0.0', /a\.b\.c\.d\/prefix/],
      ['acme', '10.0.256.0/24', /octet "256"/],
      ['acme', '10.0.01.0/24', /leading zeros/],
      ['acme', 'fd00::/64', /a\.b\.c\.d\/prefix/],
    ];
    for (const [name, overlayCidr, message] of bad) {
      assert.throws(() => createOrg({ name, overlayCidr }), message, `${name} ${overlayCidr}`);
    }
  });

  describe('broken org directories fail with the path in the error', () => {
    async function savedOrg(t: Parameters<typeof tempDir>[0]): Promise<string> {
      const dir = await tempDir(t);
      await saveOrg(dir, createOrg({ name: 'acme', overlayCidr: '10.88.0.0/16', privateNetwork: true }));
      return dir;
    }

    test('missing ca.key', async (t) => {
      const dir = await savedOrg(t);
      const path = join(dir, ORG_FILES.caKey);
      await import('node:fs/promises').then((fs) => fs.unlink(path));
      await assert.rejects(loadOrg(dir), keyFileError(path, /is missing/));
    });

    test('empty ca.key', async (t) => {
      const dir = await savedOrg(t);
      const path = join(dir, ORG_FILES.caKey);
      await writeFile(path, '');
      await assert.rejects(loadOrg(dir), keyFileError(path, /empty \(truncated\?\)/));
    });

    test('truncated ca.key', async (t) => {
      const dir = await savedOrg(t);
      const path = join(dir, ORG_FILES.caKey);
      const pem = await readFile(path, 'utf8');
      await writeFile(path, pem.slice(0, 60));
      await assert.rejects(loadOrg(dir), keyFileError(path, /unusable: PEM has no END line/));
      await writeFile(path, pem.replace(/[A-Za-z0-9+/]{10}\n/, '\n'));
      await assert.rejects(loadOrg(dir), keyFileError(path, /unusable/));
    });

    test('garbage ca.key', async (t) => {
      const dir = await savedOrg(t);
      const path = join(dir, ORG_FILES.caKey);
      await writeFile(path, 'hello world, not a key\n');
      await assert.rejects(loadOrg(dir), keyFileError(path, /unusable: private key: not valid base64/));
      await writeFile(path, Buffer.from([0xff, 0xfe, 0x00, 0x81]));
      await assert.rejects(loadOrg(dir), keyFileError(path, /not UTF-8 text/));
    });

    test('ca.key of another key type', async (t) => {
      const dir = await savedOrg(t);
      const path = join(dir, ORG_FILES.caKey);
      const { generateKeyPairSync } = await import('node:crypto');
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      await writeFile(path, privateKey.export({ format: 'pem', type: 'pkcs8' }));
      await assert.rejects(loadOrg(dir), keyFileError(path, /expected an Ed25519 key, got ec/));
    });

    test('ca.key of another CA', async (t) => {
      const dir = await savedOrg(t);
      const path = join(dir, ORG_FILES.caKey);
      await writeFile(path, privateKeyToPem(generateEd25519KeyPair().privateKey));
      await assert.rejects(loadOrg(dir), keyFileError(path, /does not match caPublicKey/));
    });

    test('a raw base64 seed is accepted as ca.key', async (t) => {
      const dir = await savedOrg(t);
      const org = await loadOrg(dir);
      const der = org.caPrivateKey.export({ format: 'der', type: 'pkcs8' });
      await writeFile(join(dir, ORG_FILES.caKey), `${der.subarray(16).toString('base64')}\n`);
      assert.equal((await loadOrg(dir)).info.caPublicKey, org.info.caPublicKey);
    });

    test('missing, truncated and invalid org.json', async (t) => {
      const dir = await savedOrg(t);
      const path = join(dir, ORG_FILES.info);
      const text = await readFile(path, 'utf8');
      await writeFile(path, text.slice(0, text.length / 2));
      await assert.rejects(loadOrg(dir), keyFileError(path, /not valid JSON \(truncated or garbage\?\)/));
      await writeFile(path, JSON.stringify({ v: 1, name: 'acme', overlayCidr: '10.88.0.0/16' }));
      await assert.rejects(loadOrg(dir), keyFileError(path, /caPublicKey/));
      await import('node:fs/promises').then((fs) => fs.unlink(path));
      await assert.rejects(loadOrg(dir), keyFileError(path, /org info is missing/));
    });

    test('garbage swarm.key', async (t) => {
      const dir = await savedOrg(t);
      const path = join(dir, ORG_FILES.pnetKey);
      const text = await readFile(path, 'utf8');
      await writeFile(path, text.slice(0, 40));
      await assert.rejects(loadOrg(dir), keyFileError(path, /not a libp2p private-network key/));
      await writeFile(path, text.toUpperCase());
      await assert.rejects(loadOrg(dir), keyFileError(path, /not a libp2p private-network key/));
    });
  });

  test('pnet keys use the libp2p key file format and are accepted by @libp2p/pnet', () => {
    const key = generatePnetKey();
    const text = Buffer.from(key).toString('utf8');
    assert.match(text, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/);
    assert.equal(parsePnetKey(key).length, 32);
    // Constructing the protector decodes the key, and throws on a malformed one.
    const components = {
      logger: { forComponent: () => Object.assign(() => {}, { error() {}, trace() {} }) },
    };
    const protector = (psk: Uint8Array) =>
      preSharedKey({ psk })(components as unknown as Parameters<ReturnType<typeof preSharedKey>>[0]);
    assert.doesNotThrow(() => protector(key));
    assert.throws(() => protector(key.subarray(0, 40)));
    assert.notDeepEqual(generatePnetKey(), key);
  });
});
