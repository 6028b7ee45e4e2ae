import { randomUUID } from 'node:crypto';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ClusterState } from '../state/cluster-state.js';
import type { SliceLimits } from '../state/diff-slices.js';
import { Listeners } from '../util/listeners.js';
import { composeGaters, PeerBlocklist } from './blocklist.js';
import { CatchUp } from './catch-up.js';
import { DEFAULT_SYNC_GRACE_MS, DigestWatch, type PeerDigestReport } from './digest-watch.js';
import { FailureDetector } from './failure-detector.js';
import type { HeartbeatLedger } from './heartbeat-ledger.js';
import { generateNodeKey } from './keys.js';
import { LivenessService } from './liveness.js';
import { LogExchange, type LogLimits, type LogReader } from './log-exchange.js';
import { MeshRepair } from './mesh-repair.js';
import {
  type ConnectionGater,
  type ConnectionLimits,
  type CustomTransport,
  createGossipNode,
  DEFAULT_MESH_DEGREE,
  type GossipNode,
  type MeshDegree,
  type PrivateKey,
  type TransportKind,
} from './node.js';
import { Redialer } from './redial.js';
import { Replicator, type SenderCheck } from './replicator.js';
import { type RevocationNoticeListener, RevocationNotices } from './revocation-notice.js';
import { StreamRepair } from './stream-repair.js';
import { AntiEntropy, type SyncResult } from './sync.js';
import { orgTopics } from './topics.js';

export { PeerBlocklist } from './blocklist.js';
export type { PeerDigestReport } from './digest-watch.js';
export type { Liveness, LivenessEvent, MemberView } from './failure-detector.js';
export { FailureDetector } from './failure-detector.js';
export type { Heartbeat } from './heartbeat.js';
export { generateNodeKey, nodeKeyFromBytes, nodeKeyToBytes, peerIdOf } from './keys.js';
export type { LogErrorCode, LogExchange, LogReader, LogRequest, LogStream } from './log-exchange.js';
export { LOGS_PROTOCOL, LogFetchError, MAX_LOG_LINES } from './log-exchange.js';
export { docTopic, livenessTopic, SYNC_PROTOCOL } from './topics.js';
export type {
  ConnectionGater,
  ConnectionLimits,
  CustomTransport,
  GossipNode,
  MeshDegree,
  PrivateKey,
  SenderCheck,
  SyncResult,
  TransportKind,
};

export interface GossipLayerOptions {
  org: string;
  /** This node's enrollment id (what envelopes and heartbeats carry as `from` / `nodeId`). */
  nodeId: string;
  state: ClusterState;
  logger: Logger;
  registry: Registry;
  /** libp2p identity; a fresh Ed25519 key when absent (ephemeral nodes). */
  privateKey?: PrivateKey;
  transport?: TransportKind;
  /** Replaces `transport` with a libp2p transport factory (the simulator's, sim/net). */
  customTransport?: CustomTransport;
  /** Defaults to `/ip4/127.0.0.1/tcp/0` (tcp) or `/memory/<random>` (memory). */
  listen?: string[];
  /** Seed peers, full multiaddrs with `/p2p/<peer id>`. */
  bootstrap?: string[];
  /** Enrollment gate (src/gossip/gater.ts); composed with the layer's blocklist. */
  connectionGater?: ConnectionGater;
  psk?: Uint8Array;
  memoryLatencyMs?: number;
  connectionLimits?: ConnectionLimits;
  mesh?: Partial<MeshDegree>;
  /** GossipNodeOptions.floodPublish (default true). */
  floodPublish?: boolean;
  gossipHeartbeatMs?: number;
  batchMs?: number;
  isSenderAllowed?: SenderCheck;
  heartbeatMs?: number;
  /** The first heartbeats at a shorter interval (LivenessOptions.warmup). */
  heartbeatWarmup?: { count: number; intervalMs: number };
  /**
   * At most this many heartbeats from all known members together reach a
   * node per heartbeatMs; a larger cluster spreads them out
   * (LivenessOptions.spread; SWIM liveness). Absent: every heartbeatMs.
   */
  heartbeatsPerInterval?: number;
  /**
   * Heartbeats carry `acks` and `dead` (one entry per node; default true).
   * Only the "acked-heartbeats" liveness source reads them; without them a
   * heartbeat's size no longer grows with the cluster.
   */
  heartbeatAcks?: boolean;
  suspectAfterMs?: number;
  deadAfterMs?: number;
  syncGraceMs?: number;
  syncIntervalMs?: number;
  syncTimeoutMs?: number;
  /** Where a large sync step 2 is cut into slices (src/state/diff-slices.ts); tests lower it. */
  syncSliceLimits?: SliceLimits;
  incarnation?: number;
  /** Local clock for liveness (injectable so the simulator can skew it). */
  now?: () => number;
  targetConnections?: number;
  redialIntervalMs?: number;
  redialBackoffMaxMs?: number;
  meshCheckIntervalMs?: number;
  /** How long a mesh may stay thin before it counts; default 1.5 gossipsub heartbeats. */
  meshGraceMs?: number;
  /** `/silo/logs/1` (log-exchange.ts): how this node reads its services' logs, and who may ask. */
  logs?: { read?: LogReader; isPeerAllowed?: (peerId: string) => boolean; limits?: Partial<LogLimits> };
  /** libp2p's own metrics into `registry` (the real agent; off where many nodes share a process). */
  libp2pMetrics?: boolean;
  /**
   * Where enrolled peers say they listen (their records' libp2p endpoints):
   * stored at start and on every change, so that any enrolled peer can be
   * dialed by peer id (a witness, a sync partner) even when no connected
   * peer ever relayed its heartbeat (docs/protocol.md, "Peer discovery").
   */
  addressBook?: PeerAddressBook;
}

