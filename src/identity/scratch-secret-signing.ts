import type { KeyObject } from 'node:crypto';
import type { SealedScratchSecret } from '../reconciler/scratch-keys.js';
import { type SignedScratchSecret, SignedScratchSecretSchema } from '../state/schemas.js';
import { canonicalBytes } from './canonical.js';
import { type PublicKeyInput, signBytes, toPublicKeyObject, verifyBytes } from './ed25519.js';
import { formatIssues } from './issues.js';

/**
 * The CA's signature on a sealed scratch secret (docs/protocol.md, "Scratch
 * key envelopes"). Sealing alone proves nothing about the sender: anyone who
 * knows a node's WireGuard public key (every member) can seal a secret of
 * their choosing to it, and the node would then encrypt new scratch under a
 * key the sender knows. Only envelopes the CA signed are opened.
 *
 * Signed: canonical {"kind":"silo-scratch-secret","sealed":{v,nodeId,generation,epk,iv,ct}}.
 */

export function scratchSecretSigningPayload(sealed: SealedScratchSecret): Uint8Array {
  const { v, nodeId, generation, epk, iv, ct } = sealed;
  return canonicalBytes({ kind: 'silo-scratch-secret', sealed: { v, nodeId, generation, epk, iv, ct } });
}

export function signScratchSecret(caPrivateKey: KeyObject, sealed: SealedScratchSecret): SignedScratchSecret {
  return { ...sealed, cert: signBytes(caPrivateKey, scratchSecretSigningPayload(sealed)) };
}

/** Null when `value` is a well-formed envelope the CA signed; otherwise why not. */
export function scratchSecretProblem(caPublicKey: PublicKeyInput, value: unknown): string | null {
  const parsed = SignedScratchSecretSchema.strict().safeParse(value);
  if (!parsed.success) return `malformed scratch key envelope: ${formatIssues(parsed.error.issues)}`;
  const { cert, ...sealed } = parsed.data;
  const key = toPublicKeyObject(caPublicKey, 'CA public key');
  if (!verifyBytes(key, scratchSecretSigningPayload(sealed), cert))
    return `scratch key generation ${sealed.generation} for ${sealed.nodeId}: cert is not the org CA's signature`;
  return null;
}
