import type { Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import * as lp from 'it-length-prefixed';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import {
  MemberIndex,
  type MemberState,
  type MemberUpdate,
  SwimCore,
  type SwimEvent,
  type SwimMessage,
  type SwimParams,
} from '../membership/swim-core.js';
import { decodeSwimFrame, encodeSwimFrame, MAX_SWIM_FRAME_BYTES } from '../membership/swim-frames.js';
import type { DocName } from '../state/names.js';
import { Listeners } from '../util/listeners.js';
import { counterIn, gaugeIn } from '../util/metrics.js';
import type { PeerDigestReport } from './digest-watch.js';
import type { GossipNode } from './node.js';

/**
 * `/silo/swim/1`: SWIM + Lifeguard membership (docs/membership.md) over
 * libp2p. The protocol is the pure SwimCore; this drives it: a timer at the
 * core's next wake time, one short stream per message (one length-prefixed
 * SWIM frame, then close), and the enrollment check on every sender: a
 * frame is heard only when the connection's authenticated peer id is an
 * enrolled member's key (docs/protocol.md, "Membership probes").
 *
 * A message that cannot be delivered is simply lost: SWIM expects that, and
 * a member that cannot be reached becomes suspect and then dead, which is
 * the point.
 */
export const SWIM_PROTOCOL = '/silo/swim/1';

export interface SwimMember {
  nodeId: string;
  /** The libp2p peer id of the member's enrolled key. */
  peerId: string;
}

export interface SwimMembershipOptions {
  node: GossipNode;
  selfId: string;
  /** The enrolled members (this node may be among them); read at start and on refreshMembers(). */
  members: () => SwimMember[];
  logger: Logger;
  registry: Registry;
  params?: Partial<SwimParams>;
  /** A monotonic local clock in ms (default performance.now); the simulator gives each node its own. */
  now?: () => number;
  random?: () => number;
  /** Start from this incarnation (default 0: a restart catches up by refuting its own obituary). */
  incarnation?: number;
  /**
   * This node's document digests, sent on every ping and ack so that each
   * probe is also an anti-entropy check (docs/protocol.md); none when absent.
   */
  digests?: () => Record<DocName, string>;
  /** Called with the digests a member's ping or ack carried (GossipLayer.observePeerDigests). */
  onPeerDigests?: (report: PeerDigestReport) => void;
}

export type SwimChangeListener = (event: { node: string; state: MemberState; incarnation: number }) => void;

const SEND_TIMEOUT_MS = 2000;

type Rejection = 'oversize' | 'malformed' | 'wrong-version' | 'stranger' | 'unreadable';

function createSwimMetrics(registry: Registry, members: () => MemberUpdate[], awareness: () => number) {
  return {
    messages: counterIn(registry, {
      name: 'silo_swim_messages_total',
      help: 'SWIM messages (/silo/swim/1) by direction and kind',
      labelNames: ['direction', 'kind'] as const,
    }),
    rejected: counterIn(registry, {
      name: 'silo_swim_frames_rejected_total',
      help: 'Inbound SWIM frames dropped, by reason (stranger: the sender is not an enrolled member)',
      labelNames: ['reason'] as const,
    }),
    sendFailures: counterIn(registry, {
      name: 'silo_swim_send_failures_total',
      help: 'SWIM messages that could not be handed to the peer (lost, as SWIM allows)',
    }),
    refutations: counterIn(registry, {
      name: 'silo_swim_refutations_total',
      help: 'Times this node was said to be suspect or dead and answered with a higher incarnation',
    }),
    members: gaugeIn(registry, {
      name: 'silo_swim_members',
      help: 'Other members by the state SWIM gives them',
      labelNames: ['state'] as const,
      collect() {
        const counts: Record<MemberState, number> = { alive: 0, suspect: 0, dead: 0 };
        for (const m of members()) counts[m.state]++;
        for (const [state, count] of Object.entries(counts)) this.set({ state }, count);
      },
    }),
    awareness: gaugeIn(registry, {
      name: 'silo_swim_awareness',
      help: "Lifeguard's local health multiplier minus one (0 healthy; probes slow down as it rises)",
      collect() {
        this.set(awareness());
      },
    }),
  };
}

async function* asBytes(source: AsyncIterable<{ subarray(): Uint8Array }>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) yield chunk.subarray();
}

export class SwimMembership {
  private readonly options: SwimMembershipOptions;
  private readonly logger: Logger;
  private readonly core: SwimCore;
  private readonly now: () => number;
  private readonly metrics: ReturnType<typeof createSwimMetrics>;
  private readonly listeners = new Listeners<Parameters<SwimChangeListener>>((err) =>
    this.logger.warn({ err: (err as Error).message }, 'a SWIM change listener threw'),
  );
  private peerOf = new Map<string, string>();
  private nodeOf = new Map<string, string>();
  private timer: NodeJS.Timeout | null = null;
  private started = false;

