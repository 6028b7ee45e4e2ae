import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { BlobExchange, fileBlobSource } from '../gossip/blob-exchange.js';
import type { GossipLayer } from '../gossip/index.js';
import { LeaseExchange } from '../gossip/lease-exchange.js';
import type { PublicKeyInput } from '../identity/ed25519.js';
import { ExecaRunner } from '../overlay/exec.js';
import { ServiceNetns, serviceResolvConf } from '../overlay/service-netns.js';
import { GrantStore } from '../ownership/grant-store.js';
import { DEFAULT_MAX_STOP_TIMEOUT_MS, maxLeaseMs } from '../ownership/lease-bounds.js';
import { LeaseManager } from '../ownership/lease-manager.js';
import type { WitnessConfig } from '../ownership/witness-config.js';
import { WitnessService } from '../ownership/witness-service.js';
import type { EnrollmentView } from '../state/enrollment-view.js';
import type { Durability } from '../state/lmdb-log.js';
import type { ObservedView } from '../state/observed-view.js';
import type { SignedEnrollment } from '../state/schemas.js';
import type { WorkloadsView } from '../state/workloads-view.js';
import type { EncryptedScratch } from './encrypted-scratch.js';
import { HeartbeatLeaseSource } from './heartbeat-lease.js';
import { IMAGE_PROTOCOL, PeerImageFetcher } from './image-fetch.js';
import { ImageHolderRecord } from './image-holders.js';
import { caImageVerifier, type ImageSignatureVerifier, ImageStore } from './image-store.js';
import { DetectorLeaseSource, type LeaseKind, type LeaseSource } from './lease.js';
import type { ResourceLimiterOptions } from './limits.js';
import type { ReconcileLoopOptions, StopPolicy } from './loop-options.js';
import type { PeerDirectory } from './peer-fetch.js';
import { DEFAULT_OWNERSHIP_TIMING, type OwnershipTiming } from './placement/index.js';
import { ReconcileLoop } from './reconcile-loop.js';
import type { SandboxPreference } from './sandbox.js';
import { RuntimeRunner, type ServiceRunner } from './service-runner.js';
import {
  type QuotaOptions,
  runtimeInstanceId,
  type ServiceNetworkAccess,
  ServiceRuntime,
} from './service-runtime.js';
import { PeerSnapshots, SCRATCH_PROTOCOL, SnapshotStore } from './snapshots.js';
import type { SupervisorTuning } from './supervisor.js';
import { SwimLeaseSource, type SwimLivenessView } from './swim-lease.js';

/**
 * The reconciler of one node agent, composed: image store and service
 * runtime on the data directory, snapshot store, the two blob protocols
 * (`/silo/image/1`, `/silo/scratch/1`) on the agent's libp2p node, the
 * lease source over the failure detector, and the reconcile loop.
 * NodeAgent builds it when given `reconciler` options, starts it after
 * gossip and stops it before gossip.
 */

/** The loop's own settings, passed through unchanged (documented in loop-options.ts). */
type LoopSettings = Pick<
  ReconcileLoopOptions,
  'tickMs' | 'debounceMs' | 'checkpointIntervalMs' | 'replicas' | 'maxParallel' | 'gcIntervalMs' | 'handoffMs'
>;

/** Settings (config `services.*`, plus test and simulator hooks). */
export interface ReconcilerOptions extends LoopSettings {
  /** services.sandbox (default "auto"). */
  sandbox?: SandboxPreference;
  /** Ownership timing; dead_after always comes from the failure detector. */
  timing?: Partial<Omit<OwnershipTiming, 'deadAfterMs'>>;
  /**
   * services.max_stop_timeout (default 30 s): the longest stop_timeout a
   * workload may have; with fence_after and fence_slack it bounds lease
   * lengths and so this node's witness quiet period after a restart (W6).
   */
  maxStopTimeoutMs?: number;
  /** What stopping the agent does to its workloads (default "release"). */
  onStop?: StopPolicy;
  supervisor?: Partial<SupervisorTuning>;
  quota?: Partial<QuotaOptions>;
  limits?: Omit<ResourceLimiterOptions, 'logger'>;
  /** Encrypted STATE for persistent workloads (docs/security.md, "Encrypted scratch"); absent: plain STATE. */
  encryptedScratch?: EncryptedScratch;
  /** A runner of its own (the simulator); default: the ServiceRuntime on the data directory. */
  runner?: ServiceRunner;
  /**
   * Which built-in liveness source (config `services.lease`): "acked-heartbeats"
   * (default; HeartbeatLeaseSource, docs/placement.md L1-L3, A1-A2),
   * "local-detector" (DetectorLeaseSource, this node's failure detector only)
   * or "swim" (SwimLeaseSource, SWIM membership; needs `ReconcilerDeps.swim`).
   */
  leaseKind?: LeaseKind;
  /** A lease source of its own (tests); overrides `leaseKind`. */
  lease?: (defaults: { selfId: string; now: () => number }) => LeaseSource;
  /** Checks image signatures; default: the org CA's key from the enrollment bundle. */
  verifyImageSignature?: ImageSignatureVerifier;
  /** The local clock (default: the one given to gossip, else Date.now). */
  now?: () => number;
  /**
   * The monotonic clock leases are measured on (default performance.now);
   * the simulator gives each node one with its own rate.
   */
  monotonicNow?: () => number;
}

