import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign as nodeSign,
  verify as nodeVerify,
} from 'node:crypto';
import { decodeBase64Strict } from './base64.js';

/**
 * Ed25519 keys of the org CA (node:crypto). On the wire and in JSON a public
 * key is its raw 32 bytes in base64 (44 chars) and a signature its raw 64
 * bytes in base64 (88 chars). On disk a private key is PKCS#8 PEM; a raw
 * 32-byte seed in base64 is accepted on load too (what other tools emit).
 */

const PUBLIC_KEY_BYTES = 32;
const SEED_BYTES = 32;
const SIGNATURE_BYTES = 64;
// DER prefixes of an Ed25519 SubjectPublicKeyInfo / PKCS#8 PrivateKeyInfo (RFC 8410):
// the raw key follows these fixed bytes.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export interface Ed25519KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function generateEd25519KeyPair(): Ed25519KeyPair {
  return generateKeyPairSync('ed25519');
}

/** Raw base64 (44 chars) of an Ed25519 public key. */
export function publicKeyToBase64(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  return der.subarray(SPKI_PREFIX.length).toString('base64');
}

/** Parse a raw base64 Ed25519 public key; throws with a message naming `what`. */
export function publicKeyFromBase64(text: string, what = 'public key'): KeyObject {
  return publicKeyFromRaw(decodeBase64Strict(text, `${what}`), what);
}

/** An Ed25519 public key from its raw 32 bytes; throws with a message naming `what`. */
export function publicKeyFromRaw(raw: Uint8Array, what = 'public key'): KeyObject {
  if (raw.length !== PUBLIC_KEY_BYTES) {
    throw new Error(`${what}: expected ${PUBLIC_KEY_BYTES} bytes of Ed25519 public key, got ${raw.length}`);
  }
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** An Ed25519 private key from its raw 32-byte seed. */
export function privateKeyFromSeed(seed: Uint8Array): KeyObject {
  if (seed.length !== SEED_BYTES) {
    throw new Error(`expected ${SEED_BYTES} bytes of Ed25519 seed, got ${seed.length}`);
  }
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

/** A public key given as KeyObject or raw base64. */
export type PublicKeyInput = KeyObject | string;

export function toPublicKeyObject(key: PublicKeyInput, what = 'public key'): KeyObject {
  if (typeof key === 'string') return publicKeyFromBase64(key, what);
  if (key.type === 'private') return createPublicKey(key);
  assertEd25519(key, what);
  return key;
}

export function privateKeyToPem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/**
 * Parse an Ed25519 private key from PKCS#8 PEM or a raw base64 32-byte seed.
 * Throws a plain Error describing the problem; callers add the file path.
 */
export function privateKeyFromText(text: string): KeyObject {
  const trimmed = text.trim();
  if (trimmed.length === 0) throw new Error('empty');
  let key: KeyObject;
  if (trimmed.startsWith('-----BEGIN')) {
    if (!/-----END [A-Z ]+-----$/.test(trimmed)) throw new Error('PEM has no END line (truncated?)');
    try {
      key = createPrivateKey({ key: trimmed, format: 'pem' });
    } catch (err) {
      throw new Error(`not a valid PEM private key (${(err as Error).message})`);
    }
  } else {
    const seed = decodeBase64Strict(trimmed, 'private key');
    if (seed.length !== SEED_BYTES) {
      throw new Error(`expected PKCS#8 PEM or a base64 ${SEED_BYTES}-byte seed, got ${seed.length} bytes`);
    }
    key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  }
  assertEd25519(key, 'private key');
  return key;
}

function assertEd25519(key: KeyObject, what: string): void {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new Error(`${what}: expected an Ed25519 key, got ${key.asymmetricKeyType ?? key.type}`);
  }
}

/** Ed25519 signature of `message`, base64. */
export function signBytes(privateKey: KeyObject, message: Uint8Array): string {
  return nodeSign(null, message, privateKey).toString('base64');
}

/** True when `signature` (base64) is a valid signature of `message`; false for any malformed input. */
export function verifyBytes(publicKey: KeyObject, message: Uint8Array, signature: string): boolean {
  let raw: Buffer;
  try {
    raw = decodeBase64Strict(signature, 'signature');
  } catch {
    return false;
  }
  if (raw.length !== SIGNATURE_BYTES) return false;
  try {
    return nodeVerify(null, message, publicKey, raw);
  } catch {
    return false;
  }
}
