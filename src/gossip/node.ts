import type { GossipSub } from '@chainsafe/libp2p-gossipsub';
import { gossipsub } from '@chainsafe/libp2p-gossipsub';
import { createTopicScoreParams } from '@chainsafe/libp2p-gossipsub/score';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type Identify, identify } from '@libp2p/identify';
import type { ConnectionGater, PrivateKey } from '@libp2p/interface';
import { memory } from '@libp2p/memory';
import { type Ping, ping } from '@libp2p/ping';
import { preSharedKey } from '@libp2p/pnet';
import { prometheusMetrics } from '@libp2p/prometheus-metrics';
import { tcp } from '@libp2p/tcp';
import { createLibp2p, type Libp2p, type Libp2pOptions } from 'libp2p';
import type { Registry } from 'prom-client';
import { DEFAULT_MAX_UPDATE_BYTES } from '../state/cluster-state.js';

/** The services every silo libp2p node runs. */
// A type alias, not an interface: libp2p's ServiceMap needs an index signature.
export type GossipServices = {
  identify: Identify;
  ping: Ping;
  pubsub: GossipSub;
};

/** A silo libp2p node. Callers outside src/gossip use this alias instead of libp2p's types. */
export type GossipNode = Libp2p<GossipServices>;

/** Re-exported so that other folders can name these shapes without importing libp2p. */
export type { ConnectionGater, PrivateKey };

export type TransportKind = 'tcp' | 'memory';

type TransportFactory = NonNullable<Libp2pOptions<GossipServices>['transports']>[number];
/** A libp2p transport factory `(components) => Transport`, opaque outside src/gossip. */
export type CustomTransport = (components: never) => unknown;

/**
 * libp2p connection-manager limits. libp2p's defaults (5 inbound
 * connection attempts per second per remote IP, 10 pending inbound, 300
 * connections) suit an overlay where every peer has its own IP; tests and
 * tools that put many peers on 127.0.0.1 raise the per-host rate.
 */
export interface ConnectionLimits {
  inboundPerHostPerSecond?: number;
  maxIncomingPending?: number;
  maxConnections?: number;
}

/** Gossipsub mesh degree. */
export interface MeshDegree {
  D: number;
  Dlo: number;
  Dhi: number;
}

/**
 * D = 3 (gossipsub's default is 6): each node hears a message from about
 * D − 1 mesh peers besides the first, so D sets the duplicates. Measured on
 * the simulator (docs/benchmarks.md, "Mesh degree"): D = 6 gave 4.8-5.8
 * duplicate deliveries per agent per write at 10-20 agents, D = 4 4.0-4.3,
 * D = 3 3.0 with lower write→all latency (less work per write). Delivery
 * does not rest on the mesh alone: our own messages go to every subscribed
 * peer (flood publish), gossip (IHAVE to Dlazy = 6 others) recovers what a
 * thin mesh missed, and anti-entropy repairs the rest.
 */
export const DEFAULT_MESH_DEGREE: MeshDegree = { D: 3, Dlo: 2, Dhi: 6 };

/**
 * Largest gossipsub RPC accepted from a peer. It must hold one envelope of
 * the largest update ClusterState accepts plus signature and framing, so an
 * oversize envelope reaches our validator (and is counted) rather than
 * killing the peer's stream.
 */
export const DEFAULT_MAX_RPC_BYTES = DEFAULT_MAX_UPDATE_BYTES + 64 * 1024;

export interface GossipNodeOptions {
  transport: TransportKind;
  /**
   * A libp2p transport factory that replaces `transport` (the simulator's
   * link-model transport, sim/net). Typed loosely on purpose: callers outside
   * src/gossip never name libp2p types.
   */
  customTransport?: CustomTransport;
  /** Listen multiaddrs, e.g. `/ip4/127.0.0.1/tcp/0` or `/memory/node-1`. */
  listen: string[];
  /** The node's libp2p identity (Ed25519, see keys.ts). */
  privateKey: PrivateKey;
  /** Enrollment gate and/or test blocklist; passed to libp2p unchanged. */
  connectionGater?: ConnectionGater;
  /** libp2p private-network key (the `/key/swarm/psk/1.0.0/` file format, see @libp2p/pnet). */
  psk?: Uint8Array;
  /** @libp2p/memory per-listener latency in ms (a throughput cap per chunk). */
  memoryLatencyMs?: number;
  mesh?: Partial<MeshDegree>;
  /** Send our own messages to every subscribed peer, not only the mesh (default true; see below). */
  floodPublish?: boolean;
  /** Gossipsub heartbeat (mesh maintenance and IHAVE gossip), ms. */
  gossipHeartbeatMs?: number;
  /** Topics whose invalid messages lower the sender's peer score (the document and liveness topics). */
  scoredTopics?: string[];
  maxRpcBytes?: number;
  connectionLimits?: ConnectionLimits;
  /** Defaults to true; false leaves the node stopped so the caller can register handlers first. */
  start?: boolean;
  /**
   * libp2p's own metrics (`libp2p_*`: connections, dials, streams, bytes per
   * protocol) into this registry. Only the first node of a process gets them
   * (see claimLibp2pMetrics); `onUnavailable` is called for any later one.
   */
  metrics?: { registry: Registry; onUnavailable?: () => void };
}

