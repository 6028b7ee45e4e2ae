/**
 * The three replication systems the convergence benchmark compares, behind
 * one interface, all on a SimNetwork with the same link model and the same
 * connection graph:
 *
 * - silo: real agents (SimCluster without the reconcile loop): gossipsub
 *   publish with StrictSign, anti-entropy, liveness, mesh repair.
 * - floodsub: @libp2p/floodsub carrying the same envelopes (every node
 *   forwards every new message to every peer), no anti-entropy.
 * - push-pull: silo's anti-entropy protocol (`/silo/sync/1`) alone, each
 *   node syncing with one random connected peer every interval (Serf's
 *   push-pull), gossip publishing disabled.
 */
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { floodsub } from '@libp2p/floodsub';
import { identify } from '@libp2p/identify';
import type { Libp2p, Message, PubSub } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import type * as Y from 'yjs';
import { type SimCluster, WRITES_MAP } from '../../sim/harness/sim-cluster.js';
import type { SimNetwork } from '../../sim/net/sim-network.js';
import { decodeEnvelope, encodeEnvelope } from '../../src/gossip/envelope.js';
import {
  docTopic,
  type GossipNode,
  generateNodeKey,
  type PrivateKey,
  peerIdOf,
} from '../../src/gossip/index.js';
import { createGossipNode } from '../../src/gossip/node.js';
import { AntiEntropy } from '../../src/gossip/sync.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { DOC_NAMES, Origin } from '../../src/state/names.js';

export type SystemName = 'silo' | 'floodsub' | 'push-pull';

export type AppliedListener = (node: string, key: string, at: number) => void;

export interface ReplicaSystem {
  readonly name: SystemName;
  readonly net: SimNetwork;
  nodes(): string[];
  /** One acknowledged write on `node`; returns its key and the size of its Yjs update. */
  write(node: string): { key: string; bytes: number };
  onApplied(listener: AppliedListener): () => void;
  /** Every node holds the same content. */
  converged(): boolean;
  /** Deliveries of a message a node already had, summed over nodes, since the start. */
  duplicates(): number;
  /**
   * After a heal: the baselines have no redial of their own, so they dial
   * their connection graph again (what Serf's reconnect of failed members
   * does); silo reconnects by itself and has none.
   */
  reconnect?(): Promise<void>;
  close(): Promise<void>;
}

export interface Edge {
  dialer: string;
  listener: string;
}

/** The connection graph of a running network (each pair once). */
export function connectionGraph(net: SimNetwork): Edge[] {
  const seen = new Set<string>();
  const edges: Edge[] = [];
  for (const c of net.liveConnections()) {
    const key = [c.dialer, c.listener].sort().join('\0');
    if (seen.has(key)) continue;
    seen.add(key);
    edges.push({ dialer: c.dialer, listener: c.listener });
  }
  return edges;
}

// ---- silo -----------------------------------------------------------------------------------------------

export class SiloSystem implements ReplicaSystem {
  readonly name = 'silo' as const;
  private dups = 0;

  constructor(readonly cluster: SimCluster) {
    const topic = docTopic('sim', 'workloads');
    for (const agent of cluster.agents()) {
      // Gossipsub keeps no count of its own without a libp2p metrics component; its score
      // is told of every duplicate (gossipsub 14.1.2, handleReceivedMessage), so count there.
      const score = (agent.gossip.node.services.pubsub as unknown as { score: ScoreHook }).score;
      const original = score.duplicateMessage.bind(score);
      score.duplicateMessage = (from: string, msgId: string, t: string) => {
        if (t === topic) this.dups++;
        original(from, msgId, t);
      };
    }
  }

  get net(): SimNetwork {
    return this.cluster.net;
  }

  nodes(): string[] {
    return this.cluster.live();
  }

  write(node: string): { key: string; bytes: number } {
    const write = this.cluster.write(node);
    return { key: write.key, bytes: write.bytes };
  }

