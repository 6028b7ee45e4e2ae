import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';

/**
 * libp2p identity helpers, so that callers outside src/gossip (identity,
 * agent, sim) never import libp2p packages themselves.
 */
export async function generateNodeKey(): Promise<PrivateKey> {
  return generateKeyPair('Ed25519');
}

/** The libp2p protobuf encoding of a private key, for storing it on disk. */
export function nodeKeyToBytes(key: PrivateKey): Uint8Array {
  return privateKeyToProtobuf(key);
}

export function nodeKeyFromBytes(bytes: Uint8Array): PrivateKey {
  const key = privateKeyFromProtobuf(bytes);
  if (key.type !== 'Ed25519') throw new Error(`node key must be Ed25519, got ${key.type}`);
  return key;
}

/** The peer id string (`12D3Koo...`) that belongs to `key`. */
export function peerIdOf(key: PrivateKey): string {
  return peerIdFromPrivateKey(key).toString();
}

/** True when `value` parses as a libp2p peer id. */
export function isPeerIdString(value: string): boolean {
  try {
    peerIdFromString(value);
    return true;
  } catch {
    return false;
  }
}