/** Peers and the multiaddrs they published (without or with their own `/p2p/<id>`). */
export interface PeerAddressBook {
  entries(): readonly { peerId: string; addrs: readonly string[] }[];
  onChange(listener: () => void): () => void;
}

/**
 * The addresses of `peerId` among `addrs`, each ending in its `/p2p/<id>`:
 * an address of another peer is skipped (a heartbeat or a record cannot
 * point us at someone else), as are ones this libp2p cannot parse and ones
 * with nowhere to dial (empty, or only a peer id).
 */
function usableAddresses(peerId: string, addrs: readonly (string | Multiaddr)[]): Multiaddr[] {
  const usable: Multiaddr[] = [];
  for (const addr of addrs) {
    try {
      const ma = typeof addr === 'string' ? multiaddr(addr) : addr;
      if (ma.decapsulateCode(P2P_CODE).protoCodes().length === 0) continue;
      const owner = ma.getPeerId();
      if (owner === null) usable.push(ma.encapsulate(`/p2p/${peerId}`));
      else if (owner === peerId) usable.push(ma);
    } catch {
      // Not a multiaddr this version parses: skipped, like any unusable address.
    }
  }
  return usable;
}

/** Multiaddr protocol code of `/p2p/<peer id>`. */
const P2P_CODE = 421;

export interface ConnectionInfo {
  peerId: string;
  remoteAddr: string;
  direction: 'inbound' | 'outbound';
  status: string;
}

/**
 * Everything behind libp2p, composed: the node, the replicator (document ⇄
 * topic), anti-entropy sync, liveness with its failure detector, redial and
 * mesh repair. The rest of silo talks to gossip only through this class.
 */
export class GossipLayer {
  readonly detector: FailureDetector;
  readonly blocklist: PeerBlocklist;
  readonly node: GossipNode;
  /** `/silo/logs/1`: serves this node's service logs, reads other nodes'. */
  readonly logs: LogExchange;
  private readonly logger: Logger;
  private readonly addressBook: PeerAddressBook | undefined;
  /** Per peer, the book's addresses as last learned (see learnFromBook). */
  private readonly bookSeen = new Map<string, string>();
  private readonly revocationNotices: RevocationNotices;
  private readonly replicator: Replicator;
  private readonly sync: AntiEntropy;
  private readonly liveness: LivenessService;
  private readonly digestWatch: DigestWatch;
  private readonly digestListeners = new Listeners<[PeerDigestReport]>((err) =>
    this.logger.warn({ err: (err as Error).message }, 'a peer digest listener threw'),
  );
  private readonly redial: Redialer;
  private readonly meshRepair: MeshRepair;
  private readonly streamRepair: StreamRepair;
  private started = false;
  /** Which peers count as returning, and the immediate sync with them (catch-up.ts). */
  private readonly catchUp: CatchUp;
  private offReturned: (() => void)[] = [];
  private readonly state: ClusterState;
  private readonly now: () => number;

