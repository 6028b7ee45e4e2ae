import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { EnrollmentFormatError } from '../../src/identity/bundle.js';
import { KeyFileError } from '../../src/identity/key-files.js';
import {
  createNodeIdentity,
  enrollmentRequest,
  loadNodeIdentity,
  NODE_FILES,
  saveNodeIdentity,
  wgPrivateKeyPath,
  x25519WgKeys,
} from '../../src/identity/node-identity.js';
import { verifyRequestProof } from '../../src/identity/request-proof.js';
import { ExecaRunner } from '../../src/overlay/exec.js';
import { WG_KEY_PATTERN, Wg } from '../../src/overlay/wg.js';
import { requireOrSkip } from '../overlay/tools.js';
import { tempDir } from './helpers.js';

const wg = new Wg({ runner: new ExecaRunner() });

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

function keyFileError(path: string, message: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof KeyFileError, `expected KeyFileError, got ${String(err)}`);
    assert.equal(err.path, path);
    assert.match(err.message, message);
    return true;
  };
}

describe('node identity', () => {
  test('wg genkey/pubkey through wireguard-tools, saved and loaded with 0600 keys', async (t) => {
    if (!(await requireOrSkip(t, { tools: ['wg'] }))) return;
    const dir = await tempDir(t);
    const identity = await createNodeIdentity('node-1', { wgKeys: wg });
    assert.match(identity.wgPrivateKey, WG_KEY_PATTERN);
    assert.match(identity.wgPublicKey, WG_KEY_PATTERN);
    assert.equal(identity.peerId, peerIdFromPrivateKey(identity.libp2pPrivateKey).toString());
    assert.match(identity.peerId, /^12D3KooW/);

    await saveNodeIdentity(dir, identity);
    assert.equal(await mode(join(dir, NODE_FILES.libp2pKey)), 0o600);
    assert.equal(await mode(wgPrivateKeyPath(dir)), 0o600);
    assert.equal(await mode(join(dir, NODE_FILES.info)), 0o644);
    // wg.key is in the format `wg` itself reads.
    const fromFile = await wg.pubkey((await readFile(wgPrivateKeyPath(dir), 'utf8')).trim());
    assert.equal(fromFile, identity.wgPublicKey);

    const loaded = await loadNodeIdentity(dir, { wgKeys: wg });
    assert.equal(loaded.nodeId, 'node-1');
    assert.equal(loaded.peerId, identity.peerId);
    assert.equal(loaded.wgPublicKey, identity.wgPublicKey);
    assert.deepEqual(loaded.libp2pPrivateKey.raw, identity.libp2pPrivateKey.raw);
  });

  test('node:crypto X25519 keys agree with wg pubkey', async (t) => {
    if (!(await requireOrSkip(t, { tools: ['wg'] }))) return;
    for (let i = 0; i < 5; i++) {
      const ours = await x25519WgKeys.genkey();
      assert.equal(await x25519WgKeys.pubkey(ours), await wg.pubkey(ours));
      const theirs = await wg.genkey();
      assert.equal(await x25519WgKeys.pubkey(theirs), await wg.pubkey(theirs));
    }
  });

  test('rejects invalid node ids and refuses to overwrite an identity', async (t) => {
    await assert.rejects(createNodeIdentity('Node_1', { wgKeys: x25519WgKeys }), /invalid node id "Node_1"/);
    const dir = await tempDir(t);
    await saveNodeIdentity(dir, await createNodeIdentity('n1', { wgKeys: x25519WgKeys }));
    const other = await createNodeIdentity('n1', { wgKeys: x25519WgKeys });
    await assert.rejects(saveNodeIdentity(dir, other), keyFileError(join(dir, NODE_FILES.info), /refusing/));
  });

  describe('broken node directories fail with the path in the error', () => {
    async function savedNode(t: Parameters<typeof tempDir>[0]): Promise<string> {
      const dir = await tempDir(t);
      await saveNodeIdentity(dir, await createNodeIdentity('n1', { wgKeys: x25519WgKeys }));
      return dir;
    }

    test('missing libp2p.key', async (t) => {
      const dir = await savedNode(t);
      const path = join(dir, NODE_FILES.libp2pKey);
      await unlink(path);
      await assert.rejects(loadNodeIdentity(dir, { wgKeys: x25519WgKeys }), keyFileError(path, /is missing/));
    });

    test('truncated libp2p.key', async (t) => {
      const dir = await savedNode(t);
      const path = join(dir, NODE_FILES.libp2pKey);
      const text = (await readFile(path, 'utf8')).trim();
      // Still valid base64, but fewer bytes than the protobuf announces.
      await writeFile(path, `${text.slice(0, 40)}\n`);
      await assert.rejects(
        loadNodeIdentity(dir, { wgKeys: x25519WgKeys }),
        keyFileError(path, /truncated or garbage/),
      );
      await writeFile(path, `${text.slice(0, 41)}\n`);
      await assert.rejects(loadNodeIdentity(dir, { wgKeys: x25519WgKeys }), keyFileError(path, /base64/));
    });

    test('garbage libp2p.key', async (t) => {
      const dir = await savedNode(t);
      const path = join(dir, NODE_FILES.libp2pKey);
      await writeFile(path, 'not a key at all!\n');
      await assert.rejects(
        loadNodeIdentity(dir, { wgKeys: x25519WgKeys }),
        keyFileError(path, /not valid base64/),
      );
      await writeFile(path, `${Buffer.from('random garbage bytes here').toString('base64')}\n`);
      await assert.rejects(
        loadNodeIdentity(dir, { wgKeys: x25519WgKeys }),
        keyFileError(path, /not a libp2p protobuf private key/),
      );
    });

    test('libp2p.key of another node', async (t) => {
      const dir = await savedNode(t);
      const other = await savedNode(t);
      const path = join(dir, NODE_FILES.libp2pKey);
      await writeFile(path, await readFile(join(other, NODE_FILES.libp2pKey)));
      await assert.rejects(
        loadNodeIdentity(dir, { wgKeys: x25519WgKeys }),
        keyFileError(path, /node\.json says/),
      );
    });

    test('empty, garbage and foreign wg.key', async (t) => {
      const dir = await savedNode(t);
      const path = wgPrivateKeyPath(dir);
      await writeFile(path, '');
      await assert.rejects(loadNodeIdentity(dir, { wgKeys: x25519WgKeys }), keyFileError(path, /empty/));
      await writeFile(path, 'abc\n');
      await assert.rejects(loadNodeIdentity(dir, { wgKeys: x25519WgKeys }), keyFileError(path, /unusable/));
      await writeFile(path, `${await x25519WgKeys.genkey()}\n`);
      await assert.rejects(
        loadNodeIdentity(dir, { wgKeys: x25519WgKeys }),
        keyFileError(path, /does not match/),
      );
    });

    test('garbage node.json', async (t) => {
      const dir = await savedNode(t);
      const path = join(dir, NODE_FILES.info);
      await writeFile(path, '{"v":1,"nodeId":');
      await assert.rejects(
        loadNodeIdentity(dir, { wgKeys: x25519WgKeys }),
        keyFileError(path, /not valid JSON/),
      );
      await writeFile(path, '{"v":2}');
      await assert.rejects(
        loadNodeIdentity(dir, { wgKeys: x25519WgKeys }),
        keyFileError(path, /invalid node identity/),
      );
    });
  });

  test('enrollment request carries ids and public keys, validated', async () => {
    const identity = await createNodeIdentity('n1', { wgKeys: x25519WgKeys });
    const request = enrollmentRequest(identity, {
      endpoints: ['wg://192.0.2.1:51820'],
      capacity: { cpus: 4, memoryMb: 8192, scratchMb: 10240 },
      labels: { zone: 'b' },
    });
    assert.deepEqual(Object.keys(request).sort(), [
      'capacity',
      'endpoints',
      'labels',
      'nodeId',
      'peerId',
      'proof',
      'wgPublicKey',
    ]);
    assert.equal(request.peerId, identity.peerId);
    assert.ok(verifyRequestProof(request), 'signed by the node key');
    assert.equal(request.wgPublicKey, identity.wgPublicKey);
    assert.ok(!JSON.stringify(request).includes(identity.wgPrivateKey), 'no secret in the request');
    assert.throws(
      () => enrollmentRequest(identity, { endpoints: [], capacity: { cpus: 0, memoryMb: 1, scratchMb: 0 } }),
      (err: unknown) => err instanceof EnrollmentFormatError && /capacity\.cpus/.test(err.message),
    );
  });
});
