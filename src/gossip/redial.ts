import type { IdentifyResult, PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { counterIn } from '../util/metrics.js';
import type { GossipNode } from './node.js';

export interface RedialOptions {
  node: GossipNode;
  logger: Logger;
  registry: Registry;
  /** Seed addresses from config; with a `/p2p/<peer id>` suffix they are tracked per peer. */
  bootstrap?: string[];
  /** Dial known peers while fewer than this many are connected. */
  targetConnections?: number;
  checkIntervalMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  dialTimeoutMs?: number;
  /** Peers never to dial (the blocklist); checked before every attempt. */
  isBlocked?: (peerId: string) => boolean;
  /**
   * True when the peer's heartbeats reach us (through any path). Peers not
   * heard are probed even when the node has its target of connections:
   * that is how the halves of a healed partition find each other again.
   */
  isHeard?: (peerId: string) => boolean;
  /** At most one probe of an unheard peer per this interval (default: checkIntervalMs). */
  probeIntervalMs?: number;
}

export const DEFAULT_TARGET_CONNECTIONS = 8;
const MAX_PARALLEL_DIALS = 4;
const MAX_ADDRS_PER_PEER = 8;

interface KnownPeer {
  /** Absent for a bootstrap address whose peer id is not known yet. */
  peerId: string | undefined;
  addrs: Multiaddr[];
  failures: number;
  nextAttemptAt: number;
}

/**
 * Keeps the node connected: remembers every peer address it has learned
 * (bootstrap config, then identify) and re-dials disconnected peers with
 * exponential backoff and jitter while the node has fewer connections
 * than its target.
 *
 * Filling up to the target is not enough after a partition: each half
 * re-fills its connections from its own side and then stops dialing, so
 * after the heal no connection crosses the old boundary and the halves
 * stay apart for good. So, whatever the connection count, the node also
 * probes one peer it does not hear (not connected, no fresh heartbeats)
 * per probe interval, with the same per-peer backoff (Serf's reconnect of
 * failed members, at a shorter interval). In a healthy cluster every peer
 * is heard and no probe is made.
 */
export class Redialer {
  private readonly node: GossipNode;
  private readonly logger: Logger;
  private readonly dials: Counter<'reason' | 'result'>;
  private readonly target: number;
  private readonly checkIntervalMs: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly dialTimeoutMs: number;
  private readonly isBlocked: (peerId: string) => boolean;
  private readonly isHeard: ((peerId: string) => boolean) | undefined;
  private readonly probeIntervalMs: number;
  private nextProbeAt = 0;
  /** Keyed by peer id, or by address for bootstrap entries without one. */
  private readonly known = new Map<string, KnownPeer>();
  private readonly dialing = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(options: RedialOptions) {
    this.node = options.node;
    this.logger = options.logger.child({ component: 'redial' });
    this.dials = counterIn(options.registry, {
      name: 'silo_gossip_redials_total',
      help: 'Dials made to keep the node connected, by reason (fill: below target; probe: a peer not heard) and result',
      labelNames: ['reason', 'result'],
    });
    this.target = options.targetConnections ?? DEFAULT_TARGET_CONNECTIONS;
    this.checkIntervalMs = options.checkIntervalMs ?? 1000;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 10_000;
    this.dialTimeoutMs = options.dialTimeoutMs ?? 5000;
    this.isBlocked = options.isBlocked ?? (() => false);
    this.isHeard = options.isHeard;
    this.probeIntervalMs = options.probeIntervalMs ?? this.checkIntervalMs;
    for (const addr of options.bootstrap ?? []) this.addAddress(addr);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.node.addEventListener('peer:identify', this.onIdentify);
    this.timer = setInterval(() => this.check(), this.checkIntervalMs);
    this.timer.unref();
    this.check();
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.timer);
    this.node.removeEventListener('peer:identify', this.onIdentify);
  }

  /**
   * Remembers a dialable address (`/ip4/.../tcp/.../p2p/<id>` or
   * `/memory/<name>/p2p/<id>`). Returns true when the address was not known before.
   */
  addAddress(addr: string | Multiaddr): boolean {
    const ma = typeof addr === 'string' ? multiaddr(addr) : addr;
    const peerId = ma.getPeerId() ?? undefined;
    const key = peerId ?? ma.toString();
    const entry = this.known.get(key);
    if (entry) {
      if (entry.addrs.some((a) => a.equals(ma))) return false;
      entry.addrs.push(ma);
      // A peer restarting on fresh ports would otherwise grow the list forever; newest win.
      if (entry.addrs.length > MAX_ADDRS_PER_PEER) entry.addrs.shift();
      return true;
    }
    this.known.set(key, { peerId, addrs: [ma], failures: 0, nextAttemptAt: 0 });
    return true;
  }

  /** Lets the next check dial `peerId` at once (e.g. after it was unblocked). */
  resetBackoff(peerId: string): void {
    const entry = this.known.get(peerId);
    if (entry) {
      entry.failures = 0;
      entry.nextAttemptAt = 0;
    }
  }

  knownPeers(): string[] {
    return [...this.known.keys()];
  }

  /** Runs one round now (also runs every checkIntervalMs). */
  check(): void {
    if (!this.running) return;
    const connected = new Set(this.node.getPeers().map((p) => p.toString()));
    const self = this.node.peerId.toString();
    const now = Date.now();
    const candidates = [...this.known].filter(
      ([key, entry]) =>
        key !== self &&
        !this.dialing.has(key) &&
        entry.nextAttemptAt <= now &&
        (entry.peerId === undefined || (!connected.has(entry.peerId) && !this.isBlocked(entry.peerId))),
    );
    shuffle(candidates);
    let deficit = this.target - connected.size - this.dialing.size;
    for (const [key, entry] of candidates) {
      if (deficit <= 0 || this.dialing.size >= MAX_PARALLEL_DIALS) break;
      deficit--;
      void this.dial(key, entry, 'fill');
    }
    this.probe(candidates, now);
  }

  /** Dials one not-yet-dialed candidate we do not hear, at most once per probe interval. */
  private probe(candidates: [string, KnownPeer][], now: number): void {
    const isHeard = this.isHeard;
    if (isHeard === undefined || now < this.nextProbeAt || this.dialing.size >= MAX_PARALLEL_DIALS) return;
    const unheard = candidates.find(
      ([key, entry]) => entry.peerId !== undefined && !this.dialing.has(key) && !isHeard(entry.peerId),
    );
    if (unheard === undefined) return;
    this.nextProbeAt = now + this.probeIntervalMs;
    void this.dial(unheard[0], unheard[1], 'probe');
  }

  private async dial(key: string, entry: KnownPeer, reason: 'fill' | 'probe'): Promise<void> {
    this.dialing.add(key);
    try {
      const target: PeerId | Multiaddr[] =
        entry.addrs.length > 0 ? entry.addrs : peerIdFromString(entry.peerId as string);
      const connection = await this.node.dial(target, { signal: AbortSignal.timeout(this.dialTimeoutMs) });
      entry.failures = 0;
      entry.nextAttemptAt = 0;
      this.dials.inc({ reason, result: 'ok' });
      const peerId = connection.remotePeer.toString();
      if (entry.peerId === undefined) {
        // A bootstrap address turned out to belong to this peer: track it by id from now on.
        this.known.delete(key);
        this.known.set(peerId, { ...entry, peerId });
      }
    } catch (err) {
      entry.failures++;
      const backoff = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** (entry.failures - 1));
      entry.nextAttemptAt = Date.now() + backoff * (0.5 + Math.random() / 2);
      this.dials.inc({ reason, result: 'failed' });
      this.logger.debug(
        { peer: key, reason, failures: entry.failures, err: (err as Error).message },
        'redial failed',
      );
    } finally {
      this.dialing.delete(key);
    }
  }

  private readonly onIdentify = (event: CustomEvent<IdentifyResult>): void => {
    const peerId = event.detail.peerId.toString();
    const addrs = event.detail.listenAddrs.map((a) => (a.getPeerId() ? a : a.encapsulate(`/p2p/${peerId}`)));
    if (addrs.length === 0) return;
    const entry = this.known.get(peerId);
    if (entry) {
      entry.addrs = addrs;
      entry.failures = 0;
      entry.nextAttemptAt = 0;
    } else {
      this.known.set(peerId, { peerId, addrs, failures: 0, nextAttemptAt: 0 });
    }
  };
}

function shuffle<T>(items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
}
