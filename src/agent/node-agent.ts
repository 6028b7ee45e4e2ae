import { join } from 'node:path';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { enrollmentGater } from '../gossip/gater.js';
import { GossipLayer, type GossipLayerOptions, type MemberView, peerIdOf } from '../gossip/index.js';
import { SwimDetectorFeed } from '../gossip/swim-detector-feed.js';
import { SwimMembership } from '../gossip/swim-transport.js';
import type { EnrollmentBundle } from '../identity/bundle.js';
import { checkRevocation } from '../identity/ca.js';
import { signatureHooks } from '../identity/enrollment-verifier.js';
import { isHostInCidr, parseIpv4, parseOverlayCidr } from '../identity/ipv4-cidr.js';
import { isClient, ownershipMembers } from '../identity/role.js';
import type { SwimParams } from '../membership/swim-core.js';
import { ServiceDnsServer } from '../overlay/dns-server.js';
import type { OverlayManager } from '../overlay/overlay-manager.js';
import { serviceZone } from '../overlay/service-dns.js';
import { Reconciler, type ReconcilerOptions } from '../reconciler/reconciler.js';
import { ClusterState } from '../state/cluster-state.js';
import { EnrollmentView } from '../state/enrollment-view.js';
import { EpochStarter } from '../state/epoch-starter.js';
import { type Durability, LmdbUpdateLog } from '../state/lmdb-log.js';
import { DOC_NAMES, type DocName } from '../state/names.js';
import { ObservedView } from '../state/observed-view.js';
import type { InvalidRecordHandler } from '../state/record-check.js';
import type { Revocation, SignedEnrollment } from '../state/schemas.js';
import { defaultServiceRange, type ServiceRange, serviceRangeFromCidr } from '../state/service-addresses.js';
import { SpecRevisionGuard } from '../state/spec-revision-guard.js';
import { WorkloadsView } from '../state/workloads-view.js';
import { Lifecycle, type LifecyclePart, type Startable } from '../util/lifecycle.js';
import { readServiceLog } from './log-files.js';
import { OverlaySync } from './overlay-sync.js';
import { PeerRecord } from './peer-record.js';
import { ServiceNetwork } from './service-network.js';
import { AgentSetupError } from './setup-error.js';
import { EnrollmentTrust, type LostPeer } from './trust.js';

/** Gossip settings the agent passes through (identity and state are the agent's own). */
export type AgentGossipOptions = Omit<GossipLayerOptions, 'org' | 'nodeId' | 'state' | 'logger' | 'registry'>;

export interface NodeAgentOptions {
  org: string;
  nodeId: string;
  /** Directory of the durable store. Without it the agent keeps its state in memory only. */
  dataDir?: string;
  durability?: Durability;
  compactEvery?: number;
  /** How often the epoch starter looks at the documents, ms (EpochStarter; 0: never). */
  epochCheckMs?: number;
  maxUpdateBytes?: number;
  /** See ClusterStateOptions.maxSyncUpdateBytes. */
  maxSyncUpdateBytes?: number;
  gossip?: AgentGossipOptions;
  logger: Logger;
  /** Metrics of this agent. A fresh registry when absent: agents in one process never share one. */
  registry?: Registry;
  onInvalidRecord?: InvalidRecordHandler;
  /**
   * The node's enrollment bundle. With it, only active enrolled nodes may
   * connect or publish (docs/security.md); without it (tests of the
   * replication layer alone, the simulator) every peer is admitted.
   */
  trust?: { bundle: EnrollmentBundle };
  /**
   * The WireGuard overlay (overlay.mode = "wireguard"); needs `trust`. Brought
   * up before gossip starts (libp2p listens on the overlay address) and kept
   * equal to the active enrolled nodes.
   */
  overlay?: OverlayManager;
  /**
   * The service DNS server (docs/services.md, "Service addresses"): with the
   * overlay, `<workload>.<org>.silo` is answered on the node's overlay IP,
   * this UDP port (default 53); false: none.
   */
  serviceDns?: { port: number } | false;
  /**
   * Run workloads (the reconcile loop, docs/placement.md); needs `dataDir`
   * and `trust` (images must carry the org CA's signature). Started after
   * gossip, stopped before it (services handed over per `onStop`).
   */
  reconciler?: ReconcilerOptions;
  /**
   * SWIM + Lifeguard membership over `/silo/swim/1` (docs/membership.md),
   * run beside the heartbeat detector: `silo nodes` and the `silo_swim_*`
   * metrics show what it sees; the reconciler reads it with leaseKind
   * "swim". Off when absent. `vouch`: SWIM vouches for the members it holds
   * alive in the heartbeat failure detector (SwimDetectorFeed), for when
   * heartbeats go out rarely (services.lease = "swim").
   */
  membership?: { swim: boolean; params?: Partial<SwimParams>; vouch?: boolean };
}

