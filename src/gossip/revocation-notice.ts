import { peerIdFromString } from '@libp2p/peer-id';
import * as lp from 'it-length-prefixed';
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { z } from 'zod';
import { Listeners } from '../util/listeners.js';
import { counterIn } from '../util/metrics.js';
import { SiloError } from '../util/silo-error.js';
import { packMessage } from './codec.js';
import type { GossipNode } from './node.js';
import { readOnlyFrame } from './single-frame.js';

/**
 * `/silo/revoked/1` (docs/protocol.md, "Revocation notice"): before a node
 * closes its connections to a peer that lost its enrollment, it hands the
 * peer the CA-signed revocation, so the revoked node learns why everybody
 * stops answering instead of retrying forever (docs/security.md).
 *
 *   member → revoked node   lp(msgpack {v: 1, revocation: <stored revocation record>})
 *   revoked node → member   lp(msgpack {v: 1})   (read, whatever it concluded)
 *
 * The record is self-authenticating (the CA's signature), so the receiver
 * judges it by itself, whoever delivered it: this module only carries it.
 */
export const REVOCATION_NOTICE_PROTOCOL = '/silo/revoked/1';
const MAX_FRAME_BYTES = 8 * 1024;
const DEFAULT_TIMEOUT_MS = 2000;

const NoticeFrame = z.strictObject({ v: z.literal(1), revocation: z.unknown() });
const AckFrame = z.strictObject({ v: z.literal(1) });

export class RevocationNoticeError extends SiloError<'malformed'> {
  constructor(message: string, options?: ErrorOptions) {
    super('malformed', message, options);
  }
}

/** Told of every well-formed notice: the record as sent (unchecked) and the peer that sent it. */
export type RevocationNoticeListener = (revocation: unknown, fromPeer: string) => void;

export interface RevocationNoticesOptions {
  node: GossipNode;
  logger: Logger;
  registry: Registry;
  /** How long a notice may take, either way (default 2 s). */
  timeoutMs?: number;
}

type Direction = 'in' | 'out';
type Result = 'ok' | 'malformed' | 'error' | 'not-connected';

export class RevocationNotices {
  private readonly options: RevocationNoticesOptions;
  private readonly logger: Logger;
  private readonly notices: Counter<'direction' | 'result'>;
  private readonly listeners: Listeners<[unknown, string]>;
  private started = false;

  constructor(options: RevocationNoticesOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'revocation-notice' });
    this.notices = counterIn(options.registry, {
      name: 'silo_revocation_notices_total',
      help: 'Revocation notices (/silo/revoked/1): out = handed to a peer that lost its enrollment, in = received',
      labelNames: ['direction', 'result'],
    });
    this.listeners = new Listeners((err) =>
      this.logger.warn({ err: (err as Error).message }, 'a revocation notice listener threw'),
    );
  }

  onNotice(listener: RevocationNoticeListener): () => void {
    return this.listeners.add(listener);
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.options.node.handle(
      REVOCATION_NOTICE_PROTOCOL,
      ({ stream, connection }) => {
        const peer = connection.remotePeer.toString();
        this.receive(stream, peer).catch((err: unknown) => {
          const malformed = err instanceof RevocationNoticeError;
          this.count('in', malformed ? 'malformed' : 'error');
          this.logger.debug({ peer, reason: (err as Error).message }, 'a revocation notice failed');
          stream.abort(err instanceof Error ? err : new Error(String(err)));
        });
      },
      { maxInboundStreams: 4 },
    );
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.options.node.unhandle(REVOCATION_NOTICE_PROTOCOL).catch(() => undefined);
  }

  /**
   * Hands `revocation` to `peerId` over a connection that is already open
   * (never dials: the gate refuses a revoked peer anyway). Resolves true once
   * the peer confirmed reading it, false when there is no connection or it
   * failed; never rejects.
   */
  async send(peerId: string, revocation: unknown): Promise<boolean> {
    const peer = peerIdFromString(peerId);
    if (this.options.node.getConnections(peer).length === 0) {
      this.count('out', 'not-connected');
      return false;
    }
    const signal = AbortSignal.timeout(this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    try {
      const stream = await this.options.node.dialProtocol(peer, REVOCATION_NOTICE_PROTOCOL, { signal });
      try {
        const reply = this.readFrame(stream, signal);
        await stream.sink([lp.encode.single(packMessage({ v: 1, revocation })).subarray()]);
        if (!AckFrame.safeParse(await reply).success)
          throw new RevocationNoticeError('the peer answered with a malformed frame');
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)));
        throw err;
      }
      this.count('out', 'ok');
      return true;
    } catch (err) {
      this.count('out', 'error');
      this.logger.debug(
        { peer: peerId, reason: (err as Error).message },
        'could not hand over a revocation notice',
      );
      return false;
    }
  }

  private async receive(stream: Parameters<typeof readOnlyFrame>[0], peer: string): Promise<void> {
    const signal = AbortSignal.timeout(this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const frame = NoticeFrame.safeParse(await this.readFrame(stream, signal));
    if (!frame.success) throw new RevocationNoticeError('malformed revocation notice');
    await stream.sink([lp.encode.single(packMessage({ v: 1 })).subarray()]);
    this.count('in', 'ok');
    this.listeners.emit(frame.data.revocation, peer);
  }

  private readFrame(stream: Parameters<typeof readOnlyFrame>[0], signal: AbortSignal): Promise<unknown> {
    return readOnlyFrame(
      stream,
      signal,
      MAX_FRAME_BYTES,
      (reason) => new RevocationNoticeError(`revocation notice: ${reason}`),
    );
  }

  private count(direction: Direction, result: Result): void {
    this.notices.inc({ direction, result });
  }
}
