import type { Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import * as lp from 'it-length-prefixed';
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { z } from 'zod';
import type { LeaseReply, LeaseRequest } from '../ownership/lease-messages.js';
import { MAX_LEASE_MS, REFUSAL_REASONS } from '../ownership/lease-messages.js';
import { NodeIdSchema, WorkloadNameSchema } from '../state/schemas.js';
import { counterIn } from '../util/metrics.js';
import { SiloError } from '../util/silo-error.js';
import { packMessage } from './codec.js';
import type { GossipNode } from './node.js';
import { readOnlyFrame } from './single-frame.js';

/**
 * `/silo/lease/1`: a claimant asks witnesses for workload leases
 * (docs/protocol.md, "Witness leases"; the rules are docs/placement.md's).
 * One stream per batch:
 *
 *   claimant → witness  lp(msgpack {v: 1, requests: [LeaseRequest, ...]})
 *   witness → claimant  lp(msgpack {v: 1, replies: [LeaseReply, ...]})   (same order, same length)
 *
 * The witness answers only after its grants are on disk. A request whose
 * `node` is not the sender (per `nodeIdOfPeer`) is answered `invalid`.
 * Everything else (what to grant) is the witness service's business.
 */
export const LEASE_PROTOCOL = '/silo/lease/1';
export const MAX_LEASE_BATCH = 1024;
const MAX_FRAME_BYTES = 256 * 1024;

const Int = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export const LeaseRequestSchema = z.strictObject({
  op: z.enum(['hold', 'release']),
  workload: WorkloadNameSchema,
  node: NodeIdSchema,
  incarnation: Int.min(1),
  ballot: Int.min(1),
  configVersion: Int,
  durationMs: z.number().int().min(1).max(MAX_LEASE_MS),
  round: Int,
});
export const LeaseReplySchema = z.strictObject({
  workload: WorkloadNameSchema,
  witness: NodeIdSchema,
  round: Int,
  granted: z.boolean(),
  refusal: z.enum(REFUSAL_REASONS).nullable(),
  ballot: Int,
  holder: NodeIdSchema.nullable(),
  configVersion: Int,
  remainingMs: Int.nullable(),
});
const RequestFrame = z.strictObject({ v: z.literal(1), requests: z.array(z.unknown()).max(MAX_LEASE_BATCH) });
const ReplyFrame = z.strictObject({
  v: z.literal(1),
  replies: z.array(LeaseReplySchema).max(MAX_LEASE_BATCH),
});

/** Serves a batch from the node `from`; resolves once every grant in it is durable. */
export type LeaseServer = (from: string, requests: (LeaseRequest | null)[]) => Promise<LeaseReply[]>;

export interface LeaseExchangeOptions {
  node: GossipNode;
  logger: Logger;
  registry: Registry;
  /** The enrolled node id of a connected peer, or undefined (then every request is refused). */
  nodeIdOfPeer: (peerId: string) => string | undefined;
  /** This node's id (to fill in replies to requests that cannot be parsed). */
  selfId: string;
  /** How long a claimant waits for a batch's replies (default 5 s). */
  timeoutMs?: number;
}

export class LeaseExchangeError extends SiloError<'malformed'> {
  constructor(message: string, options?: ErrorOptions) {
    super('malformed', message, options);
  }
}

/** Lease batches by direction and result (one counter per registry: get-or-create). */
const batchesIn = (registry: Registry): Counter<'direction' | 'result'> =>
  counterIn(registry, {
    name: 'silo_lease_batches_total',
    help: 'Lease request batches (/silo/lease/1) by direction (in: served as witness, out: sent as claimant) and result',
    labelNames: ['direction', 'result'],
  });

const onlyFrame = (stream: Stream, signal: AbortSignal): Promise<unknown> =>
  readOnlyFrame(
    stream,
    signal,
    MAX_FRAME_BYTES,
    (reason) => new LeaseExchangeError(`lease stream: ${reason}`),
  );

export class LeaseExchange {
  private readonly options: LeaseExchangeOptions;
  private readonly logger: Logger;
  private readonly batches: Counter<'direction' | 'result'>;
  private server: LeaseServer | null = null;
  private started = false;

  constructor(options: LeaseExchangeOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'lease-exchange' });
    this.batches = batchesIn(options.registry);
  }

  /** Serve witness requests with `server` (a node that is no witness still answers: `not-a-witness`). */
  async start(server: LeaseServer): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.server = server;
    await this.options.node.handle(
      LEASE_PROTOCOL,
      ({ stream, connection }) => {
        this.serve(stream, connection.remotePeer.toString()).catch((err: unknown) => {
          this.batches.inc({ direction: 'in', result: 'error' });
          this.logger.debug({ err: (err as Error).message }, 'serving a lease batch failed');
          stream.abort(err instanceof Error ? err : new Error(String(err)));
        });
      },
      { maxInboundStreams: 64 },
    );
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.server = null;
    await this.options.node.unhandle(LEASE_PROTOCOL).catch(() => undefined);
  }

  private async serve(stream: Stream, peerId: string): Promise<void> {
    const signal = AbortSignal.timeout(this.options.timeoutMs ?? 5000);
    const frame = RequestFrame.safeParse(await onlyFrame(stream, signal));
    if (!frame.success) {
      this.batches.inc({ direction: 'in', result: 'malformed' });
      stream.abort(new LeaseExchangeError('malformed lease batch'));
      return;
    }
    const from = this.options.nodeIdOfPeer(peerId);
    const requests = frame.data.requests.map((raw) => {
      const parsed = LeaseRequestSchema.safeParse(raw);
      // The sender rule: a node asks for itself only.
      return parsed.success && from !== undefined && parsed.data.node === from ? parsed.data : null;
    });
    const server = this.server;
    if (server === null) throw new LeaseExchangeError('not serving');
    const replies = await server(from ?? '', requests);
    await stream.sink([lp.encode.single(packMessage({ v: 1, replies })).subarray()]);
    this.batches.inc({ direction: 'in', result: 'ok' });
  }

  /** Sends a batch to the node with libp2p id `peerId`; resolves with its replies (validated). */
  async ask(peerId: string, requests: LeaseRequest[]): Promise<LeaseReply[]> {
    if (requests.length === 0) return [];
    if (requests.length > MAX_LEASE_BATCH)
      throw new RangeError(`at most ${MAX_LEASE_BATCH} requests per batch`);
    const signal = AbortSignal.timeout(this.options.timeoutMs ?? 5000);
    let stream: Stream | undefined;
    try {
      // Optimistic protocol select: the request goes out with the protocol
      // name, without waiting for the witness to confirm it. Saves a round
      // trip, and lets a release reach the witnesses when nothing comes back
      // (a one-way cut toward this node, docs/placement.md rule O4).
      stream = await this.options.node.dialProtocol(peerIdFromString(peerId), LEASE_PROTOCOL, {
        signal,
        negotiateFully: false,
      });
      const reply = onlyFrame(stream, signal);
      await stream.sink([lp.encode.single(packMessage({ v: 1, requests })).subarray()]);
      const frame = ReplyFrame.safeParse(await reply);
      if (!frame.success || frame.data.replies.length !== requests.length) {
        throw new LeaseExchangeError(`${peerId} answered a lease batch with a malformed frame`);
      }
      this.batches.inc({ direction: 'out', result: 'ok' });
      return frame.data.replies;
    } catch (err) {
      this.batches.inc({ direction: 'out', result: signal.aborted ? 'timeout' : 'error' });
      stream?.abort(err instanceof Error ? err : new Error(String(err)));
      throw err instanceof LeaseExchangeError ? err : new LeaseExchangeError((err as Error).message);
    }
  }
}