  onApplied(listener: AppliedListener): () => void {
    return this.cluster.onApplied(listener);
  }

  converged(): boolean {
    return this.cluster.converged();
  }

  duplicates(): number {
    return this.dups;
  }

  /** Nodes with connected peers but an empty mesh on the document topic right now. */
  meshless(): number {
    const topic = docTopic('sim', 'workloads');
    return this.cluster
      .agents()
      .filter((a) => a.gossip.peers().length > 0 && a.gossip.meshPeers(topic).length === 0).length;
  }

  async close(): Promise<void> {
    await this.cluster.close();
  }
}

interface ScoreHook {
  duplicateMessage(from: string, msgId: string, topic: string): void;
}

// ---- shared by the baselines -------------------------------------------------------------------------------

interface BaselineNode {
  name: string;
  state: ClusterState;
  detach: () => void;
}

abstract class BaselineSystem implements ReplicaSystem {
  abstract readonly name: SystemName;
  protected readonly members = new Map<string, BaselineNode>();
  /** Dials every edge of the connection graph (set by start()). */
  protected dialGraph: () => Promise<number> = async () => 0;
  private readonly listeners = new Set<AppliedListener>();
  private seq = 0;

  constructor(
    readonly net: SimNetwork,
    protected readonly logger: Logger,
  ) {}

  nodes(): string[] {
    return [...this.members.keys()];
  }

  write(node: string): { key: string; bytes: number } {
    const member = this.members.get(node);
    if (member === undefined) throw new Error(`no node ${node}`);
    const key = `${node}/${++this.seq}`;
    let bytes = 0;
    const off = member.state.onChange((_doc, update, origin) => {
      if (origin === Origin.local) bytes += update.byteLength;
    });
    try {
      member.state.transactLocal('workloads', (doc: Y.Doc) =>
        doc.getMap(WRITES_MAP).set(key, { by: node, seq: this.seq, at: Date.now() }),
      );
    } finally {
      off();
    }
    return { key, bytes };
  }

  onApplied(listener: AppliedListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  converged(): boolean {
    let first: string | undefined;
    for (const member of this.members.values()) {
      const digests = member.state.digestsAll();
      const key = DOC_NAMES.map((d) => digests[d]).join('/');
      if (first === undefined) first = key;
      else if (key !== first) return false;
    }
    return true;
  }

  abstract duplicates(): number;
  abstract close(): Promise<void>;

  async reconnect(): Promise<void> {
    await this.dialGraph();
  }

  protected newState(name: string): ClusterState {
    const state = new ClusterState({ logger: this.logger });
    const map = state.doc('workloads').getMap(WRITES_MAP);
    const observer = (event: Y.YMapEvent<unknown>) => {
      const at = performance.now();
      for (const key of event.keysChanged) for (const listener of this.listeners) listener(name, key, at);
    };
    map.observe(observer);
    this.members.set(name, { name, state, detach: () => map.unobserve(observer) });
    return state;
  }
}

/** Dials every edge of `graph` (dialer → listener) and resolves when all dials settled. */
async function wire(
  graph: readonly Edge[],
  dial: (dialer: string, listener: string) => Promise<unknown>,
): Promise<number> {
  const results = await Promise.allSettled(graph.map((edge) => dial(edge.dialer, edge.listener)));
  return results.filter((r) => r.status === 'rejected').length;
}

// ---- floodsub ---------------------------------------------------------------------------------------------

type FloodNode = Libp2p<{ pubsub: PubSub; identify: unknown }>;

export class FloodsubSystem extends BaselineSystem {
  readonly name = 'floodsub' as const;
  private readonly libp2p = new Map<string, FloodNode>();
  private received = 0;
  private processed = 0;

