import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { WORKLOAD_NAME_PATTERN } from '../state/schemas.js';
import { InputError } from '../util/input-error.js';

/**
 * Per-service scratch keys (docs/security.md, "Encrypted scratch"): pure
 * crypto, no I/O.
 *
 * - The org holds one random 32-byte **scratch secret per generation**.
 *   A service's data key is HKDF-SHA256(secret, workload name, generation):
 *   every member that holds the generation's secret derives the same key, so
 *   whichever node runs the workload can mount its scratch without asking
 *   anyone, and one service's key says nothing about another's.
 * - A generation's secret travels to a node **sealed** to the node's X25519
 *   (WireGuard) public key: ephemeral X25519 + HKDF + AES-256-GCM, with the
 *   node id and generation bound as associated data so an envelope cannot be
 *   replayed to another node or passed off as another generation.
 * - Keys live in Buffers in memory; nothing here writes them anywhere.
 */

export const SCRATCH_SECRET_BYTES = 32;
export const SCRATCH_KEY_BYTES = 32;

export class ScratchKeyError extends InputError {
  override name = 'ScratchKeyError';
}

/** A new org scratch secret (one per generation). */
export function newScratchSecret(): Buffer {
  return randomBytes(SCRATCH_SECRET_BYTES);
}

function checkGeneration(generation: number): void {
  if (!Number.isSafeInteger(generation) || generation < 1) {
    throw new ScratchKeyError(`scratch key generation must be a positive integer, got ${generation}`);
  }
}

/** The data key of `workload`'s scratch at `generation`. */
export function deriveScratchKey(secret: Uint8Array, workload: string, generation: number): Buffer {
  if (secret.length !== SCRATCH_SECRET_BYTES) {
    throw new ScratchKeyError(`scratch secret must be ${SCRATCH_SECRET_BYTES} bytes, got ${secret.length}`);
  }
  if (!WORKLOAD_NAME_PATTERN.test(workload)) {
    throw new ScratchKeyError(`invalid workload name ${JSON.stringify(workload)}`);
  }
  checkGeneration(generation);
  // The workload name and the generation are the HKDF info: a different name
  // or generation gives an unrelated key.
  const info = Buffer.from(`silo/scratch/v1\0${workload}\0${generation}`, 'utf8');
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), info, SCRATCH_KEY_BYTES));
}

/**
 * What gocryptfs is given as its password: the key in hex (gocryptfs reads
 * one line from stdin; raw bytes could contain a newline).
 */
export function scratchPassword(key: Uint8Array): Buffer {
  if (key.length !== SCRATCH_KEY_BYTES) {
    throw new ScratchKeyError(`scratch key must be ${SCRATCH_KEY_BYTES} bytes, got ${key.length}`);
  }
  return Buffer.from(`${Buffer.from(key).toString('hex')}\n`, 'utf8');
}

/** A generation's secret sealed to one node. All fields base64 except the numbers and the id. */
export interface SealedScratchSecret {
  v: 1;
  nodeId: string;
  generation: number;
  /** Ephemeral X25519 public key, raw 32 bytes. */
  epk: string;
  iv: string;
  /** AES-256-GCM ciphertext followed by its 16-byte tag. */
  ct: string;
}

// DER prefixes of raw X25519 keys (RFC 8410).
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function rawKey(base64: string, what: string): Buffer {
  const raw = Buffer.from(base64, 'base64');
  if (raw.length !== 32 || raw.toString('base64') !== base64) {
    throw new ScratchKeyError(`${what} must be 32 bytes of base64`);
  }
  return raw;
}

function publicKeyOf(base64: string): KeyObject {
  return createPublicKey({
    key: Buffer.concat([X25519_SPKI_PREFIX, rawKey(base64, 'X25519 public key')]),
    format: 'der',
    type: 'spki',
  });
}

function privateKeyOf(base64: string): KeyObject {
  return createPrivateKey({
    key: Buffer.concat([X25519_PKCS8_PREFIX, rawKey(base64, 'X25519 private key')]),
    format: 'der',
    type: 'pkcs8',
  });
}

function aad(nodeId: string, generation: number): Buffer {
  return Buffer.from(`silo/scratch-secret/v1\0${nodeId}\0${generation}`, 'utf8');
}

function wrapKey(shared: Buffer, epk: Buffer, recipient: Buffer): Buffer {
  // Both public keys in the salt: the wrapping key is bound to this exchange.
  return Buffer.from(
    hkdfSync('sha256', shared, Buffer.concat([epk, recipient]), 'silo/scratch-secret/v1 wrap', 32),
  );
}

