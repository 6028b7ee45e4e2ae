import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { SiloError } from '../util/silo-error.js';

/**
 * libp2p identity helpers, so that callers outside src/gossip (identity,
 * agent, sim) never import libp2p packages themselves.
 */
export async function generateNodeKey(): Promise<PrivateKey> {
  return generateKeyPair('Ed25519');
}

/** A node key in libp2p's own protobuf encoding; what identity files store. */
export class NodeKeyError extends SiloError<'invalid_input'> {
  constructor(message: string) {
    super('invalid_input', message);
  }
}

/** The libp2p protobuf encoding of a private key, for storing it on disk. */
export function nodeKeyToBytes(key: PrivateKey): Uint8Array {
  return privateKeyToProtobuf(key);
}

/** Decodes a stored node key; throws NodeKeyError for garbage, truncation or a non-Ed25519 key. */
export function nodeKeyFromBytes(bytes: Uint8Array): PrivateKey {
  let key: PrivateKey;
  try {
    key = privateKeyFromProtobuf(bytes);
  } catch (err) {
    throw new NodeKeyError(
      `not a libp2p protobuf private key (truncated or garbage?): ${(err as Error).message}`,
    );
  }
  if (key.type !== 'Ed25519') throw new NodeKeyError(`libp2p key is ${key.type}, expected Ed25519`);
  return key;
}

/** The peer id string (`12D3Koo...`) that belongs to `key`. */
export function peerIdOf(key: PrivateKey): string {
  return peerIdFromPrivateKey(key).toString();
}

/** The key type a peer id string names ("Ed25519", "RSA", ...); throws for a string that is no peer id. */
export function peerIdKeyType(value: string): string {
  return peerIdFromString(value).type;
}

/**
 * The 32-byte Ed25519 seed of a node key, for signing statements the node makes outside
 * libp2p (its enrollment request) with node:crypto.
 */
export function nodeKeySeed(key: PrivateKey): Uint8Array {
  if (key.type !== 'Ed25519') throw new NodeKeyError(`libp2p key is ${key.type}, expected Ed25519`);
  // libp2p's raw Ed25519 private key is the seed followed by the public key.
  return key.raw.subarray(0, 32);
}

/** The raw 32-byte Ed25519 public key an Ed25519 peer id embeds; throws for any other peer id. */
export function peerIdPublicKey(peerId: string): Uint8Array {
  const parsed = peerIdFromString(peerId);
  if (parsed.type !== 'Ed25519' || parsed.publicKey === undefined) {
    throw new NodeKeyError(`peer id "${peerId}" does not embed an Ed25519 public key`);
  }
  return parsed.publicKey.raw;
}