/** The agent's parts the reconciler works with. */
export interface ReconcilerDeps {
  nodeId: string;
  dataDir: string;
  logger: Logger;
  registry: Registry;
  gossip: GossipLayer;
  workloads: WorkloadsView;
  observed: ObservedView;
  enrollment: EnrollmentView;
  /** Verified, active enrolled nodes (EnrollmentTrust.active().active). */
  activeNodes: () => readonly SignedEnrollment[];
  onActiveNodesChange?: (listener: () => void) => () => void;
  /** The org CA key (enrollment bundle): images must be signed by it. */
  caPublicKey?: PublicKeyInput;
  /** The clock gossip's failure detector runs on. */
  now?: () => number;
  /** How the witness grant store commits (default "sync": fdatasync before a grant is answered). */
  durability?: Durability;
  /** SWIM membership (`membership.swim`), for the "swim" liveness source. */
  swim?: SwimLivenessView;
  /**
   * Node ids enrolled as clients (docs/protocol.md, "Enrollment roles"). A
   * witness configuration naming one (the CA refuses to sign that, but an
   * older CA might have) keeps it in the quorum's count, as a witness that
   * never grants: it is never asked. Dropping it from the count instead
   * would let nodes that disagree on its role disagree on the quorum.
   */
  isClient?: (nodeId: string) => boolean;
  /**
   * Give sandboxed overlay services their own address and namespace
   * (docs/services.md, "Service addresses"): set when the workloads view
   * allocates service addresses (an agent with an org).
   */
  serviceAddresses?: boolean;
  /** The agent's service DNS server, written first into those services' resolv.conf. */
  serviceDns?: { nameserver: string; zone: string };
  /** conn_auth for those services: the org CIDR, and the WireGuard interface members' traffic arrives on. */
  serviceFilter?: { allowedSources: string; overlayInterface?: string };
}

export class Reconciler {
  readonly images: ImageStore;
  readonly snapshotStore: SnapshotStore;
  readonly runner: ServiceRunner;
  private readonly deps: ReconcilerDeps;
  private readonly options: ReconcilerOptions;
  private readonly imageExchange: BlobExchange;
  private readonly imageHolders: ImageHolderRecord;
  private readonly scratchExchange: BlobExchange;
  private readonly now: () => number;
  private readonly verifySignature: ImageSignatureVerifier;
  readonly witness: WitnessService;
  readonly leases: LeaseManager;
  private readonly grantStore: GrantStore;
  private readonly leaseExchange: LeaseExchange;
  private loopInstance: ReconcileLoop | null = null;
  private leaseSource: LeaseSource | null = null;
  private started = false;