/** Seals a generation's secret to a node's X25519 public key (base64, as WireGuard prints it). */
export function sealScratchSecret(
  secret: Uint8Array,
  recipient: { nodeId: string; publicKey: string },
  generation: number,
): SealedScratchSecret {
  if (secret.length !== SCRATCH_SECRET_BYTES) {
    throw new ScratchKeyError(`scratch secret must be ${SCRATCH_SECRET_BYTES} bytes, got ${secret.length}`);
  }
  checkGeneration(generation);
  const recipientKey = publicKeyOf(recipient.publicKey);
  const ephemeral = generateKeyPairSync('x25519');
  const epk = ephemeral.publicKey.export({ format: 'der', type: 'spki' }).subarray(X25519_SPKI_PREFIX.length);
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipientKey });
  const key = wrapKey(shared, epk, rawKey(recipient.publicKey, 'X25519 public key'));
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad(recipient.nodeId, generation));
  const ct = Buffer.concat([cipher.update(secret), cipher.final(), cipher.getAuthTag()]);
  return {
    v: 1,
    nodeId: recipient.nodeId,
    generation,
    epk: epk.toString('base64'),
    iv: iv.toString('base64'),
    ct: ct.toString('base64'),
  };
}

/** Opens an envelope with the node's X25519 private key; any mismatch fails with a clear error. */
export function unsealScratchSecret(
  sealed: SealedScratchSecret,
  self: { nodeId: string; privateKey: string },
): Buffer {
  if (sealed.v !== 1) throw new ScratchKeyError(`unknown sealed scratch secret version ${String(sealed.v)}`);
  if (sealed.nodeId !== self.nodeId) {
    throw new ScratchKeyError(
      `scratch secret is sealed to node ${JSON.stringify(sealed.nodeId)}, not ${JSON.stringify(self.nodeId)}`,
    );
  }
  checkGeneration(sealed.generation);
  const privateKey = privateKeyOf(self.privateKey);
  const recipient = createPublicKey(privateKey)
    .export({ format: 'der', type: 'spki' })
    .subarray(X25519_SPKI_PREFIX.length);
  const epk = rawKey(sealed.epk, 'ephemeral public key');
  const iv = Buffer.from(sealed.iv, 'base64');
  const ct = Buffer.from(sealed.ct, 'base64');
  if (iv.length !== 12 || ct.length !== SCRATCH_SECRET_BYTES + 16) {
    throw new ScratchKeyError('sealed scratch secret is malformed');
  }
  const shared = diffieHellman({ privateKey, publicKey: publicKeyOf(sealed.epk) });
  const decipher = createDecipheriv('aes-256-gcm', wrapKey(shared, epk, recipient), iv);
  decipher.setAAD(aad(sealed.nodeId, sealed.generation));
  decipher.setAuthTag(ct.subarray(SCRATCH_SECRET_BYTES));
  try {
    return Buffer.concat([decipher.update(ct.subarray(0, SCRATCH_SECRET_BYTES)), decipher.final()]);
  } catch {
    throw new ScratchKeyError(
      `scratch secret generation ${sealed.generation} cannot be opened with this node's key (sealed to another key, or tampered)`,
    );
  }
}

/**
 * The generations' secrets a node holds, in memory only. `current` is the
 * generation new scratch is created with; older ones stay to open scratch
 * written before a rotation.
 */
export class ScratchKeyring {
  private readonly secrets = new Map<number, Buffer>();

  add(generation: number, secret: Uint8Array): void {
    checkGeneration(generation);
    if (secret.length !== SCRATCH_SECRET_BYTES) {
      throw new ScratchKeyError(`scratch secret must be ${SCRATCH_SECRET_BYTES} bytes, got ${secret.length}`);
    }
    this.secrets.set(generation, Buffer.from(secret));
  }

  /** The newest generation held, or null with none. */
  current(): number | null {
    let newest: number | null = null;
    for (const generation of this.secrets.keys())
      if (newest === null || generation > newest) newest = generation;
    return newest;
  }

  /** The generations held, ascending (numbers only: what `/v1/status` shows). */
  generations(): number[] {
    return [...this.secrets.keys()].sort((a, b) => a - b);
  }

  has(generation: number): boolean {
    return this.secrets.has(generation);
  }

  keyFor(workload: string, generation: number): Buffer {
    const secret = this.secrets.get(generation);
    if (secret === undefined) {
      throw new ScratchKeyError(
        `no scratch key generation ${generation} on this node (held: ${[...this.secrets.keys()].sort().join(', ') || 'none'})`,
      );
    }
    return deriveScratchKey(secret, workload, generation);
  }

  /** Overwrites and forgets every secret (agent shutdown). */
  clear(): void {
    for (const secret of this.secrets.values()) secret.fill(0);
    this.secrets.clear();
  }
}