/** The collaborators one agent is built from (tests and the simulator may build them themselves). */
export interface NodeAgentComponents {
  org: string;
  /** The DNS zone of service names, `<org>.<suffix>` (docs/services.md); default `<org>.silo`. */
  serviceZone?: string;
  nodeId: string;
  logger: Logger;
  registry: Registry;
  state: ClusterState;
  enrollment: EnrollmentView;
  workloads: WorkloadsView;
  /** Lifts a workload's revision after concurrent writes (see SpecRevisionGuard). */
  specGuard: SpecRevisionGuard;
  /** Starts an epoch of a document whose history outweighs its content (docs/epochs.md). */
  epochStarter: EpochStarter;
  /** Service address claims and routes (absent without trust, and on clients). */
  serviceNetwork?: ServiceNetwork;
  serviceDns?: ServiceDnsServer;
  observed: ObservedView;
  gossip: GossipLayer;
  trust?: EnrollmentTrust;
  overlay?: OverlaySync;
  reconciler?: Reconciler;
  swim?: SwimMembership;
  /** Keeps the heartbeat detector fresh from SWIM's view (membership.vouch). */
  swimFeed?: SwimDetectorFeed;
}

export interface AgentStatus {
  org: string;
  nodeId: string;
  peerId: string;
  incarnation: number;
  startedAt: number | null;
  addrs: string[];
  peers: number;
  digests: Record<DocName, string>;
  members: MemberView[];
  /** Set when this node's own enrollment is revoked (docs/security.md, "Revocation"). */
  revoked: { revokedAt: number; reason: string } | null;
}

/**
 * The composition root of one node: state (Yjs documents on an lmdb log),
 * typed views, and the gossip layer. Everything is handed in through
 * `components`, so the simulator and tests can run many agents in one
 * process and swap a transport; `NodeAgent.create` builds the usual set.
 */
export class NodeAgent {
  readonly org: string;
  /** Service names are `<workload>.<serviceZone>` (the org's DNS suffix, from the bundle). */
  readonly serviceZone: string;
  readonly nodeId: string;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly state: ClusterState;
  readonly enrollment: EnrollmentView;
  readonly workloads: WorkloadsView;
  readonly observed: ObservedView;
  readonly gossip: GossipLayer;
  readonly trust: EnrollmentTrust | undefined;
  readonly reconciler: Reconciler | undefined;
  /** SWIM membership, when enabled (`membership.swim`). */
  readonly swim: SwimMembership | undefined;
  private readonly overlay: OverlaySync | undefined;
  private readonly swimFeed: SwimDetectorFeed | undefined;
  private readonly specGuard: SpecRevisionGuard;
  private readonly epochStarter: EpochStarter;
  readonly serviceNetwork: ServiceNetwork | undefined;
  private readonly serviceDns: ServiceDnsServer | undefined;
  /** Records this node's connections in its observed report (agents that run a reconciler write reports). */
  private readonly peerRecord: PeerRecord | undefined;
  private startedAt: number | null = null;
  /** The started parts, stopped in reverse (util/lifecycle.ts); null while stopped. */
  private lifecycle: Lifecycle | null = null;
  /** The "this node was revoked" error was logged (once per agent life). */
  private revokedNoticed = false;

  constructor(components: NodeAgentComponents) {
    this.org = components.org;
    this.serviceZone = components.serviceZone ?? serviceZone(components.org);
    this.nodeId = components.nodeId;
    this.logger = components.logger;
    this.registry = components.registry;
    this.state = components.state;
    this.enrollment = components.enrollment;
    this.workloads = components.workloads;
    this.specGuard = components.specGuard;
    this.epochStarter = components.epochStarter;
    this.serviceNetwork = components.serviceNetwork;
    this.serviceDns = components.serviceDns;
    this.observed = components.observed;
    this.gossip = components.gossip;
    this.trust = components.trust;
    this.overlay = components.overlay;
    this.reconciler = components.reconciler;
    this.swim = components.swim;
    this.swimFeed = components.swimFeed;
    this.peerRecord = components.reconciler
      ? new PeerRecord({
          nodeId: this.nodeId,
          observed: this.observed,
          logger: this.logger.child({ component: 'peer-record' }),
          connectedNodes: () => this.connectedNodeIds(),
          onConnectionsChange: (listener) => this.gossip.onConnectionsChange(listener),
        })
      : undefined;
    this.trust?.onRevoked((lost) => this.dropLostPeers(lost));
    this.trust?.onActiveChange(() => this.checkSelfRevoked());
    this.gossip.onRevocationNotice((record, fromPeer) => this.recordRevocationNotice(record, fromPeer));
  }