  private constructor(node: GossipNode, blocklist: PeerBlocklist, options: GossipLayerOptions) {
    this.node = node;
    this.blocklist = blocklist;
    this.state = options.state;
    this.now = options.now ?? Date.now;
    this.logger = options.logger.child({ component: 'gossip', peer: node.peerId.toString() });
    this.addressBook = options.addressBook;
    const common = { node, logger: this.logger, registry: options.registry };
    this.logs = new LogExchange({ ...common, ...options.logs });
    this.revocationNotices = new RevocationNotices(common);
    this.detector = new FailureDetector({
      now: options.now,
      suspectAfterMs: options.suspectAfterMs,
      deadAfterMs: options.deadAfterMs,
    });
    this.replicator = new Replicator({
      ...common,
      state: options.state,
      org: options.org,
      nodeId: options.nodeId,
      batchMs: options.batchMs,
      isSenderAllowed: options.isSenderAllowed,
      // A later epoch heard by gossip: fetch it now rather than at the next digest round.
      onLaterEpoch: (peer) => void this.sync.syncWith(peer),
    });
    this.sync = new AntiEntropy({
      ...common,
      state: options.state,
      intervalMs: options.syncIntervalMs,
      timeoutMs: options.syncTimeoutMs,
      sliceLimits: options.syncSliceLimits,
      isReturningPeer: (peerId) => this.catchUp.isReturning(peerId),
    });
    this.liveness = new LivenessService({
      ...common,
      state: options.state,
      org: options.org,
      nodeId: options.nodeId,
      detector: this.detector,
      now: options.now,
      heartbeatMs: options.heartbeatMs,
      warmup: options.heartbeatWarmup,
      ...(options.heartbeatsPerInterval !== undefined && {
        // Every node we know of, ourselves included.
        spread: {
          members: () => this.detector.view().length + 1,
          perInterval: options.heartbeatsPerInterval,
        },
      }),
      acks: options.heartbeatAcks,
      incarnation: options.incarnation,
      isSenderAllowed: options.isSenderAllowed,
      onPeerAddrs: (peerId, addrs) => this.learnAddresses(peerId, addrs),
    });
    this.digestWatch = new DigestWatch({
      state: options.state,
      logger: this.logger,
      registry: options.registry,
      graceMs: options.syncGraceMs ?? DEFAULT_SYNC_GRACE_MS,
      now: this.now,
      requestSync: (peerId) => void this.sync.syncWith(peerId),
    });
    this.redial = new Redialer({
      ...common,
      bootstrap: options.bootstrap,
      targetConnections: options.targetConnections,
      checkIntervalMs: options.redialIntervalMs,
      backoffMaxMs: options.redialBackoffMaxMs,
      isBlocked: (peerId) => blocklist.has(peerId),
      isHeard: (peerId) => this.catchUp.isHeard(peerId),
    });
    const topics = orgTopics(options.org);
    this.meshRepair = new MeshRepair({
      ...common,
      topics: { ...topics.docs, liveness: topics.liveness },
      minMeshPeers: options.mesh?.Dlo ?? DEFAULT_MESH_DEGREE.Dlo,
      requestSync: (peerId) => void this.sync.syncWith(peerId),
      checkIntervalMs: options.meshCheckIntervalMs,
      graceMs: options.meshGraceMs ?? Math.round(1.5 * (options.gossipHeartbeatMs ?? 1000)),
    });
    this.streamRepair = new StreamRepair({
      ...common,
      // Agents we have heard (a heartbeat proved they run pubsub with us).
      members: () =>
        new Set(
          this.detector
            .view()
            .map((m) => this.peerIdOfNode(m.nodeId))
            .filter((id) => id !== undefined),
        ),
      checkIntervalMs: options.meshCheckIntervalMs,
      graceMs: Math.max(1000, 3 * (options.meshCheckIntervalMs ?? 1000)),
      now: this.now,
    });
    this.catchUp = new CatchUp({
      detector: this.detector,
      peerIdOf: (nodeId) => this.liveness.peerIdOf(nodeId),
      digestWatch: this.digestWatch,
      syncWith: (peerId) => this.sync.syncWith(peerId),
      logger: this.logger,
      now: this.now,
    });
  }

