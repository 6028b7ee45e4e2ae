import type { Logger } from 'pino';
import { type BlobExchange, BlobFetchError } from '../gossip/blob-exchange.js';
import { SiloError } from '../util/silo-error.js';

/**
 * Fetching a content-addressed blob (image tar, state snapshot) from the
 * first peer that has it. The digest is the only thing trusted: BlobExchange
 * verifies length and sha256 before a file appears at `dest`, so asking the
 * wrong peer costs a round trip, never a wrong file.
 */

/** How the reconciler finds peers: enrollment maps node ids to libp2p peer ids. */
export interface PeerDirectory {
  /** This node's own libp2p peer id (never asked). */
  readonly selfPeerId: string;
  /** The libp2p peer id of an active enrolled node, if known. */
  peerIdOf(nodeId: string): string | undefined;
  /** Peers we have a connection to right now (fallback candidates). */
  connectedPeers(): string[];
}

export class BlobUnavailableError extends SiloError<'unavailable'> {
  constructor(
    readonly digest: string,
    readonly attempts: readonly string[],
  ) {
    super(
      'unavailable',
      attempts.length === 0
        ? `${shortDigest(digest)}: no peer to ask`
        : `${shortDigest(digest)}: no peer could supply it (${attempts.join('; ')})`,
    );
  }
}

export interface FetchFromPeersInput {
  exchange: BlobExchange;
  directory: PeerDirectory;
  digest: string;
  dest: string;
  /** Node ids to ask first, in order (unknown ones are skipped). */
  nodes: readonly string[];
  /** Then every other connected peer. */
  anyPeer: boolean;
  logger: Logger;
  signal?: AbortSignal;
}

/** Tries `nodes` in order, then (with `anyPeer`) every connected peer; returns who supplied it. */
export async function fetchFromPeers(
  input: FetchFromPeersInput,
): Promise<{ peerId: string; nodeId: string | null; size: number }> {
  const { exchange, directory, digest, dest } = input;
  const tried = new Set<string>([directory.selfPeerId]);
  const attempts: string[] = [];
  const candidates: { peerId: string; nodeId: string | null }[] = [];
  for (const nodeId of input.nodes) {
    const peerId = directory.peerIdOf(nodeId);
    if (peerId === undefined || tried.has(peerId)) continue;
    tried.add(peerId);
    candidates.push({ peerId, nodeId });
  }
  if (input.anyPeer) {
    for (const peerId of directory.connectedPeers()) {
      if (tried.has(peerId)) continue;
      tried.add(peerId);
      candidates.push({ peerId, nodeId: null });
    }
  }
  for (const candidate of candidates) {
    input.signal?.throwIfAborted();
    try {
      const size = await exchange.fetch(candidate.peerId, digest, dest);
      return { ...candidate, size };
    } catch (err) {
      const who = candidate.nodeId ?? candidate.peerId.slice(-8);
      const code = err instanceof BlobFetchError ? err.wireCode : 'error';
      attempts.push(`${who}: ${code === 'not-found' ? 'does not have it' : (err as Error).message}`);
      input.logger.debug({ digest, peer: candidate.peerId, code }, 'blob fetch attempt failed');
    }
  }
  throw new BlobUnavailableError(digest, attempts);
}

export function shortDigest(digest: string): string {
  return digest.startsWith('sha256:') ? `sha256:${digest.slice(7, 19)}` : digest;
}
