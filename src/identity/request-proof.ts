import { nodeKeySeed, peerIdPublicKey } from '../gossip/keys.js';
import type { PrivateKey } from '../gossip/node.js';
import type { EnrollmentRequest, EnrollmentRequestBody } from './bundle.js';
import { canonicalBytes } from './canonical.js';
import { privateKeyFromSeed, publicKeyFromRaw, signBytes, verifyBytes } from './ed25519.js';

/**
 * Proof of possession for enrollment requests: the node signs its request with its node
 * (libp2p) key, whose public half its peer id embeds. The CA signs only requests whose proof
 * verifies, so a request altered on its way to the operator (another WireGuard key, other
 * endpoints or labels) or one naming a peer id its author does not hold is refused instead of
 * being turned into a record.
 *
 * The signed bytes are a domain tag followed by the canonical JSON of the body (every request
 * field but `proof`), so the signature can never be replayed as any other silo or libp2p
 * signature.
 */
const DOMAIN = 'silo/enrollment-request/v1\n';

export function requestProofPayload(body: EnrollmentRequestBody): Uint8Array {
  return Buffer.concat([Buffer.from(DOMAIN, 'utf8'), canonicalBytes(body)]);
}

/** The request with its proof, signed by `nodeKey` (which must be the key of `body.peerId`). */
export function signEnrollmentRequest(body: EnrollmentRequestBody, nodeKey: PrivateKey): EnrollmentRequest {
  const proof = signBytes(privateKeyFromSeed(nodeKeySeed(nodeKey)), requestProofPayload(body));
  return { ...body, proof };
}

/** True when `proof` is the signature of the rest of the request by the key `peerId` embeds. */
export function verifyRequestProof(request: EnrollmentRequest): boolean {
  const { proof, ...body } = request;
  let rawPublicKey: Uint8Array;
  try {
    rawPublicKey = peerIdPublicKey(body.peerId);
  } catch {
    return false;
  }
  return verifyBytes(publicKeyFromRaw(rawPublicKey, 'peer id key'), requestProofPayload(body), proof);
}