  /**
   * Peers that lost their enrollment: each is handed the revocation that
   * covers it, if there is one (so it learns why nobody answers any more,
   * docs/security.md "Revocation"), then its connections are closed.
   */
  private dropLostPeers(lost: LostPeer[]): void {
    for (const peer of lost) {
      if (peer.peerId === this.gossip.peerId) continue;
      const revocation = this.enrollment.revocation(peer.nodeId);
      const done = revocation
        ? this.gossip.notifyRevokedAndClose(peer.peerId, revocation)
        : this.gossip.closeConnectionsTo(peer.peerId);
      done.catch((err: unknown) => {
        this.logger.warn({ err, peerId: peer.peerId }, 'closing connections of a revoked peer failed');
      });
    }
  }

  /**
   * A revocation a member handed us: recorded if the CA signed it and it is
   * newer than the one we hold (the document keeps the latest per node, as
   * POST /v1/revocations does). Whoever sent it, the signature decides.
   */
  private recordRevocationNotice(record: unknown, fromPeer: string): void {
    if (!this.trust) return;
    const checked = checkRevocation(this.trust.caPublicKey, record);
    if (!checked.ok) {
      this.logger.warn(
        { fromPeer, reason: checked.failure.reason },
        `ignored a revocation notice: ${checked.failure.message}`,
      );
      return;
    }
    const before = this.enrollment.revocation(checked.value.nodeId);
    if (before && before.revokedAt >= checked.value.revokedAt) return;
    this.enrollment.revoke(checked.value);
  }

  /** Said once per agent life, when this node learns it was revoked (at start, from its store, too). */
  private checkSelfRevoked(): void {
    if (this.revokedNoticed || !this.trust) return;
    const revocation = this.trust.selfRevocation();
    if (revocation === null) return;
    this.revokedNoticed = true;
    this.logger.error(
      { revokedAt: new Date(revocation.revokedAt).toISOString(), reason: revocation.reason },
      `this node was revoked by the org CA: it no longer belongs to org "${this.org}". No member talks to it, ` +
        'it refuses writes and runs no workloads. To rejoin, make a new key (silo node init) and have it signed (silo ca sign).',
    );
    for (const peerId of this.gossip.peers()) {
      this.gossip.closeConnectionsTo(peerId).catch(() => undefined);
    }
  }

  /** The revocation that covers this node itself, or null (always null without enrollment trust). */
  revocationOfSelf(): Revocation | null {
    return this.trust?.selfRevocation() ?? null;
  }