  constructor(deps: ReconcilerDeps, options: ReconcilerOptions = {}) {
    this.deps = deps;
    this.options = options;
    this.now = options.now ?? deps.now ?? Date.now;
    const { dataDir, logger, registry } = deps;
    const verifySignature =
      options.verifyImageSignature ??
      (deps.caPublicKey !== undefined ? caImageVerifier(deps.caPublicKey) : undefined);
    if (verifySignature === undefined) {
      throw new Error(
        'the reconciler needs the org CA key (enrollment bundle) or verifyImageSignature: unsigned images never run',
      );
    }
    this.verifySignature = verifySignature;
    this.images = new ImageStore({ dataDir, verifySignature, logger, registry });
    this.snapshotStore = new SnapshotStore({ dataDir, logger, registry, now: this.now });
    if (options.runner !== undefined) {
      this.runner = options.runner;
    } else {
      const runtime = new ServiceRuntime({
        dataDir,
        imageStore: this.images,
        logger,
        registry,
        nodeId: deps.nodeId,
        sandbox: options.sandbox ?? 'auto',
        ...(options.supervisor ? { tuning: options.supervisor } : {}),
        ...(options.quota ? { quota: options.quota } : {}),
        ...(options.limits ? { limits: options.limits } : {}),
        ...(options.encryptedScratch ? { encryptedScratch: options.encryptedScratch } : {}),
        ...(deps.serviceAddresses === true ? { serviceNetwork: this.serviceNetworkAccess(deps) } : {}),
      });
      this.runner = new RuntimeRunner(runtime);
    }
    const node = deps.gossip.node;
    this.imageExchange = new BlobExchange({
      node,
      protocol: IMAGE_PROTOCOL,
      source: fileBlobSource((digest) => this.images.tarPath(digest)),
      logger,
      registry,
    });
    this.imageHolders = new ImageHolderRecord({
      nodeId: deps.nodeId,
      store: this.images,
      observed: deps.observed,
      logger,
    });
    this.scratchExchange = new BlobExchange({
      node,
      protocol: SCRATCH_PROTOCOL,
      source: this.snapshotStore.blobSource(),
      logger,
      registry,
    });
    // Witness leases (docs/placement.md, "Witness leases"): every node serves
    // the witness role (it answers `not-a-witness` unless the configuration
    // names it) and claims through the LeaseManager.
    const monotonic = options.monotonicNow ?? (() => performance.now());
    const config = (): WitnessConfig | null => {
      const record = deps.enrollment.witnessConfig();
      return record === null ? null : { version: record.version, witnesses: record.witnesses };
    };
    const timing = { ...DEFAULT_OWNERSHIP_TIMING, ...options.timing };
    this.grantStore = new GrantStore({ path: join(dataDir, 'witness'), durability: deps.durability });
    this.witness = new WitnessService({
      selfId: deps.nodeId,
      store: this.grantStore,
      config,
      clockDriftPpm: timing.clockDriftPpm,
      maxLeaseMs: maxLeaseMs({
        fenceAfterMs: timing.fenceAfterMs,
        fenceSlackMs: timing.fenceSlackMs,
        maxStopTimeoutMs: options.maxStopTimeoutMs ?? DEFAULT_MAX_STOP_TIMEOUT_MS,
      }),
      now: monotonic,
      logger,
      registry,
    });
    const nodeIdOfPeer = (peerId: string) => deps.activeNodes().find((r) => r.peerId === peerId)?.nodeId;
    this.leaseExchange = new LeaseExchange({ node, logger, registry, nodeIdOfPeer, selfId: deps.nodeId });
    const directory = this.directory();
    this.leases = new LeaseManager({
      selfId: deps.nodeId,
      config,
      now: monotonic,
      stallMarginMs: timing.fenceSlackMs,
      local: (requests) => this.witness.serve(deps.nodeId, requests),
      transport: {
        ask: (nodeId, requests) => {
          if (deps.isClient?.(nodeId) === true)
            return Promise.reject(
              new Error(`witness ${nodeId} is enrolled as a client: clients grant no leases`),
            );
          const peerId = directory.peerIdOf(nodeId);
          if (peerId === undefined)
            return Promise.reject(new Error(`witness ${nodeId} has no known peer id`));
          return this.leaseExchange.ask(peerId, requests);
        },
      },
      logger,
      registry,
    });
  }

  private builtInLeaseSource(activeNodeIds: () => readonly string[]): LeaseSource {
    const { deps } = this;
    const selfId = deps.nodeId;
    const detector = deps.gossip.detector;
    switch (this.options.leaseKind ?? 'acked-heartbeats') {
      case 'acked-heartbeats':
        return new HeartbeatLeaseSource({
          selfId,
          ledger: deps.gossip.heartbeatLedger,
          detector,
          activeNodeIds,
          now: this.now,
        });
      case 'local-detector':
        return new DetectorLeaseSource({ selfId, detector, activeNodeIds, now: this.now });
      case 'swim':
        if (deps.swim === undefined)
          throw new Error('services.lease = "swim" needs SWIM membership (membership.swim = true)');
        return new SwimLeaseSource({ selfId, swim: deps.swim, activeNodeIds, now: this.now });
    }
  }

  /** The liveness source placement reads ("acked-heartbeats", "local-detector", "swim"; null before start). */
  get livenessKind(): string | null {
    return this.leaseSource?.kind ?? null;
  }

  /** The liveness source in use (after `start`): its view and quorum evidence, for status and tests. */
  get lease(): LeaseSource | null {
    return this.leaseSource;
  }

  /** The running loop (after `start`). */
  get loop(): ReconcileLoop | null {
    return this.loopInstance;
  }

