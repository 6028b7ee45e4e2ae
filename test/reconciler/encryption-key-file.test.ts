import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { x25519WgKeys } from '../../src/identity/node-identity.js';
import { loadScratchKeyring } from '../../src/reconciler/scratch-key-file.js';
import { deriveScratchKey, newScratchSecret, sealScratchSecret } from '../../src/reconciler/scratch-keys.js';

test('scratch-keys.json: sealed generations open into a keyring; absent is null; bad files fail with the path', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'silo-scratch-keys-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const privateKey = await x25519WgKeys.genkey();
  const publicKey = await x25519WgKeys.pubkey(privateKey);
  const self = { nodeId: 'n1', privateKey };
  const path = join(dir, 'scratch-keys.json');
  assert.equal(await loadScratchKeyring(path, self), null);

  const s1 = newScratchSecret();
  const s2 = newScratchSecret();
  const sealed = [
    sealScratchSecret(s1, { nodeId: 'n1', publicKey }, 1),
    sealScratchSecret(s2, { nodeId: 'n1', publicKey }, 2),
  ];
  await writeFile(path, JSON.stringify(sealed));
  const ring = await loadScratchKeyring(path, self);
  assert.equal(ring?.current(), 2);
  assert.deepEqual(ring?.keyFor('db', 1), deriveScratchKey(s1, 'db', 1));

  await writeFile(path, '{');
  await assert.rejects(loadScratchKeyring(path, self), /scratch-keys.json: not JSON/);
  await writeFile(path, JSON.stringify([{ ...sealed[0], generation: 0 }]));
  await assert.rejects(loadScratchKeyring(path, self), /scratch-keys.json: .*generation/s);
  await assert.rejects(loadScratchKeyring(path, { nodeId: 'n2', privateKey }), /not JSON|generation/);
  await writeFile(path, JSON.stringify(sealed));
  await assert.rejects(
    loadScratchKeyring(path, { nodeId: 'n2', privateKey }),
    /sealed to node "n1", not "n2"/,
  );
  const other = await x25519WgKeys.genkey();
  await assert.rejects(
    loadScratchKeyring(path, { nodeId: 'n1', privateKey: other }),
    /cannot be opened with this node's key/,
  );
});
