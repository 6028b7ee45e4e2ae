import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { EnrollmentRequest, EnrollmentRequestBody } from '../../src/identity/bundle.js';
import { x25519WgKeys } from '../../src/identity/node-identity.js';
import { signEnrollmentRequest } from '../../src/identity/request-proof.js';

/** A temp dir removed when the test ends. */
export async function tempDir(t: TestContext, prefix = 'silo-identity-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A valid enrollment request with fresh keys (WireGuard keys via node:crypto, no wg binary needed), signed by its node key. */
export async function makeRequest(
  nodeId: string,
  overrides: Partial<EnrollmentRequestBody> = {},
): Promise<EnrollmentRequest> {
  const nodeKey = await generateKeyPair('Ed25519');
  const peerId = peerIdFromPrivateKey(nodeKey).toString();
  const wgPublicKey = await x25519WgKeys.pubkey(await x25519WgKeys.genkey());
  const body: EnrollmentRequestBody = {
    nodeId,
    peerId,
    wgPublicKey,
    endpoints: ['wg://192.0.2.10:51820', `/ip4/192.0.2.10/tcp/4001/p2p/${peerId}`],
    capacity: { cpus: 2, memoryMb: 2048, scratchMb: 1024 },
    labels: { zone: 'a' },
    ...overrides,
  };
  return signEnrollmentRequest(body, nodeKey);
}
