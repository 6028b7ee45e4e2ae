import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { generateNodeKey, NodeKeyError, nodeKeyFromBytes, nodeKeyToBytes, peerIdOf } from '../gossip/keys.js';
import type { PrivateKey } from '../gossip/node.js';
import type { Capacity } from '../state/schemas.js';
import { NodeIdSchema } from '../state/schemas.js';
import { decodeBase64Strict } from './base64.js';
import {
  type EnrollmentBundle,
  EnrollmentFormatError,
  type EnrollmentRequest,
  EnrollmentRequestBodySchema,
  parseEnrollmentBundle,
  parseEnrollmentRequest,
} from './bundle.js';
import { formatIssues } from './issues.js';
import {
  fileExists,
  KeyFileError,
  PUBLIC_FILE_MODE,
  readJsonFile,
  readKeyText,
  writeFileAtomic,
} from './key-files.js';
import { signEnrollmentRequest } from './request-proof.js';

/**
 * A node's identity: its libp2p Ed25519 key (peer id) and its WireGuard key
 * pair, made once at first start and kept in the node directory
 * (docs/protocol.md, "Enrollment records, certificates and revocations"):
 *   node.json        {v: 1, nodeId, peerId, wgPublicKey}             0644
 *   libp2p.key       base64 of the libp2p protobuf private key       0600
 *   wg.key           WireGuard private key, base64 + "\n"            0600
 *                    (the format `wg set <if> private-key <file>` reads)
 *   enrollment.json  the enrollment bundle, once enrolled            0644
 */

export const NODE_FILES = {
  info: 'node.json',
  libp2pKey: 'libp2p.key',
  wgKey: 'wg.key',
  enrollment: 'enrollment.json',
} as const;

/** Makes WireGuard key pairs. `Wg` (src/overlay/wg.ts) implements it with wireguard-tools. */
export interface WgKeyGenerator {
  genkey(): Promise<string>;
  pubkey(privateKey: string): Promise<string>;
}

// PKCS#8 prefix of an X25519 private key (RFC 8410); the raw 32-byte key follows.
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI_PREFIX_LENGTH = 12;

/**
 * WireGuard keys computed with node:crypto (X25519), byte-for-byte what
 * `wg genkey`/`wg pubkey` produce. For hosts without wireguard-tools: the
 * in-process simulator and `overlay.mode = "none"`.
 */
export const x25519WgKeys: WgKeyGenerator = {
  async genkey() {
    const key = randomBytes(32);
    // Curve25519 clamping, as `wg genkey` does.
    key[0] = key[0]! & 248;
    key[31] = (key[31]! & 127) | 64;
    return key.toString('base64');
  },
  async pubkey(privateKey) {
    const raw = decodeBase64Strict(privateKey, 'WireGuard private key');
    if (raw.length !== 32) throw new Error('WireGuard private key: expected 32 bytes');
    const key = createPrivateKey({
      key: Buffer.concat([X25519_PKCS8_PREFIX, raw]),
      format: 'der',
      type: 'pkcs8',
    });
    const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
    return spki.subarray(X25519_SPKI_PREFIX_LENGTH).toString('base64');
  },
};

export interface NodeIdentity {
  nodeId: string;
  /** libp2p peer id, string form. */
  peerId: string;
  libp2pPrivateKey: PrivateKey;
  wgPrivateKey: string;
  wgPublicKey: string;
}

const NodeInfoSchema = z.strictObject({
  v: z.literal(1),
  nodeId: NodeIdSchema,
  peerId: z.string().min(1),
  wgPublicKey: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'WireGuard public key: 44 chars of base64'),
});

export async function createNodeIdentity(
  nodeId: string,
  components: { wgKeys: WgKeyGenerator },
): Promise<NodeIdentity> {
  const id = NodeIdSchema.safeParse(nodeId);
  if (!id.success) throw new Error(`invalid node id "${nodeId}": ${formatIssues(id.error.issues)}`);
  const libp2pPrivateKey = await generateNodeKey();
  const wgPrivateKey = await components.wgKeys.genkey();
  const wgPublicKey = await components.wgKeys.pubkey(wgPrivateKey);
  return {
    nodeId,
    peerId: peerIdOf(libp2pPrivateKey),
    libp2pPrivateKey,
    wgPrivateKey,
    wgPublicKey,
  };
}

export function wgPrivateKeyPath(dir: string): string {
  return join(dir, NODE_FILES.wgKey);
}