  static async create(options: NodeAgentOptions): Promise<NodeAgent> {
    const registry = options.registry ?? new Registry();
    const logger = options.logger.child({ node: options.nodeId });
    const log = options.dataDir
      ? LmdbUpdateLog.open({
          path: join(options.dataDir, 'state'),
          logger: logger.child({ component: 'store' }),
          registry,
          durability: options.durability,
        })
      : undefined;
    const state = new ClusterState({
      logger: logger.child({ component: 'state' }),
      nodeId: options.nodeId,
      log,
      compactEvery: options.compactEvery,
      maxUpdateBytes: options.maxUpdateBytes,
      maxSyncUpdateBytes: options.maxSyncUpdateBytes,
    });
    try {
      const viewOptions = {
        state,
        logger: logger.child({ component: 'views' }),
        registry,
        onInvalid: options.onInvalidRecord,
      };
      const bundle = options.trust?.bundle;
      if (bundle) checkBundleMatches(bundle, options);
      if (bundle && isClient(bundle.record)) checkClientOptions(options);
      const enrollment = new EnrollmentView({
        ...viewOptions,
        ...(bundle ? signatureHooks(bundle.caPublicKey) : {}),
      });
      const trust = bundle ? new EnrollmentTrust({ bundle, enrollment, logger, registry }) : undefined;
      if (options.overlay && !trust)
        throw new Error('the WireGuard overlay needs an enrollment bundle (trust)');
      const workloads = new WorkloadsView({
        ...viewOptions,
        // Service addresses come from the org's service range, by default the upper half of its CIDR
        // (docs/services.md, "Service addresses"); the range is the same on every node (from the bundle).
        ...(bundle ? { serviceRange: bundleServiceRange(bundle) } : {}),
      });
      const observed = new ObservedView({ ...viewOptions, nodeId: options.nodeId });
      const serviceNetwork =
        trust && bundle && !isClient(bundle.record)
          ? new ServiceNetwork({
              selfId: options.nodeId,
              workloads,
              observed,
              members: () => new Set(trust.active().members.map((r) => r.nodeId)),
              logger,
            })
          : undefined;
      const overlay =
        options.overlay && trust
          ? new OverlaySync({
              overlay: options.overlay,
              trust,
              logger,
              ...(serviceNetwork ? { serviceRoutes: serviceNetwork } : {}),
            })
          : undefined;
      const gossip = await GossipLayer.create({
        ...options.gossip,
        org: options.org,
        nodeId: options.nodeId,
        state,
        logger,
        registry,
        ...(trust
          ? {
              connectionGater: enrollmentGater({
                isPeerAllowed: trust.isPeerAllowed,
                ...(options.overlay ? { isRemoteAddrAllowed: overlayAddressCheck(trust.overlayCidr) } : {}),
                onDenied: (_peerIdOrAddr, stage) => trust.countDenied(stage),
              }),
              isSenderAllowed: trust.isSenderAllowed,
            }
          : {}),
        // `/silo/logs/1`: this node's service logs, to active enrolled nodes only.
        logs: {
          ...(options.dataDir ? { read: logReader(options.dataDir) } : {}),
          ...(trust ? { isPeerAllowed: (peerId: string) => trust.active().byPeerId.has(peerId) } : {}),
          ...options.gossip?.logs,
        },
      });
      // Without trust (simulator, replication tests) records are not
      // signature-checked: every listed, unrevoked node counts.
      // Clients are admitted by the gater above but count for nothing that
      // decides ownership (src/identity/role.ts): placement, the lease
      // sources, SWIM and the heartbeat evidence all read `memberNodes`.
      const memberNodes = () =>
        trust
          ? trust.active().members
          : ownershipMembers(enrollment.list().filter((r) => !enrollment.isRevoked(r.nodeId)));
      let listedClients: { from: readonly SignedEnrollment[]; ids: ReadonlySet<string> } | null = null;
      const clientIds = (): ReadonlySet<string> => {
        if (trust) return trust.active().clientIds;
        const listed = enrollment.list();
        if (listedClients?.from !== listed)
          listedClients = { from: listed, ids: new Set(listed.filter(isClient).map((r) => r.nodeId)) };
        return listedClients.ids;
      };
      gossip.heartbeatLedger.setNonMembers((nodeId) => clientIds().has(nodeId));
      const swim = options.membership?.swim
        ? new SwimMembership({
            node: gossip.node,
            selfId: options.nodeId,
            members: () => memberNodes().map((r) => ({ nodeId: r.nodeId, peerId: r.peerId })),
            logger,
            registry,
            // Every probe is also an anti-entropy check (docs/protocol.md, "Anti-entropy").
            digests: () => state.digestsAll(),
            onPeerDigests: (report) => gossip.observePeerDigests(report),
            ...(options.membership.params ? { params: options.membership.params } : {}),
          })
        : undefined;
      if (swim) {
        // Enrolled and revoked nodes join and leave SWIM's member list as they do the active set.
        if (trust) trust.onActiveChange(() => swim.refreshMembers());
        else enrollment.onChange(() => swim.refreshMembers());
      }
      const swimFeed =
        swim && options.membership?.vouch
          ? new SwimDetectorFeed({
              swim,
              detector: gossip.detector,
              intervalMs: Math.max(100, Math.floor(gossip.detector.suspectAfterMs / 3)),
            })
          : undefined;
      const specGuard = new SpecRevisionGuard({ state, workloads, logger });
      const epochStarter = new EpochStarter({
        state,
        logger,
        registry,
        ...(options.epochCheckMs !== undefined ? { intervalMs: options.epochCheckMs } : {}),
        // The lowest node id among the members this node sees alive, itself included.
        isStarter: () => gossip.detector.nodesIn('alive').every((id) => id >= options.nodeId),
      });
      let reconciler: Reconciler | undefined;
      if (options.reconciler) {
        if (!options.dataDir) throw new Error('the reconciler needs a data directory (dataDir)');
        reconciler = new Reconciler(
          {
            nodeId: options.nodeId,
            dataDir: options.dataDir,
            logger,
            registry,
            gossip,
            workloads,
            observed,
            enrollment,
            activeNodes: memberNodes,
            isClient: (nodeId: string) => clientIds().has(nodeId),
            ...(trust
              ? { onActiveNodesChange: (listener: () => void) => trust.onActiveChange(listener) }
              : {}),
            ...(bundle ? { caPublicKey: bundle.caPublicKey } : {}),
            ...(options.gossip?.now ? { now: options.gossip.now } : {}),
            ...(options.durability ? { durability: options.durability } : {}),
            ...(swim ? { swim } : {}),
            // Service namespaces only with the overlay: without it nothing routes a service address.
            ...(serviceNetwork && options.overlay ? { serviceAddresses: true } : {}),
            ...(serviceNetwork && options.overlay && bundle
              ? {
                  serviceFilter: {
                    allowedSources: bundle.overlayCidr,
                    ...(options.overlay ? { overlayInterface: options.overlay.interfaceName } : {}),
                  },
                }
              : {}),
            ...(options.overlay && serviceNetwork && bundle && options.serviceDns !== false
              ? {
                  serviceDns: {
                    nameserver: bundle.record.overlayIp,
                    zone: serviceZone(options.org, bundle.dnsSuffix),
                  },
                }
              : {}),
          },
          options.reconciler,
        );
      }
      return new NodeAgent({
        org: options.org,
        ...(bundle ? { serviceZone: serviceZone(options.org, bundle.dnsSuffix) } : {}),
        nodeId: options.nodeId,
        logger,
        registry,
        state,
        enrollment,
        workloads,
        specGuard,
        epochStarter,
        ...(serviceNetwork ? { serviceNetwork } : {}),
        ...(overlay && serviceNetwork && bundle && options.serviceDns !== false
          ? {
              serviceDns: new ServiceDnsServer({
                host: bundle.record.overlayIp,
                port: options.serviceDns?.port ?? 53,
                zone: serviceZone(options.org, bundle.dnsSuffix),
                lookup: (name) => workloads.serviceAddresses().get(name),
                logger,
              }),
            }
          : {}),
        observed,
        gossip,
        trust,
        overlay,
        reconciler,
        ...(swim ? { swim } : {}),
        ...(swimFeed ? { swimFeed } : {}),
      });
    } catch (err) {
      await state.close();
      throw err;
    }
  }