  /** Builds the layer with its libp2p node (not yet started). */
  static async create(options: GossipLayerOptions): Promise<GossipLayer> {
    const transport = options.transport ?? 'tcp';
    const blocklist = new PeerBlocklist();
    const gater = options.connectionGater
      ? composeGaters(blocklist.gater(), options.connectionGater)
      : blocklist.gater();
    const privateKey = options.privateKey ?? (await generateNodeKey());
    const listen =
      options.listen ??
      (transport === 'tcp'
        ? ['/ip4/127.0.0.1/tcp/0']
        : [`/memory/${options.nodeId}-${randomUUID().slice(0, 8)}`]);
    const node = await createGossipNode({
      transport,
      customTransport: options.customTransport,
      listen,
      privateKey,
      connectionGater: gater,
      psk: options.psk,
      memoryLatencyMs: options.memoryLatencyMs,
      connectionLimits: options.connectionLimits,
      mesh: options.mesh,
      ...(options.floodPublish !== undefined && { floodPublish: options.floodPublish }),
      gossipHeartbeatMs: options.gossipHeartbeatMs,
      scoredTopics: orgTopics(options.org).all,
      start: false,
      ...(options.libp2pMetrics && {
        metrics: {
          registry: options.registry,
          onUnavailable: () =>
            options.logger.warn('libp2p metrics are already taken by another node in this process'),
        },
      }),
    });
    return new GossipLayer(node, blocklist, options);
  }

  get peerId(): string {
    return this.node.peerId.toString();
  }

  get incarnation(): number {
    return this.liveness.incarnation;
  }

  /** Acks and dead declarations of the heartbeats, for the acknowledged-heartbeat lease (src/reconciler/heartbeat-lease.ts). */
  get heartbeatLedger(): HeartbeatLedger {
    return this.liveness.ledger;
  }

  /**
   * Remembers where `peerId` listens, for redial and for every dial by peer
   * id (a sync, a lease batch), and dials it now if we are below target.
   * Returns true when an address was new.
   */
  learnAddresses(peerId: string, addrs: readonly (string | Multiaddr)[]): boolean {
    const usable = usableAddresses(peerId, addrs);
    let learned = false;
    for (const ma of usable) learned = this.redial.addAddress(ma) || learned;
    if (!learned) return false;
    this.storeAddresses(peerId, usable);
    // A peer (or address) heard of for the first time is dialed now if we are below target.
    this.redial.check();
    return true;
  }

  /**
   * The book's addresses go into the peer store only, not to redial: what
   * they are for is a dial by peer id to a node no connected peer told us
   * about (a lease batch to a witness, a sync). Handing them to redial too
   * made every node dial its whole book at start, together with every other
   * node (a 20-agent simulator start took 15-19 s instead of 14 s); once
   * such a dial connects, identify and heartbeats teach redial as before.
   */
  private learnFromBook(book: PeerAddressBook): void {
    const self = this.peerId;
    for (const { peerId, addrs } of book.entries()) {
      if (peerId === self || addrs.length === 0) continue;
      // Every change lists the whole book; only a peer whose addresses changed is stored again.
      const seen = addrs.join(' ');
      if (this.bookSeen.get(peerId) === seen) continue;
      this.bookSeen.set(peerId, seen);
      const usable = usableAddresses(peerId, addrs);
      if (usable.length > 0) this.storeAddresses(peerId, usable);
    }
  }

  private storeAddresses(peerId: string, addrs: readonly Multiaddr[]): void {
    this.node.peerStore
      .merge(peerIdFromString(peerId), { multiaddrs: addrs.map((a) => a.decapsulateCode(P2P_CODE)) })
      .catch((err: unknown) => this.logger.debug({ err, peer: peerId }, 'could not store peer addresses'));
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    // First: a peer unheard for dead_after from now counts as returning, for sessions that arrive at once.
    this.catchUp.start();
    // The sync handler and connect listeners go in before the node listens,
    // so the first inbound connection already finds them.
    await this.sync.start();
    await this.logs.start();
    await this.revocationNotices.start();
    await this.node.start();
    this.replicator.start();
    this.liveness.start();
    this.meshRepair.start();
    this.streamRepair.start();
    this.redial.start();
    const book = this.addressBook;
    if (book) this.learnFromBook(book);
    this.offReturned = [
      ...(book ? [book.onChange(() => this.learnFromBook(book))] : []),
      // Called after the detector saw the same heartbeat, so a return is caught on its first heartbeat.
      this.liveness.onHeartbeat((heartbeat, signer) =>
        this.observePeerDigests({
          nodeId: heartbeat.nodeId,
          peerId: signer,
          digests: heartbeat.digests,
          via: 'heartbeat',
        }),
      ),
    ];
    this.logger.info({ addrs: this.multiaddrs() }, 'gossip layer started');
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    for (const off of this.offReturned) off();
    this.offReturned = [];
    this.catchUp.stop();
    this.redial.stop();
    this.streamRepair.stop();
    this.meshRepair.stop();
    this.liveness.stop();
    await this.replicator.stop();
    await this.sync.stop();
    await this.logs.stop();
    await this.revocationNotices.stop();
    // gossipsub 14.1.2's stop() forgets its pending heartbeat timer, which
    // then keeps the process alive for up to one heartbeat interval.
    const status = (
      this.node.services.pubsub as unknown as { status?: { heartbeatTimeout?: NodeJS.Timeout } }
    ).status;
    const pendingHeartbeat = status?.heartbeatTimeout;
    await this.node.stop();
    if (pendingHeartbeat) clearTimeout(pendingHeartbeat);
  }