  static async start(
    net: SimNetwork,
    names: string[],
    graph: readonly Edge[],
    logger: Logger,
  ): Promise<FloodsubSystem> {
    const system = new FloodsubSystem(net, logger);
    const topic = docTopic('sim', 'workloads');
    for (const name of names) {
      if (!net.hasNode(name)) net.addNode(name);
      const node = (await createLibp2p({
        addresses: { listen: [net.address(name)] },
        transports: [net.transport(name)],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
        services: { identify: identify(), pubsub: floodsub() },
      })) as unknown as FloodNode;
      const state = system.newState(name);
      const pubsub = node.services.pubsub;
      // Every RPC message reaches processMessage; the new ones go on to the 'message' event.
      const hook = pubsub as unknown as { processMessage(from: unknown, msg: unknown): Promise<void> };
      const original = hook.processMessage.bind(pubsub);
      hook.processMessage = (from, msg) => {
        system.processed++;
        return original(from, msg);
      };
      pubsub.subscribe(topic);
      pubsub.addEventListener('message', (event: CustomEvent<Message>) => {
        if (event.detail.topic !== topic) return;
        system.received++;
        const decoded = decodeEnvelope(event.detail.data, {
          org: 'sim',
          doc: 'workloads',
          maxBytes: 1 << 22,
        });
        if (decoded.ok) state.applyRemote('workloads', decoded.envelope.update, Origin.remote);
      });
      state.onChange((doc, update, origin) => {
        if (origin !== Origin.local || doc !== 'workloads') return;
        void pubsub
          .publish(topic, encodeEnvelope({ org: 'sim', doc, from: name, update }))
          .catch(() => undefined);
      });
      system.libp2p.set(name, node);
    }
    system.dialGraph = () =>
      wire(graph, async (dialer, listener) => {
        const target = system.libp2p.get(listener) as FloodNode;
        await system.libp2p.get(dialer)?.dial(multiaddr(`${net.address(listener)}/p2p/${target.peerId}`));
      });
    await system.dialGraph();
    return system;
  }

  duplicates(): number {
    return Math.max(0, this.processed - this.received);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.libp2p.values()].map((n) => n.stop()));
    for (const member of this.members.values()) {
      member.detach();
      await member.state.close();
    }
    this.net.close();
  }
}

// ---- push-pull ---------------------------------------------------------------------------------------------

export class PushPullSystem extends BaselineSystem {
  readonly name = 'push-pull' as const;
  private readonly parts = new Map<string, { node: GossipNode; sync: AntiEntropy }>();

  static async start(
    net: SimNetwork,
    names: string[],
    graph: readonly Edge[],
    intervalMs: number,
    logger: Logger,
  ): Promise<PushPullSystem> {
    const system = new PushPullSystem(net, logger);
    const keys = new Map<string, PrivateKey>();
    for (const name of names) {
      if (!net.hasNode(name)) net.addNode(name);
      const privateKey = await generateNodeKey();
      keys.set(name, privateKey);
      const node = await createGossipNode({
        transport: 'memory',
        customTransport: net.transport(name),
        listen: [net.address(name)],
        privateKey,
        start: false,
      });
      const state = system.newState(name);
      const sync = new AntiEntropy({ node, state, logger, registry: new Registry(), intervalMs });
      await sync.start();
      await node.start();
      system.parts.set(name, { node, sync });
    }
    system.dialGraph = () =>
      wire(graph, async (dialer, listener) => {
        const peer = peerIdOf(keys.get(listener) as PrivateKey);
        await system.parts.get(dialer)?.node.dial(multiaddr(`${net.address(listener)}/p2p/${peer}`));
      });
    await system.dialGraph();
    return system;
  }

  duplicates(): number {
    // A session carries only what the other side lacks (state-vector diff): no message is delivered twice.
    return 0;
  }

  async close(): Promise<void> {
    for (const { sync } of this.parts.values()) await sync.stop();
    await Promise.allSettled([...this.parts.values()].map(({ node }) => node.stop()));
    for (const member of this.members.values()) {
      member.detach();
      await member.state.close();
    }
    this.net.close();
  }
}