  async start(): Promise<void> {
    if (this.startedAt !== null) return;
    const began = performance.now();
    const parts: LifecyclePart[] = [];
    const add = (name: string, part: Startable | null | undefined, optional = false): void => {
      if (part) parts.push({ name, part, optional });
    };
    // Our own record goes into the document before the first connection, so
    // every peer we sync with learns it from us too.
    add('trust', this.trust);
    add('spec revision guard', this.specGuard);
    add('epoch starter', this.epochStarter);
    add('service network', this.serviceNetwork);
    add('overlay', this.overlay);
    // Not fatal: the cluster works without names (the port may be taken by another resolver).
    add('service DNS', this.serviceDns, true);
    add('gossip', this.gossip);
    add('SWIM', this.swim);
    add('SWIM detector feed', this.swimFeed);
    // Last up, first down: released statuses are published and snapshots served while peers can still hear us.
    add('reconciler', this.reconciler);
    // Records this node's connections in its observed report (the dashboard's graph) once all is up.
    add('peer record', this.peerRecord);
    // A failed start (e.g. the gossip port taken) stops what started: otherwise the WireGuard interface
    // stays up and wireguard-go keeps the `silo agent` process from ever exiting.
    const lifecycle = new Lifecycle(parts, (name, phase, err) =>
      this.logger.error({ err, part: name }, `${name} failed to ${phase}`),
    );
    await lifecycle.start();
    this.lifecycle = lifecycle;
    this.startedAt = Date.now();
    this.logger.info(
      {
        peerId: this.gossip.peerId,
        incarnation: this.gossip.incarnation,
        ms: Math.round(performance.now() - began),
      },
      'agent started',
    );
  }

