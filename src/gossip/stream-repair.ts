import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { counterIn } from '../util/metrics.js';
import type { GossipNode } from './node.js';

/**
 * Keeps every member peer's pubsub streams alive (docs/protocol.md,
 * "Duplicate connections").
 *
 * gossipsub keeps one inbound and one outbound stream per peer id. A second
 * connection from the same peer id (a simultaneous dial, NAT rebinding, a
 * restart while the old connection lingers, or anyone holding the key)
 * replaces the peer's streams; when that connection closes, the peer's
 * streams die with it while the first connection stays open, and gossipsub
 * never opens new ones: the peer is "connected" but nothing it publishes
 * reaches us any more (seen from outside testing: heartbeats lost for good).
 *
 * So: a member peer with an open connection whose connections carry no open
 * inbound pubsub stream, or no open outbound one, for `graceMs` is hung up
 * on; redial reconnects it and gossipsub opens fresh streams. Only the
 * public libp2p connection and stream state is read.
 */
export interface StreamRepairOptions {
  node: GossipNode;
  logger: Logger;
  registry: Registry;
  /** Peer ids we exchange pubsub messages with (agents we have heard); others are left alone. */
  members: () => ReadonlySet<string>;
  checkIntervalMs?: number;
  /** How long streams may be missing (they open shortly after a connection does). */
  graceMs?: number;
  now?: () => number;
}

const PUBSUB_PROTOCOL = /^\/(meshsub|floodsub)\//;

type StreamLike = {
  protocol?: string;
  direction: 'inbound' | 'outbound';
  status: string;
  readStatus: string;
  writeStatus: string;
};

/** An open pubsub stream in `direction`, usable both ways it is used. */
function healthy(streams: readonly StreamLike[], direction: 'inbound' | 'outbound'): boolean {
  return streams.some(
    (s) =>
      s.direction === direction &&
      PUBSUB_PROTOCOL.test(s.protocol ?? '') &&
      s.status === 'open' &&
      s.readStatus !== 'closed' &&
      s.writeStatus !== 'closed',
  );
}

export class StreamRepair {
  private readonly options: StreamRepairOptions;
  private readonly logger: Logger;
  private readonly repairs: Counter;
  private readonly brokenSince = new Map<string, number>();
  private readonly clock: () => number;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: StreamRepairOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'stream-repair' });
    this.clock = options.now ?? Date.now;
    this.repairs = counterIn(options.registry, {
      name: 'silo_gossip_stream_repairs_total',
      help: 'Connections to a member peer closed because its pubsub streams were gone (a duplicate connection took them); redial reconnects',
    });
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(), this.options.checkIntervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.brokenSince.clear();
  }

  /** One check of every connected member peer (the timer calls it; tests may too). */
  check(): void {
    const { node } = this.options;
    const members = this.options.members();
    const now = this.clock();
    const grace = this.options.graceMs ?? 3000;
    const seen = new Set<string>();
    for (const peer of node.getPeers()) {
      const peerId = peer.toString();
      if (!members.has(peerId)) continue;
      const connections = node.getConnections(peer).filter((c) => c.status === 'open');
      if (connections.length === 0) continue;
      seen.add(peerId);
      const streams = connections.flatMap((c) => c.streams as readonly StreamLike[]);
      if (healthy(streams, 'inbound') && healthy(streams, 'outbound')) {
        this.brokenSince.delete(peerId);
        continue;
      }
      const since = this.brokenSince.get(peerId) ?? now;
      this.brokenSince.set(peerId, since);
      if (now - since < grace) continue;
      this.brokenSince.delete(peerId);
      this.repairs.inc();
      this.logger.warn(
        { peerId, connections: connections.length, brokenMs: now - since },
        'pubsub streams to a connected peer are gone (a duplicate connection took them): reconnecting',
      );
      node.hangUp(peer).catch((err: unknown) => {
        this.logger.debug({ peerId, err: (err as Error).message }, 'hang-up failed');
      });
    }
    for (const peerId of this.brokenSince.keys()) if (!seen.has(peerId)) this.brokenSince.delete(peerId);
  }
}
