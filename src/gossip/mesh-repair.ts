import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { counterIn, gaugeIn } from '../util/metrics.js';
import type { GossipNode } from './node.js';

export interface MeshRepairOptions {
  node: GossipNode;
  logger: Logger;
  registry: Registry;
  /** Topics to watch, keyed by a short label for metrics (e.g. the document name). */
  topics: Record<string, string>;
  /** Mesh size below which a topic counts as thin (capped by its subscriber count). */
  minMeshPeers: number;
  /** Starts an anti-entropy session with a peer. */
  requestSync: (peerId: string) => unknown;
  checkIntervalMs?: number;
  /**
   * How long a topic may stay thin before it counts: the mesh forms at
   * gossipsub's heartbeat, so a new connection is meshless for up to one.
   */
  graceMs?: number;
  /** While a topic stays thin, sync again this often. */
  resyncMs?: number;
}

interface ThinTopic {
  since: number;
  lastSyncAt: number | undefined;
}

/**
 * Meshless nodes (docs/protocol.md): a node with connected subscribed
 * peers but an empty or thin topic mesh hears most writes only through
 * IHAVE gossip at the next gossipsub heartbeat, or not at all. This watches
 * mesh sizes, counts such episodes and closes the gap at once with an
 * anti-entropy session, repeated while the condition lasts; gossipsub's
 * own heartbeat keeps trying to graft.
 */
export class MeshRepair {
  private readonly node: GossipNode;
  private readonly logger: Logger;
  private readonly topics: [string, string][];
  private readonly minMeshPeers: number;
  private readonly requestSync: (peerId: string) => unknown;
  private readonly checkIntervalMs: number;
  private readonly graceMs: number;
  private readonly resyncMs: number;
  private readonly meshless: Counter<'topic' | 'kind'>;
  private readonly checks: Counter;
  private readonly repairSyncs: Counter;
  private readonly thin = new Map<string, ThinTopic>();
  private readonly pendingChecks = new Set<NodeJS.Timeout>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(options: MeshRepairOptions) {
    this.node = options.node;
    this.logger = options.logger.child({ component: 'mesh-repair' });
    this.topics = Object.entries(options.topics);
    this.minMeshPeers = options.minMeshPeers;
    this.requestSync = options.requestSync;
    this.checkIntervalMs = options.checkIntervalMs ?? 1000;
    this.graceMs = options.graceMs ?? 1500;
    this.resyncMs = options.resyncMs ?? 5000;
    this.meshless = counterIn(options.registry, {
      name: 'silo_gossip_meshless_events_total',
      help: 'Episodes of a topic mesh staying empty or thin beyond the grace while subscribed peers are connected',
      labelNames: ['topic', 'kind'],
    });
    this.checks = counterIn(options.registry, {
      name: 'silo_gossip_mesh_checks_total',
      help: 'Mesh checks run (each compares every topic mesh with its target)',
    });
    this.repairSyncs = counterIn(options.registry, {
      name: 'silo_gossip_mesh_repair_syncs_total',
      help: 'Anti-entropy sessions requested because a topic mesh stayed empty or thin',
    });
    const pubsub = this.node.services.pubsub;
    const topics = this.topics;
    // Read at scrape time; registered, not otherwise used here.
    gaugeIn(options.registry, {
      name: 'silo_gossip_mesh_peers',
      help: 'Peers in our gossipsub mesh, by topic',
      labelNames: ['topic'],
      collect() {
        for (const [label, topic] of topics) this.set({ topic: label }, pubsub.getMeshPeers(topic).length);
      },
    });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.timer = setInterval(() => this.check(), this.checkIntervalMs);
    this.timer.unref();
    this.node.addEventListener('peer:connect', this.onConnect);
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.timer);
    for (const t of this.pendingChecks) clearTimeout(t);
    this.pendingChecks.clear();
    this.node.removeEventListener('peer:connect', this.onConnect);
  }

  /** Topics currently thin beyond the grace (for tests and the benchmark). */
  thinTopics(): string[] {
    const now = Date.now();
    return [...this.thin].filter(([, t]) => now - t.since >= this.graceMs).map(([label]) => label);
  }

  /** Runs one check now (also runs every checkIntervalMs). */
  check(): void {
    if (!this.running) return;
    const pubsub = this.node.services.pubsub;
    const now = Date.now();
    const outside = new Set<string>();
    const anySubscriber = new Set<string>();
    for (const [label, topic] of this.topics) {
      const subscribers = pubsub.getSubscribers(topic).map((p) => p.toString());
      const mesh = new Set(pubsub.getMeshPeers(topic));
      const wanted = Math.min(this.minMeshPeers, subscribers.length);
      if (subscribers.length === 0 || mesh.size >= wanted) {
        this.thin.delete(label);
        continue;
      }
      let entry = this.thin.get(label);
      if (!entry) {
        entry = { since: now, lastSyncAt: undefined };
        this.thin.set(label, entry);
      }
      if (now - entry.since < this.graceMs) continue;
      const firstTime = entry.lastSyncAt === undefined;
      if (!firstTime && now - entry.lastSyncAt! < this.resyncMs) continue;
      if (firstTime) {
        const kind = mesh.size === 0 ? 'empty' : 'thin';
        this.meshless.inc({ topic: label, kind });
        this.logger.warn(
          {
            topic: label,
            kind,
            mesh: mesh.size,
            subscribers: subscribers.length,
            peers: this.node.getPeers().length,
          },
          'topic mesh below target while subscribed peers are connected; syncing',
        );
      }
      entry.lastSyncAt = now;
      // A peer outside our mesh is the one whose writes we may be missing.
      for (const p of subscribers) if (!mesh.has(p)) outside.add(p);
      for (const p of subscribers) anySubscriber.add(p);
    }
    // One session covers every document, so one per check is enough.
    const pool = [...(outside.size > 0 ? outside : anySubscriber)];
    if (pool.length > 0) {
      this.repairSyncs.inc();
      this.requestSync(pool[Math.floor(Math.random() * pool.length)]!);
    }
    this.checks.inc();
  }

  private readonly onConnect = (): void => {
    // Look again once gossipsub has had a heartbeat to graft the new peer.
    const t = setTimeout(() => {
      this.pendingChecks.delete(t);
      this.check();
    }, this.graceMs + 100);
    t.unref();
    this.pendingChecks.add(t);
  };
}
