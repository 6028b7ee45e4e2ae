import type { Logger } from 'pino';
import type { BlobExchange } from '../gossip/blob-exchange.js';
import type { WorkloadSpec } from '../state/schemas.js';
import { SiloError } from '../util/silo-error.js';
import type { ImageSignatureVerifier, ImageStore } from './image-store.js';
import { BlobUnavailableError, fetchFromPeers, type PeerDirectory, shortDigest } from './peer-fetch.js';

/**
 * Images before a start: the image must be in the local store with the
 * right digest and the org CA's signature, else it is fetched from peers
 * over `/silo/image/1` (docs/protocol.md). What the reconcile loop needs is the
 * `ImageSource` interface; `PeerImageFetcher` is the real one.
 */

export const IMAGE_PROTOCOL = '/silo/image/1';

/** The image can never run (unsigned, wrong signature, bad digest): the workload fails. */
export class ImageRefusedError extends SiloError<'image_refused'> {
  constructor(message: string, options?: ErrorOptions) {
    super('image_refused', message, options);
  }
}

/** The image is not here and no peer supplied it (yet): the claim stays `pulling` and retries. */
export class ImageUnavailableError extends SiloError<'unavailable'> {
  constructor(message: string, options?: ErrorOptions) {
    super('unavailable', message, options);
  }
}

export interface ImageSource {
  /**
   * Resolves once `spec`'s image is stored here and verified (digest
   * recomputed, CA signature checked); `fromNodes` are the nodes to ask
   * first. Returns the node or peer it was fetched from, null when it was
   * here already. Throws ImageRefusedError or ImageUnavailableError.
   */
  ensure(spec: WorkloadSpec, fromNodes: readonly string[], signal?: AbortSignal): Promise<string | null>;
}

export interface PeerImageFetcherOptions {
  store: ImageStore;
  /** BlobExchange on IMAGE_PROTOCOL (it also serves this node's store). */
  exchange: BlobExchange;
  directory: PeerDirectory;
  /** Checks the CA signature before anything is fetched (the store checks it again). */
  verifySignature?: ImageSignatureVerifier;
  logger: Logger;
}

export class PeerImageFetcher implements ImageSource {
  private readonly options: PeerImageFetcherOptions;
  private readonly logger: Logger;
  private readonly inflight = new Map<string, Promise<string | null>>();

  constructor(options: PeerImageFetcherOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'image-fetch' });
  }

  ensure(spec: WorkloadSpec, fromNodes: readonly string[], signal?: AbortSignal): Promise<string | null> {
    const key = `${spec.imageDigest}\0${spec.imageSignature}`;
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      pending = this.ensureOnce(spec, fromNodes, signal).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  private async ensureOnce(
    spec: WorkloadSpec,
    fromNodes: readonly string[],
    signal: AbortSignal | undefined,
  ): Promise<string | null> {
    const { store, verifySignature } = this.options;
    const digest = spec.imageDigest;
    if (verifySignature !== undefined && !safeVerify(verifySignature, digest, spec.imageSignature)) {
      throw new ImageRefusedError(
        `image ${digest} refused: the signature is not the org CA's signature over this digest`,
      );
    }
    let fetchedFrom: string | null = null;
    /** This round's copy came from a peer, hashed against the digest as it was written. */
    let hashedJustNow = false;
    // Two rounds: a stored copy that fails its digest check is deleted by
    // the store, and a good copy may then come from a peer.
    for (let round = 0; round < 2; round++) {
      signal?.throwIfAborted();
      hashedJustNow = false;
      if (!(await store.has(digest))) {
        try {
          const got = await fetchFromPeers({
            exchange: this.options.exchange,
            directory: this.options.directory,
            digest,
            dest: store.tarPath(digest),
            nodes: fromNodes,
            anyPeer: true,
            logger: this.logger,
            ...(signal ? { signal } : {}),
          });
          fetchedFrom = got.nodeId ?? got.peerId;
          hashedJustNow = true;
          this.logger.info({ digest, from: fetchedFrom, size: got.size }, 'image fetched from a peer');
          store.noteChanged();
        } catch (err) {
          if (!(err instanceof BlobUnavailableError)) throw err;
          throw new ImageUnavailableError(
            `image ${shortDigest(digest)} is not in the local store and ${err.attempts.length === 0 ? 'no peer is connected' : `no peer supplied it (${err.attempts.join('; ')})`}`,
          );
        }
      }
      const verified = await store.verify(digest, spec.imageSignature, { hashedJustNow });
      if (verified.ok) return fetchedFrom;
      if (verified.code === 'missing' || verified.code === 'tampered') {
        this.logger.warn({ digest, reason: verified.reason }, 'stored image unusable; fetching a good copy');
        continue;
      }
      throw new ImageRefusedError(verified.reason);
    }
    throw new ImageUnavailableError(
      `image ${shortDigest(digest)}: no verified copy (every copy fetched was corrupt)`,
    );
  }
}

function safeVerify(verify: ImageSignatureVerifier, digest: string, signature: string): boolean {
  try {
    return verify(digest, signature);
  } catch {
    return false;
  }
}