/**
 * @libp2p/prometheus-metrics keeps its metric objects in one module-wide map
 * keyed by metric name. A second libp2p node in the same process would be
 * handed the first node's objects (its numbers counted into the first
 * node's registry, its own registry left without them); and the package's
 * default mode clears prom-client's global registry on every node. So: the
 * global registry is never touched (preserveExistingMetrics), and only the
 * first node of a process that asks gets libp2p metrics. A real agent is one
 * node per process; tests and the simulator run many and leave them off.
 * Process-wide on purpose: it mirrors the package's own process-wide map.
 */
let libp2pMetricsClaimed = false;

function claimLibp2pMetrics(): boolean {
  if (libp2pMetricsClaimed) return false;
  libp2pMetricsClaimed = true;
  return true;
}

/**
 * Score parameters. Only invalid deliveries count: a Reject costs the
 * propagating peer 10 * (rejects)^2, decaying by 0.9 per second: one bad
 * message makes its score negative for ~22 s, which prunes it from our mesh
 * with gossipsub's 60 s backoff (61-77 s out of the mesh, docs/protocol.md),
 * and three graylist it.
 * Mesh-delivery and time-in-mesh terms are off: our topics are quiet most of
 * the time and a quiet peer is not a bad one. IP colocation is off too:
 * every node is enrolled, and in tests and the simulator all nodes share one
 * IP, which otherwise drives scores negative once a node has more than 10
 * connections and leaves it meshless (docs/protocol.md).
 */
function scoreParams(topics: string[]) {
  const perTopic = createTopicScoreParams({
    topicWeight: 1,
    timeInMeshWeight: 0,
    firstMessageDeliveriesWeight: 0,
    meshMessageDeliveriesWeight: 0,
    meshFailurePenaltyWeight: 0,
    invalidMessageDeliveriesWeight: -10,
    invalidMessageDeliveriesDecay: 0.9,
  });
  return {
    IPColocationFactorWeight: 0,
    topics: Object.fromEntries(topics.map((topic) => [topic, perTopic])),
  };
}

/**
 * Gossipsub's "fast message id": the same inputs as the StrictSign message
 * id (signer ‖ seqno), read from the raw RPC message so that duplicates are
 * dropped before signature verification. Only messages that then pass
 * verification enter the cache, so a forged copy cannot shadow the real one.
 */
function fastMessageId(msg: { from?: Uint8Array; seqno?: Uint8Array }): string {
  return `${Buffer.from(msg.from ?? []).toString('base64')}/${Buffer.from(msg.seqno ?? []).toString('base64')}`;
}

export async function createGossipNode(options: GossipNodeOptions): Promise<GossipNode> {
  const mesh = { ...DEFAULT_MESH_DEGREE, ...options.mesh };
  const transports: NonNullable<Libp2pOptions<GossipServices>['transports']> = options.customTransport
    ? [options.customTransport as TransportFactory]
    : options.transport === 'tcp'
      ? [tcp()]
      : [memory({ latency: options.memoryLatencyMs ?? 0 })];
  const init: Libp2pOptions<GossipServices> = {
    privateKey: options.privateKey,
    start: options.start ?? true,
    addresses: { listen: options.listen },
    transports,
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign',
        emitSelf: false,
        allowPublishToZeroTopicPeers: true,
        fallbackToFloodsub: false,
        // A self-published message goes to every subscribed peer, not only
        // the mesh: a write reaches direct peers in one hop even when the
        // mesh is still forming or thin.
        floodPublish: options.floodPublish ?? true,
        // Without it gossipsub verifies the signature of every copy of a
        // message before it notices the copy is a duplicate; with D mesh
        // peers each forwarding every heartbeat that is most of its CPU.
        fastMsgIdFn: fastMessageId,
        D: mesh.D,
        Dlo: mesh.Dlo,
        Dhi: mesh.Dhi,
        Dout: Math.min(2, Math.floor(mesh.D / 2), mesh.Dlo - 1),
        // Peers kept by score when pruning an overfull mesh; more than D would mean none is kept at random.
        Dscore: Math.min(4, mesh.D),
        heartbeatInterval: options.gossipHeartbeatMs ?? 1000,
        scoreParams: scoreParams(options.scoredTopics ?? []),
        maxInboundDataLength: options.maxRpcBytes ?? DEFAULT_MAX_RPC_BYTES,
      }) as (components: unknown) => GossipSub,
    },
  };
  const limits = options.connectionLimits;
  if (limits) {
    init.connectionManager = {
      ...(limits.inboundPerHostPerSecond !== undefined && {
        inboundConnectionThreshold: limits.inboundPerHostPerSecond,
      }),
      ...(limits.maxIncomingPending !== undefined && {
        maxIncomingPendingConnections: limits.maxIncomingPending,
      }),
      ...(limits.maxConnections !== undefined && { maxConnections: limits.maxConnections }),
    };
  }
  if (options.connectionGater) init.connectionGater = options.connectionGater;
  if (options.metrics) {
    if (claimLibp2pMetrics()) {
      init.metrics = prometheusMetrics({
        registry: options.metrics.registry,
        preserveExistingMetrics: true,
        // Process CPU/memory collectors are not libp2p's business (and would be per process, not per node).
        collectDefaultMetrics: false,
      });
    } else {
      options.metrics.onUnavailable?.();
    }
  }
  if (options.psk) init.connectionProtector = preSharedKey({ psk: options.psk });
  return createLibp2p(init);
}