export async function saveNodeIdentity(
  dir: string,
  identity: NodeIdentity,
  options: { overwrite?: boolean } = {},
): Promise<void> {
  const infoPath = join(dir, NODE_FILES.info);
  // A node's keys are its enrollment: replacing them silently would orphan the node.
  if (options.overwrite !== true && (await fileExists(infoPath))) {
    throw new KeyFileError(infoPath, 'a node identity already exists here; refusing to overwrite it');
  }
  const libp2pKey = Buffer.from(nodeKeyToBytes(identity.libp2pPrivateKey)).toString('base64');
  await writeFileAtomic(join(dir, NODE_FILES.libp2pKey), `${libp2pKey}\n`);
  await writeFileAtomic(wgPrivateKeyPath(dir), `${identity.wgPrivateKey}\n`);
  const info = { v: 1, nodeId: identity.nodeId, peerId: identity.peerId, wgPublicKey: identity.wgPublicKey };
  // node.json last: its presence means the identity is complete.
  await writeFileAtomic(infoPath, `${JSON.stringify(info, null, 2)}\n`, PUBLIC_FILE_MODE);
}

export async function loadNodeIdentity(
  dir: string,
  components: { wgKeys: WgKeyGenerator },
): Promise<NodeIdentity> {
  const infoPath = join(dir, NODE_FILES.info);
  const parsed = NodeInfoSchema.safeParse(await readJsonFile(infoPath, 'node identity'));
  if (!parsed.success)
    throw new KeyFileError(infoPath, `invalid node identity: ${formatIssues(parsed.error.issues)}`);
  const info = parsed.data;

  const libp2pPath = join(dir, NODE_FILES.libp2pKey);
  const libp2pPrivateKey = parseLibp2pKey(await readKeyText(libp2pPath, 'libp2p private key'), libp2pPath);
  const peerId = peerIdOf(libp2pPrivateKey);
  if (peerId !== info.peerId) {
    throw new KeyFileError(libp2pPath, `libp2p key gives peer id ${peerId}, node.json says ${info.peerId}`);
  }

  const wgPath = wgPrivateKeyPath(dir);
  const wgPrivateKey = (await readKeyText(wgPath, 'WireGuard private key')).trim();
  let wgPublicKey: string;
  try {
    wgPublicKey = await components.wgKeys.pubkey(wgPrivateKey);
  } catch (err) {
    throw new KeyFileError(
      wgPath,
      `WireGuard private key is unusable (truncated or garbage?): ${(err as Error).message}`,
    );
  }
  if (wgPublicKey !== info.wgPublicKey) {
    throw new KeyFileError(wgPath, 'WireGuard private key does not match wgPublicKey in node.json');
  }
  return { nodeId: info.nodeId, peerId, libp2pPrivateKey, wgPrivateKey, wgPublicKey };
}

function parseLibp2pKey(text: string, path: string): PrivateKey {
  let bytes: Buffer;
  try {
    bytes = decodeBase64Strict(text.trim(), 'libp2p private key');
  } catch (err) {
    throw new KeyFileError(path, `${(err as Error).message} (truncated or garbage?)`);
  }
  try {
    return nodeKeyFromBytes(bytes);
  } catch (err) {
    if (err instanceof NodeKeyError) throw new KeyFileError(path, err.message);
    throw err;
  }
}

export interface EnrollmentRequestOptions {
  /** `wg://host:port` for WireGuard plus libp2p multiaddrs (docs/protocol.md). */
  endpoints: string[];
  capacity: Capacity;
  labels?: Record<string, string>;
}

/** The request the operator feeds to the org CA (validated, so a bad one fails here, not at the CA). */
export function enrollmentRequest(
  identity: NodeIdentity,
  options: EnrollmentRequestOptions,
): EnrollmentRequest {
  const body = EnrollmentRequestBodySchema.safeParse({
    nodeId: identity.nodeId,
    peerId: identity.peerId,
    wgPublicKey: identity.wgPublicKey,
    endpoints: options.endpoints,
    capacity: options.capacity,
    labels: options.labels ?? {},
  });
  if (!body.success) throw new EnrollmentFormatError('enrollment request', formatIssues(body.error.issues));
  return parseEnrollmentRequest(signEnrollmentRequest(body.data, identity.libp2pPrivateKey));
}

/** The node's enrollment bundle, or null when the node is not enrolled yet. Shape-checked, not signature-checked. */
export async function loadEnrollmentBundle(dir: string): Promise<EnrollmentBundle | null> {
  const path = join(dir, NODE_FILES.enrollment);
  if (!(await fileExists(path))) return null;
  try {
    return parseEnrollmentBundle(await readJsonFile(path, 'enrollment bundle'));
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    throw new KeyFileError(path, (err as Error).message);
  }
}
