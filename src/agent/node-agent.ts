import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { GossipLayer } from '../gossip/index.js';
import type { SwimDetectorFeed } from '../gossip/swim-detector-feed.js';
import type { SwimMembership } from '../gossip/swim-transport.js';
import { checkRevocation } from '../identity/ca.js';
import type { ServiceDnsServer } from '../overlay/dns-server.js';
import { serviceZone } from '../overlay/service-dns.js';
import type { Reconciler } from '../reconciler/reconciler.js';
import type { ClusterState } from '../state/cluster-state.js';
import type { EnrollmentView } from '../state/enrollment-view.js';
import type { EpochStarter } from '../state/epoch-starter.js';
import { DOC_NAMES } from '../state/names.js';
import type { ObservedView } from '../state/observed-view.js';
import type { Revocation } from '../state/schemas.js';
import type { SpecRevisionGuard } from '../state/spec-revision-guard.js';
import type { WorkloadsView } from '../state/workloads-view.js';
import { Lifecycle, type LifecyclePart, type Startable } from '../util/lifecycle.js';
import { assembleAgent } from './agent-assembly.js';
import type { AgentStatus, NodeAgentComponents, NodeAgentOptions } from './agent-options.js';
import type { OverlaySync } from './overlay-sync.js';
import { PeerRecord } from './peer-record.js';
import type { ServiceNetwork } from './service-network.js';
import type { EnrollmentTrust, LostPeer } from './trust.js';

export type {
  AgentGossipOptions,
  AgentStatus,
  NodeAgentComponents,
  NodeAgentOptions,
} from './agent-options.js';

/**
 * The composition root of one node: state (Yjs documents on an lmdb log),
 * typed views, and the gossip layer. Everything is handed in through
 * `components`, so the simulator and tests can run many agents in one
 * process and swap a transport; `NodeAgent.create` builds the usual set
 * (agent-assembly.ts).
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
    return assembleAgent(options, (components) => new NodeAgent(components));
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
