import { join } from 'node:path';
import { Registry } from 'prom-client';
import { enrollmentGater } from '../gossip/gater.js';
import { GossipLayer, type GossipLayerOptions, peerIdOf } from '../gossip/index.js';
import { SwimDetectorFeed } from '../gossip/swim-detector-feed.js';
import { SwimMembership } from '../gossip/swim-transport.js';
import type { EnrollmentBundle } from '../identity/bundle.js';
import { signatureHooks } from '../identity/enrollment-verifier.js';
import { isHostInCidr, parseIpv4, parseOverlayCidr } from '../identity/ipv4-cidr.js';
import { isClient, ownershipMembers } from '../identity/role.js';
import { ServiceDnsServer } from '../overlay/dns-server.js';
import { libp2pAddressesOf } from '../overlay/endpoints.js';
import { serviceZone } from '../overlay/service-dns.js';
import { Reconciler, type ReconcilerDeps, type ReconcilerOptions } from '../reconciler/reconciler.js';
import { ClusterState } from '../state/cluster-state.js';
import { EnrollmentView } from '../state/enrollment-view.js';
import { EpochStarter } from '../state/epoch-starter.js';
import { LmdbUpdateLog } from '../state/lmdb-log.js';
import { ObservedView } from '../state/observed-view.js';
import type { SignedEnrollment } from '../state/schemas.js';
import { defaultServiceRange, type ServiceRange, serviceRangeFromCidr } from '../state/service-addresses.js';
import { SpecRevisionGuard } from '../state/spec-revision-guard.js';
import { WorkloadsView } from '../state/workloads-view.js';
import type { NodeAgentComponents, NodeAgentOptions } from './agent-options.js';
import { readServiceLog } from './log-files.js';
import { OverlaySync } from './overlay-sync.js';
import { ServiceNetwork } from './service-network.js';
import { AgentSetupError } from './setup-error.js';
import { EnrollmentTrust } from './trust.js';

/**
 * The usual set of parts of one node agent, built from its options
 * (NodeAgent.create): the store and the state, the typed views, trust,
 * overlay, gossip, SWIM, the service network and DNS, the reconciler.
 * `build` makes the agent of them; if anything fails, the state is closed
 * again (its store holds a lock).
 */
export async function assembleAgent<T>(
  options: NodeAgentOptions,
  build: (components: NodeAgentComponents) => T,
): Promise<T> {
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
      // Every active enrolled node is dialable where its record says it listens.
      addressBook: {
        entries: () => {
          const records = trust
            ? trust.active().byPeerId.values()
            : enrollment.list().filter((r) => !enrollment.isRevoked(r.nodeId));
          return [...records].map((r) => ({ peerId: r.peerId, addrs: libp2pAddressesOf(r) }));
        },
        onChange: (listener) => (trust ? trust.onActiveChange(listener) : enrollment.onChange(listener)),
      },
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
    const reconciler = options.reconciler
      ? reconcilerFor(options, options.reconciler, {
          logger,
          registry,
          gossip,
          workloads,
          observed,
          enrollment,
          memberNodes,
          clientIds,
          trust,
          swim,
          serviceNetwork,
        })
      : undefined;
    return build({
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

/** The agent's parts the reconciler is built over (see assembleAgent): views as they are, and its inputs. */
type ReconcilerParts = Pick<
  ReconcilerDeps,
  'logger' | 'registry' | 'gossip' | 'workloads' | 'observed' | 'enrollment'
> & {
  /** The nodes that count for ownership (clients excluded). */
  memberNodes: () => readonly SignedEnrollment[];
  clientIds: () => ReadonlySet<string>;
  trust: EnrollmentTrust | undefined;
  swim: SwimMembership | undefined;
  serviceNetwork: ServiceNetwork | undefined;
};

/**
 * The reconciler, with service namespaces, their traffic filter and their
 * DNS only where the overlay routes service addresses.
 */
function reconcilerFor(
  options: NodeAgentOptions,
  settings: ReconcilerOptions,
  parts: ReconcilerParts,
): Reconciler {
  if (!options.dataDir) throw new Error('the reconciler needs a data directory (dataDir)');
  const { memberNodes, clientIds, trust, swim, serviceNetwork, ...views } = parts;
  const bundle = options.trust?.bundle;
  return new Reconciler(
    {
      nodeId: options.nodeId,
      dataDir: options.dataDir,
      ...views,
      activeNodes: memberNodes,
      isClient: (nodeId: string) => clientIds().has(nodeId),
      ...(trust ? { onActiveNodesChange: (listener: () => void) => trust.onActiveChange(listener) } : {}),
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
    settings,
  );
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