  /** Serve images and snapshots, then reconcile. Call after gossip started (liveness begins now). */
  private serviceNetworkAccess(deps: ReconcilerDeps): ServiceNetworkAccess {
    const netns = new ServiceNetns({
      runner: new ExecaRunner(),
      logger: deps.logger,
      instanceId: runtimeInstanceId(deps.dataDir),
      ...(deps.serviceFilter ? { filter: deps.serviceFilter } : {}),
    });
    return {
      addressOf: (workload) => deps.workloads.serviceAddresses().get(workload),
      addresses: () => deps.workloads.serviceAddresses(),
      setup: (workload, address, ports) => netns.setup(workload, address, ports),
      teardown: (workload) => netns.teardown(workload),
      onChange: (listener) => deps.workloads.onChange(() => listener()),
      ...(deps.serviceDns ? { resolvConf: serviceResolvConf(deps.serviceDns, deps.logger) } : {}),
    };
  }

  async start(): Promise<void> {
    if (this.started) return;
    // Its metrics and listeners belong to one loop: a stopped reconciler is not restarted.
    if (this.loopInstance !== null) throw new Error('a stopped reconciler cannot be started again');
    this.started = true;
    const { deps, options } = this;
    await this.imageExchange.start();
    // Serving images from now on: say which (reconcile-loop.ts imageHints asks the holders first).
    await this.imageHolders.start();
    await this.scratchExchange.start();
    await this.leaseExchange.start(async (from, requests) => this.witness.serve(from, requests));
    this.leases.start();
    const directory = this.directory();
    const detector = deps.gossip.detector;
    const activeNodeIds = () => deps.activeNodes().map((record) => record.nodeId);
    const lease =
      options.lease?.({ selfId: deps.nodeId, now: this.now }) ?? this.builtInLeaseSource(activeNodeIds);
    this.leaseSource = lease;
    const timing: OwnershipTiming = {
      ...DEFAULT_OWNERSHIP_TIMING,
      ...options.timing,
      deadAfterMs: detector.deadAfterMs,
    };
    if (options.timing?.fenceAfterMs === undefined && timing.fenceAfterMs >= timing.deadAfterMs) {
      // The default fence_after (6 s) assumes the default dead_after (10 s).
      timing.fenceAfterMs = Math.floor(timing.deadAfterMs * 0.6);
    }
    const loopOptions: ReconcileLoopOptions = {
      nodeId: deps.nodeId,
      workloads: deps.workloads,
      observed: deps.observed,
      enrollment: deps.enrollment,
      activeNodes: deps.activeNodes,
      ...(deps.onActiveNodesChange ? { onActiveNodesChange: deps.onActiveNodesChange } : {}),
      lease,
      leases: this.leases,
      runner: this.runner,
      snapshots: new PeerSnapshots({
        store: this.snapshotStore,
        exchange: this.scratchExchange,
        directory,
        logger: deps.logger,
      }),
      images: new PeerImageFetcher({
        store: this.images,
        exchange: this.imageExchange,
        directory,
        verifySignature: this.verifySignature,
        logger: deps.logger,
      }),
      now: this.now,
      timing,
      tickMs: options.tickMs,
      debounceMs: options.debounceMs,
      checkpointIntervalMs: options.checkpointIntervalMs,
      replicas: options.replicas,
      maxParallel: options.maxParallel,
      gcIntervalMs: options.gcIntervalMs,
      handoffMs: options.handoffMs,
      logger: deps.logger,
      registry: deps.registry,
    };
    this.loopInstance = new ReconcileLoop(loopOptions);
    await this.loopInstance.start();
  }

  /** Stop reconciling (per `onStop`, or the policy given), then stop serving. */
  async stop(policy: StopPolicy = this.options.onStop ?? 'release'): Promise<void> {
    if (!this.started) return;
    this.started = false;
    try {
      await this.loopInstance?.stop(policy);
    } finally {
      if (policy !== 'halt') {
        const stopped = await this.runner.stopAll({ reason: 'agent stopping' }).then(
          () => true,
          () => false,
        );
        // Nothing runs here any more: give the leases back (rule C5), so the
        // next holder need not wait out the witnesses' hold. If the stop
        // failed, the leases are left to expire: a process may still run.
        if (stopped) await this.leases.releaseAll(1000).catch(() => undefined);
      }
      this.leases.stop();
      await this.leaseExchange.stop();
      await this.grantStore.close();
      await this.scratchExchange.stop();
      await this.imageHolders.stop();
      await this.imageExchange.stop();
      this.leaseSource?.close?.();
    }
  }

  private directory(): PeerDirectory {
    const { deps } = this;
    return {
      selfPeerId: deps.gossip.peerId,
      peerIdOf: (nodeId) =>
        deps.activeNodes().find((record) => record.nodeId === nodeId)?.peerId ??
        deps.gossip.peerIdOfNode(nodeId),
      connectedPeers: () => deps.gossip.peers(),
    };
  }
}
