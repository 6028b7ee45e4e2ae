import type { KeyObject } from 'node:crypto';
import { canonicalBytes } from './canonical.js';
import { type PublicKeyInput, signBytes, toPublicKeyObject, verifyBytes } from './ed25519.js';

/**
 * Image attestation: the org CA signs an image's digest, and every node
 * checks that signature before running the image (docs/protocol.md,
 * "Images, image signatures and /silo/image/1"). The signed message is the
 * canonical encoding of {"kind":"silo-image","digest":"sha256:<64 hex>"}: the
 * `kind` keeps image signatures and enrollment certs from ever being
 * interchangeable although one CA key makes both.
 */

export const IMAGE_DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

export function imageSigningPayload(digest: string): Uint8Array {
  if (!IMAGE_DIGEST_PATTERN.test(digest)) {
    throw new Error(`image digest "${digest}" is not sha256:<64 lowercase hex digits>`);
  }
  return canonicalBytes({ kind: 'silo-image', digest });
}

/** The CA's signature (base64) over an image digest. */
export function signImageDigest(caPrivateKey: KeyObject, digest: string): string {
  return signBytes(caPrivateKey, imageSigningPayload(digest));
}

export type ImageSignatureFailure = 'bad-digest' | 'bad-signature';

/** null when `signature` is the CA's signature of `digest`; otherwise why not. */
export function verifyImageDigest(
  caPublicKey: PublicKeyInput,
  digest: string,
  signature: string,
): ImageSignatureFailure | null {
  if (!IMAGE_DIGEST_PATTERN.test(digest)) return 'bad-digest';
  const key = toPublicKeyObject(caPublicKey, 'CA public key');
  return verifyBytes(key, imageSigningPayload(digest), signature) ? null : 'bad-signature';
}