  /** Stops every part in reverse start order, then closes the store (every acknowledged write is already on disk). */
  async stop(): Promise<void> {
    if (this.startedAt !== null) {
      this.startedAt = null;
      await this.lifecycle?.stop();
      this.lifecycle = null;
    }
    await this.state.close();
    this.logger.info('agent stopped');
  }

  status(): AgentStatus {
    return {
      org: this.org,
      nodeId: this.nodeId,
      peerId: this.gossip.peerId,
      incarnation: this.gossip.incarnation,
      startedAt: this.startedAt,
      addrs: this.gossip.multiaddrs(),
      peers: this.gossip.peers().length,
      digests: this.state.digestsAll(),
      members: this.gossip.detector.view(),
      revoked: revokedOf(this.revocationOfSelf()),
    };
  }

  /** Enrolled nodes (by id) behind this agent's open connections, sorted. */
  connectedNodeIds(): string[] {
    const byPeer = new Map(this.enrollment.list().map((record) => [record.peerId, record.nodeId]));
    const ids = new Set<string>();
    for (const c of this.gossip.connectionInfo()) {
      const nodeId = c.status === 'open' ? byPeer.get(c.peerId) : undefined;
      if (nodeId !== undefined && !this.enrollment.isRevoked(nodeId)) ids.add(nodeId);
    }
    return [...ids].sort();
  }

  /** True when every document's digest equals `other`'s. */
  sameStateAs(other: NodeAgent): boolean {
    return DOC_NAMES.every((name) => this.state.digest(name) === other.state.digest(name));
  }
}

function revokedOf(revocation: Revocation | null): AgentStatus['revoked'] {
  return revocation === null ? null : { revokedAt: revocation.revokedAt, reason: revocation.reason };
}

function logReader(dataDir: string): NonNullable<NonNullable<GossipLayerOptions['logs']>['read']> {
  return (request, signal) => readServiceLog(dataDir, request, signal);
}

/** Inbound connections in overlay mode must come from an overlay address (see enrollmentGater). */
function overlayAddressCheck(overlayCidr: string): (remoteAddr: string) => boolean {
  const cidr = parseOverlayCidr(overlayCidr);
  return (remoteAddr) => {
    const ip = /^\/ip4\/([0-9.]+)\//.exec(remoteAddr)?.[1];
    if (ip === undefined) return false;
    try {
      return isHostInCidr(cidr, parseIpv4(ip));
    } catch {
      return false;
    }
  };
}

/**
 * A `client` record is for tools (docs/security.md, "Clients"): it syncs and
 * writes, but nobody places work on it, asks it for a lease or counts it as
 * a SWIM member, so running a reconciler or SWIM under it would only pretend.
 */
function checkClientOptions(options: NodeAgentOptions): void {
  const parts = [
    ...(options.reconciler ? ['a reconciler'] : []),
    ...(options.membership?.swim ? ['SWIM membership'] : []),
  ];
  if (parts.length === 0) return;
  throw new Error(
    `node "${options.nodeId}" is enrolled as a client: clients are never placed, never witnesses and never members, so it cannot run ${parts.join(' or ')}`,
  );
}

/** A bundle must belong to this org, this node id and this libp2p key, or nobody would admit us. */
function checkBundleMatches(bundle: EnrollmentBundle, options: NodeAgentOptions): void {
  const problems: string[] = [];
  if (bundle.org !== options.org)
    problems.push(`bundle is for org "${bundle.org}", agent runs org "${options.org}"`);
  if (bundle.record.nodeId !== options.nodeId) {
    problems.push(`bundle is for node "${bundle.record.nodeId}", agent runs node "${options.nodeId}"`);
  }
  const key = options.gossip?.privateKey;
  if (!key) problems.push('an enrolled agent needs its libp2p key (gossip.privateKey)');
  else if (peerIdOf(key) !== bundle.record.peerId) {
    problems.push(`bundle names peer ${bundle.record.peerId}, the node key is ${peerIdOf(key)}`);
  }
  if (problems.length > 0)
    throw new Error(`enrollment bundle does not match this agent: ${problems.join('; ')}`);
}

/** The org's service range as its bundle says, or the default (the upper half of the overlay CIDR). */
function bundleServiceRange(bundle: EnrollmentBundle): ServiceRange {
  if (bundle.serviceRange === undefined) return defaultServiceRange(bundle.overlayCidr);
  try {
    return serviceRangeFromCidr(bundle.serviceRange, bundle.overlayCidr);
  } catch (err) {
    throw new AgentSetupError(`enrollment bundle: ${(err as Error).message}`);
  }
}