  constructor(options: SwimMembershipOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'swim' });
    this.now = options.now ?? (() => performance.now());
    this.core = new SwimCore({
      selfId: options.selfId,
      index: new MemberIndex(),
      random: options.random ?? Math.random,
      ...(options.params !== undefined ? { params: options.params } : {}),
      ...(options.incarnation !== undefined ? { incarnation: options.incarnation } : {}),
    });
    this.metrics = createSwimMetrics(
      options.registry,
      () => this.core.view(),
      () => this.core.awareness,
    );
  }

  get incarnation(): number {
    return this.core.incarnation;
  }

  /** Every other member as SWIM sees it. */
  view(): MemberUpdate[] {
    return this.core.view();
  }

  stateOf(nodeId: string): MemberUpdate | null {
    return this.core.stateOf(nodeId);
  }

  /** Called on every change of this node's view of another member. */
  onChange(listener: SwimChangeListener): () => void {
    return this.listeners.add(listener);
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.refreshMembers();
    await this.options.node.handle(
      SWIM_PROTOCOL,
      ({ stream, connection }) => {
        this.serve(stream, connection.remotePeer.toString()).catch((err: unknown) => {
          this.metrics.rejected.inc({ reason: 'unreadable' });
          this.logger.debug({ err: (err as Error).message }, 'reading a SWIM frame failed');
          stream.abort(err instanceof Error ? err : new Error(String(err)));
        });
      },
      { maxInboundStreams: 64 },
    );
    this.pump();
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.options.node.unhandle(SWIM_PROTOCOL).catch(() => undefined);
  }

  /** Re-reads the enrolled members (after an enrollment or a revocation). */
  refreshMembers(): void {
    const peerOf = new Map<string, string>();
    const nodeOf = new Map<string, string>();
    for (const { nodeId, peerId } of this.options.members()) {
      peerOf.set(nodeId, peerId);
      nodeOf.set(peerId, nodeId);
    }
    this.peerOf = peerOf;
    this.nodeOf = nodeOf;
    this.core.setMembers(peerOf.keys());
    if (this.started) this.pump();
  }

  private reject(reason: Rejection, peerId: string, detail: string): void {
    this.metrics.rejected.inc({ reason });
    this.logger.debug({ peer: peerId, reason, detail }, 'SWIM frame dropped');
  }

  private async serve(stream: Stream, peerId: string): Promise<void> {
    const from = this.nodeOf.get(peerId);
    if (from === undefined || from === this.options.selfId) {
      // Refused before reading: a stranger's bytes are never decoded.
      this.reject('stranger', peerId, 'not an enrolled member');
      stream.abort(new Error('not an enrolled member'));
      return;
    }
    let frame: Uint8Array | undefined;
    try {
      for await (const chunk of lp.decode(asBytes(stream.source), { maxDataLength: MAX_SWIM_FRAME_BYTES })) {
        if (frame !== undefined) {
          this.reject('malformed', peerId, 'more than one frame on a SWIM stream');
          stream.abort(new Error('one frame per stream'));
          return;
        }
        frame = chunk.subarray();
      }
    } catch (err) {
      const oversize = /too long|maxDataLength|max length/i.test((err as Error).message);
      this.reject(oversize ? 'oversize' : 'unreadable', peerId, (err as Error).message);
      stream.abort(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    await stream.close().catch(() => undefined);
    if (frame === undefined) {
      this.reject('malformed', peerId, 'stream ended without a frame');
      return;
    }
    const decoded = decodeSwimFrame(frame);
    if (!decoded.ok) {
      this.reject(decoded.reason, peerId, decoded.detail);
      return;
    }
    if (!this.started) return;
    this.metrics.messages.inc({ direction: 'in', kind: decoded.message.kind });
    this.core.receive(this.now(), from, decoded.message);
    this.pump();
    if (decoded.digests !== undefined)
      this.options.onPeerDigests?.({ nodeId: from, peerId, digests: decoded.digests, via: 'probe' });
  }

  /** Sends what the core wants sent, reports what changed, and sets the timer for its next wake. */
  private pump(): void {
    if (!this.started) return;
    const { send, events } = this.core.takeOutput();
    for (const event of events) this.report(event);
    for (const out of send) this.deliver(out.to, out.message);
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.max(0, Math.ceil(this.core.nextWakeAt() - this.now()));
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.started) return;
      this.core.tick(this.now());
      this.pump();
    }, delay);
    this.timer.unref();
  }

  private report(event: SwimEvent): void {
    if (event.kind === 'refuted') {
      this.metrics.refutations.inc();
      this.logger.info({ incarnation: event.incarnation, by: event.by }, `refuted being called ${event.by}`);
      return;
    }
    const level = event.state === 'alive' ? 'debug' : 'info';
    this.logger[level](
      { member: event.node, incarnation: event.incarnation },
      `swim: ${event.node} is ${event.state}`,
    );
    this.listeners.emit({ node: event.node, state: event.state, incarnation: event.incarnation });
  }

  private deliver(to: string, message: SwimMessage): void {
    const peerId = this.peerOf.get(to);
    if (peerId === undefined) return;
    const bytes = lp.encode.single(encodeSwimFrame(message, this.options.digests?.())).subarray();
    this.metrics.messages.inc({ direction: 'out', kind: message.kind });
    const send = async () => {
      const signal = AbortSignal.timeout(SEND_TIMEOUT_MS);
      // Optimistic protocol select: the frame goes out with the protocol name, no round trip first.
      const stream = await this.options.node.dialProtocol(peerIdFromString(peerId), SWIM_PROTOCOL, {
        signal,
        negotiateFully: false,
      });
      try {
        await stream.sink([bytes]);
        await stream.close({ signal });
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)));
        throw err;
      }
    };
    send().catch((err: unknown) => {
      this.metrics.sendFailures.inc();
      this.logger.debug({ to, err: (err as Error).message }, 'SWIM message lost');
    });
  }
}
