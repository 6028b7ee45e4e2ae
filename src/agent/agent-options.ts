import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { GossipLayer, GossipLayerOptions, MemberView } from '../gossip/index.js';
import type { SwimDetectorFeed } from '../gossip/swim-detector-feed.js';
import type { SwimMembership } from '../gossip/swim-transport.js';
import type { EnrollmentBundle } from '../identity/bundle.js';
import type { SwimParams } from '../membership/swim-core.js';
import type { ServiceDnsServer } from '../overlay/dns-server.js';
import type { OverlayManager } from '../overlay/overlay-manager.js';
import type { Reconciler, ReconcilerOptions } from '../reconciler/reconciler.js';
import type { ClusterState } from '../state/cluster-state.js';
import type { EnrollmentView } from '../state/enrollment-view.js';
import type { EpochStarter } from '../state/epoch-starter.js';
import type { Durability } from '../state/lmdb-log.js';
import type { DocName } from '../state/names.js';
import type { ObservedView } from '../state/observed-view.js';
import type { InvalidRecordHandler } from '../state/record-check.js';
import type { SpecRevisionGuard } from '../state/spec-revision-guard.js';
import type { WorkloadsView } from '../state/workloads-view.js';
import type { OverlaySync } from './overlay-sync.js';
import type { ServiceNetwork } from './service-network.js';
import type { EnrollmentTrust } from './trust.js';

/**
 * What a node agent (node-agent.ts) is configured with, what it is built
 * from, and what it reports of itself.
 */

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