  /** Connected peer ids. */
  peers(): string[] {
    return this.node.getPeers().map((p) => p.toString());
  }

  connectionInfo(): ConnectionInfo[] {
    return this.node.getConnections().map((c) => ({
      peerId: c.remotePeer.toString(),
      remoteAddr: c.remoteAddr.toString(),
      direction: c.direction,
      status: c.status,
    }));
  }

  /** Calls `listener` whenever a libp2p connection opens or closes; returns the unsubscribe. */
  onConnectionsChange(listener: () => void): () => void {
    const handler = (): void => listener();
    this.node.addEventListener('connection:open', handler);
    this.node.addEventListener('connection:close', handler);
    return () => {
      this.node.removeEventListener('connection:open', handler);
      this.node.removeEventListener('connection:close', handler);
    };
  }

  /** Our listen addresses, each ending in `/p2p/<peer id>`. */
  multiaddrs(): string[] {
    return this.node.getMultiaddrs().map((a) => a.toString());
  }

  /** Dials `addr` (a multiaddr with `/p2p/<id>`), remembers it for redial, returns the peer id. */
  async dial(addr: string): Promise<string> {
    const ma = multiaddr(addr);
    this.redial.addAddress(ma);
    const connection = await this.node.dial(ma);
    return connection.remotePeer.toString();
  }

  async closeConnectionsTo(peerId: string): Promise<void> {
    await this.node.hangUp(peerIdFromString(peerId));
  }

  /**
   * Hands a peer that lost its enrollment the CA-signed `revocation` over an
   * open connection (`/silo/revoked/1`, at most its timeout), then closes
   * every connection to it. Never rejects.
   */
  async notifyRevokedAndClose(peerId: string, revocation: unknown): Promise<void> {
    await this.revocationNotices.send(peerId, revocation);
    await this.closeConnectionsTo(peerId);
  }

  /** Revocation notices other nodes hand us (the record unchecked: the listener verifies it). */
  onRevocationNotice(listener: RevocationNoticeListener): () => void {
    return this.revocationNotices.onNotice(listener);
  }

  /** Partition: refuse `peerId` from now on and drop the connections we have. */
  async block(peerId: string): Promise<void> {
    this.blocklist.add(peerId);
    await this.closeConnectionsTo(peerId);
  }

  /** Heal: allow `peerId` again and let redial reconnect without waiting out its backoff. */
  unblock(peerId: string): void {
    this.blocklist.delete(peerId);
    this.redial.resetBackoff(peerId);
    this.redial.check();
  }

  syncWith(peerId: string): Promise<SyncResult> {
    return this.sync.syncWith(peerId);
  }

  /**
   * A peer's digests as a message other than a heartbeat reported them (a
   * SWIM ping or ack, src/gossip/swim-transport.ts): they count for
   * anti-entropy and catch-up exactly as a heartbeat's do.
   */
  observePeerDigests(report: PeerDigestReport): void {
    if (!this.started) return;
    this.digestWatch.observe(report);
    this.catchUp.observe(report);
    this.digestListeners.emit(report);
  }

  /** Every peer digest report (heartbeats and probes), as it arrives. */
  onPeerDigests(listener: (report: PeerDigestReport) => void): () => void {
    return this.digestListeners.add(listener);
  }

  /** How long this node now waits between regular heartbeats, ms (grows with the cluster when spread). */
  heartbeatIntervalMs(): number {
    return this.liveness.intervalMs();
  }

  /** The libp2p peer id that signs `nodeId`'s heartbeats, once one was heard. */
  peerIdOfNode(nodeId: string): string | undefined {
    return this.liveness.peerIdOf(nodeId);
  }

  /** Publishes until every local update queued so far has been handed to gossipsub. */
  flush(): Promise<void> {
    return this.replicator.drain();
  }

  /** Topics whose mesh is thin beyond the grace right now. */
  thinTopics(): string[] {
    return this.meshRepair.thinTopics();
  }

  /** Peers in our mesh for `topic`. */
  meshPeers(topic: string): string[] {
    return this.node.services.pubsub.getMeshPeers(topic);
  }
}
