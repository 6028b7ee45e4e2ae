/**
 * SimCluster: N real NodeAgents (real Yjs, lmdb, gossipsub, replicator,
 * anti-entropy, failure detector, reconcile loop) in one process over a
 * SimNetwork, with the faults a scenario injects: partitions (symmetric
 * groups or one-way cuts), per-link latency/jitter/loss, node crash and
 * restart (same data dir and key), new nodes joining, clock skew.
 *
 * Only the service processes are simulated (SimRunner), and they report to
 * one RunningRegistry: the harness's global view of what runs where.
 *
 * The cluster also keeps the ground truth the checkers need and no agent
 * has: which nodes are down, the partition groups and cuts in force, and
 * every fault with its time (performance.now, never a node's skewed clock).
 */

import { cp, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type * as Y from 'yjs';
import { heartbeatSchedule } from '../../src/agent/heartbeat-schedule.js';
import { NodeAgent } from '../../src/agent/node-agent.js';
import { generateNodeKey, type MeshDegree, type PrivateKey, peerIdOf } from '../../src/gossip/index.js';
import type { SwimParams } from '../../src/membership/swim-core.js';
import type { ReconcilerOptions } from '../../src/reconciler/reconciler.js';
import { liveValues } from '../../src/state/epochs/records.js';
import { encodeRecord, parseSlotKey, readSlots, slotKey } from '../../src/state/epochs/slot-codec.js';
import { Origin } from '../../src/state/names.js';
import type { Capacity, WorkloadSpec } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';
import { SimClock } from '../net/clock.js';
import type { LinkParams } from '../net/link-model.js';
import type { Seed } from '../net/prng.js';
import { SimNetwork } from '../net/sim-network.js';
import { RunningRegistry } from './running-registry.js';
import { buildSimImage, type SimImage } from './sim-image.js';
import { SimRunner, type SimRunnerFaults, type SimRunnerTiming } from './sim-runner.js';
import { type SimWorkloadDraft, simWorkloadSpec } from './workload.js';

export const SIM_ORG = 'sim';
/** The Y.Map (in the workloads document) the harness writes its test writes to; no view reads it. */
export const WRITES_MAP = 'sim-writes';

/** Agent timings: gossip, failure detector, ownership and reconcile loop. All in ms. */
export interface SimTiming {
  heartbeatMs: number;
  suspectAfterMs: number;
  deadAfterMs: number;
  syncGraceMs: number;
  syncIntervalMs: number;
  syncTimeoutMs: number;
  gossipHeartbeatMs: number;
  batchMs: number;
  redialIntervalMs: number;
  redialBackoffMaxMs: number;
  meshCheckIntervalMs: number;
  targetConnections: number;
  fenceAfterMs: number;
  claimSettleMs: number;
  fenceSlackMs: number;
  /** services.max_stop_timeout: with fence_after and fence_slack, the witnesses' quiet period after a restart (W6). */
  maxStopTimeoutMs: number;
  clockDriftPpm: number;
  tickMs: number;
  debounceMs: number;
  checkpointIntervalMs: number;
  handoffMs: number;
  replicas: number;
  maxParallel: number;
}

/**
 * The agent's defaults (config/schema) scaled down by about 2 so that
 * scenarios finish in tens of seconds, with the same ratios: several
 * heartbeats per suspicion, fence_after < dead_after. Much shorter
 * heartbeats cost too much CPU once many agents share one event loop
 * (docs/sim.md, "Scale").
 */
export const DEFAULT_SIM_TIMING: SimTiming = {
  heartbeatMs: 1000,
  suspectAfterMs: 3000,
  deadAfterMs: 6000,
  syncGraceMs: 2000,
  syncIntervalMs: 10_000,
  syncTimeoutMs: 10_000,
  gossipHeartbeatMs: 1000,
  batchMs: 5,
  redialIntervalMs: 1000,
  redialBackoffMaxMs: 5000,
  meshCheckIntervalMs: 1000,
  targetConnections: 6,
  fenceAfterMs: 4000,
  claimSettleMs: 1000,
  fenceSlackMs: 1000,
  maxStopTimeoutMs: 2000,
  clockDriftPpm: 1000,
  tickMs: 500,
  debounceMs: 50,
  checkpointIntervalMs: 2000,
  handoffMs: 2000,
  replicas: 1,
  maxParallel: 1,
};

export interface SimNetworkDefaults {
  latencyMs: number;
  jitterMs: number;
  lossPct: number;
}

export interface SimClusterOptions {
  seed: Seed;
  /** Agents started by `start()`. */
  nodes: number;
  /** Working directory (data dirs, image); a fresh temp dir (removed by close) when absent. */
  root?: string;
  timing?: Partial<SimTiming>;
  network?: Partial<SimNetworkDefaults>;
  /** Each new agent dials this many random running agents (default 3). */
  bootstrapPeers?: number;
  /** Capacity every node enrolls with. */
  capacity?: Capacity;
  runner?: Partial<SimRunnerTiming>;
  /** Agents started at once by `start()` (default 4). */
  startConcurrency?: number;
  /** Run the reconcile loop with simulated processes (default true). */
  reconciler?: boolean;
  /**
   * The witness configuration every agent starts with (version 1): a count
   * (the first nodes, n1..nk) or node names. Default: the first min(nodes, 3).
   */
  witnesses?: number | string[];
  /**
   * Per-node rate of the monotonic clock leases run on (1 = real time; 0.99
   * runs 1 % slow). Nodes not listed run at rate 1.
   */
  clockRates?: Readonly<Record<string, number>>;
  /**
   * Nodes that have the workload image before their first claim (default:
   * every node). The others fetch it from a node that has it
   * (`/silo/image/1`), found through the observed document's `images` record.
   */
  imageOn?: readonly string[];
  /** SWIM membership in every agent (default off). */
  membership?: SimMembership;
  /** Gossipsub mesh degree of every agent (default src/gossip/node.ts DEFAULT_MESH_DEGREE). */
  mesh?: Partial<MeshDegree>;
  /** Gossipsub flood publish in every agent (default the agent's: on). */
  floodPublish?: boolean;
  logger?: Logger;
}

/** SWIM in the simulator's agents: `liveness: "swim"` is a real agent's `services.lease = "swim"`. */
export interface SimMembership {
  liveness: 'acked-heartbeats' | 'swim';
  params?: Partial<SwimParams>;
  /**
   * With `liveness: "swim"`: heartbeats every this many ms instead of
   * timing.heartbeatMs, and SWIM vouches for live members in the heartbeat
   * detector (membership.heartbeat_interval of a real agent; default 10 s).
   */
  heartbeatIntervalMs?: number;
}

export type FaultKind =
  | 'start'
  | 'witnesses'
  | 'partition'
  | 'cut'
  | 'heal'
  | 'link'
  | 'crash'
  | 'restart'
  | 'copy'
  | 'join'
  | 'skew'
  | 'apply'
  | 'drain';

export interface FaultEvent {
  kind: FaultKind;
  at: number;
  nodes: string[];
  detail: string;
}

export interface AckedWrite {
  key: string;
  node: string;
  /** performance.now() when transactLocal returned (the write is durable on its node). */
  at: number;
  /** Size of the Yjs update the write made. */
  bytes: number;
}

interface SimNode {
  name: string;
  index: number;
  key: PrivateKey;
  peerId: string;
  dataDir: string;
  agent: NodeAgent | null;
  runner: SimRunner | null;
  faults: SimRunnerFaults;
  up: boolean;
  starts: number;
}

export type AppliedListener = (node: string, key: string, at: number) => void;

export class SimCluster {
  readonly net: SimNetwork;
  readonly clock = new SimClock();
  readonly registry = new RunningRegistry();
  readonly timing: SimTiming;
  readonly root: string;
  readonly image: SimImage;
  private readonly options: SimClusterOptions;
  private readonly logger: Logger;
  private readonly nodes = new Map<string, SimNode>();
  private readonly ownsRoot: boolean;
  private readonly faultLog: FaultEvent[] = [];
  private readonly faultListeners = new Set<(event: FaultEvent) => void>();
  private readonly appliedListeners = new Set<AppliedListener>();
  private readonly detachers = new Map<string, () => void>();
  private readonly acked: AckedWrite[] = [];
  private readonly pick;
  private groups: string[][] | null = null;
  private readonly cuts = new Set<string>();
  private writeSeq = 0;
  private lastIndex = 0;
  private closed = false;

  private constructor(options: SimClusterOptions, root: string, ownsRoot: boolean, image: SimImage) {
    this.options = options;
    this.root = root;
    this.ownsRoot = ownsRoot;
    this.image = image;
    this.logger = options.logger ?? silentLogger();
    this.timing = { ...DEFAULT_SIM_TIMING, ...options.timing };
    const network = options.network ?? {};
    this.net = new SimNetwork({
      seed: options.seed,
      defaultLatencyMs: network.latencyMs ?? 0,
      defaultJitterMs: network.jitterMs ?? 0,
      defaultLossPct: network.lossPct ?? 0,
    });
    this.pick = this.net.prng.fork('harness');
  }

  /** Builds the cluster and starts `options.nodes` agents. */
  static async start(options: SimClusterOptions): Promise<SimCluster> {
    if (!(Number.isInteger(options.nodes) && options.nodes >= 1)) {
      throw new RangeError(`SimCluster: nodes must be an integer >= 1, got ${options.nodes}`);
    }
    const ownsRoot = options.root === undefined;
    const root = options.root ?? (await mkdtemp(join(tmpdir(), 'silo-sim-')));
    await mkdir(root, { recursive: true });
    const cluster = new SimCluster(options, root, ownsRoot, await buildSimImage(root));
    try {
      // A few at a time: each start waits on disk and on its first dials, not only on CPU.
      // The first agent alone, so that every later one has someone to dial.
      const concurrency = options.startConcurrency ?? 4;
      await cluster.addAndStart();
      for (let started = 1; started < options.nodes; started += concurrency) {
        const wave = Math.min(concurrency, options.nodes - started);
        await Promise.all(Array.from({ length: wave }, () => cluster.addAndStart()));
      }
      cluster.recordFault('start', cluster.names(), `${options.nodes} agents`);
    } catch (err) {
      await cluster.close();
      throw err;
    }
    return cluster;
  }

  // ---- membership ---------------------------------------------------------------------------------------

  /** Every node ever added, in creation order (`n1`, `n2`, ...). */
  names(): string[] {
    return this.ordered().map((n) => n.name);
  }

  /** Nodes whose agent runs now. */
  live(): string[] {
    return this.ordered()
      .filter((n) => n.up)
      .map((n) => n.name);
  }

  down(): string[] {
    return this.ordered()
      .filter((n) => !n.up)
      .map((n) => n.name);
  }

  isUp(name: string): boolean {
    return this.requireNode(name).up;
  }

  /** The running agent of `name` (throws when it is down). */
  agent(name: string): NodeAgent {
    const node = this.requireNode(name);
    if (!node.up || node.agent === null) throw new Error(`sim node ${name} is down`);
    return node.agent;
  }

  agents(): NodeAgent[] {
    return this.live().map((name) => this.agent(name));
  }

  runner(name: string): SimRunner | null {
    return this.requireNode(name).runner;
  }

  /** Misbehaviour switches of `name`'s runner (kept across restarts). */
  runnerFaults(name: string): SimRunnerFaults {
    return this.requireNode(name).faults;
  }

  dataDir(name: string): string {
    return this.requireNode(name).dataDir;
  }

  /** A new node (next name) joins: a fresh key and data dir, dialing random running agents. */
  async join(): Promise<string> {
    const name = await this.addAndStart();
    this.recordFault('join', [name], name);
    return name;
  }

  /**
   * The node dies at once: its connections fail, dials to it are refused,
   * its processes vanish (nothing released, no snapshot), and its agent is
   * torn down without a graceful release. Its data dir stays.
   */
  async crash(name: string): Promise<void> {
    const node = this.requireNode(name);
    if (!node.up) throw new Error(`crash: ${name} is already down`);
    node.up = false;
    this.net.crash(name);
    node.runner?.kill();
    this.recordFault('crash', [name], name);
    await this.teardown(node);
  }

  /**
   * The crashed node comes back: same key, a new incarnation, on its data
   * dir, or on a copy `copyData` took earlier (a backup restored, a VM
   * snapshot rolled back: everything written since is gone).
   */
  async restart(name: string, options: { fromCopy?: string } = {}): Promise<void> {
    const node = this.requireNode(name);
    if (node.up) throw new Error(`restart: ${name} is running`);
    let detail = '';
    if (options.fromCopy !== undefined) {
      const copy = this.copyPath(options.fromCopy, name);
      if (!(await stat(copy).catch(() => null))?.isDirectory())
        throw new Error(`restart: ${name} has no copy "${options.fromCopy}" (take one with copy-data)`);
      await rm(node.dataDir, { recursive: true, force: true });
      await cp(copy, node.dataDir, { recursive: true });
      detail = ` on copy "${options.fromCopy}"`;
    }
    this.net.recover(name);
    await this.startAgent(node);
    this.recordFault('restart', [name], `${name} (start #${node.starts})${detail}`);
  }

  /**
   * Copies a down node's data dir aside as `label`: what a backup or a VM
   * snapshot taken now holds. Only of a down node: the agents here share the
   * process and write without fsync, so a copy of a running one could be torn.
   */
  async copyData(name: string, label: string): Promise<void> {
    const node = this.requireNode(name);
    if (node.up) throw new Error(`copy-data: ${name} is running (crash it first)`);
    const copy = this.copyPath(label, name);
    await rm(copy, { recursive: true, force: true });
    await cp(node.dataDir, copy, { recursive: true });
    this.recordFault('copy', [name], `${name} as "${label}"`);
  }

  private copyPath(label: string, name: string): string {
    return join(this.root, 'copies', encodeURIComponent(label), name);
  }

  // ---- network faults -----------------------------------------------------------------------------------

  /** Groups that cannot reach each other; every node (down ones too) must be in exactly one group. */
  partition(groups: string[][], mode: 'abort' | 'stall' = 'abort'): void {
    this.net.partition(groups, { mode });
    this.groups = groups.map((g) => [...g]);
    this.recordFault('partition', groups.flat(), groups.map((g) => `[${compactNames(g)}]`).join(' | '));
  }

  /** One-way: nothing from `from` reaches `to`. */
  cut(from: string, to: string, abortAfterMs?: number): void {
    this.net.cut(from, to, abortAfterMs === undefined ? {} : { abortAfterMs });
    this.cuts.add(`${from}>${to}`);
    this.recordFault('cut', [from, to], `${from} -/-> ${to}`);
  }

  /** Remove every partition and cut. */
  heal(): void {
    this.net.heal();
    this.groups = null;
    this.cuts.clear();
    this.recordFault('heal', [], 'of the network');
  }

  link(a: string, b: string, params: Partial<LinkParams>): void {
    this.net.setLink(a, b, params);
    this.recordFault('link', [a, b], describeLink(params));
  }

  defaultLink(params: Partial<LinkParams>): void {
    this.net.setDefaultLink(params);
    this.recordFault('link', [], `default ${describeLink(params)}`);
  }

  /** `name`'s clock runs `skewMs` ahead of the real one (negative: behind). */
  skew(name: string, skewMs: number): void {
    this.requireNode(name);
    this.clock.setSkew(name, skewMs);
    this.recordFault('skew', [name], `${name} ${skewMs >= 0 ? '+' : ''}${skewMs} ms`);
  }

  /** The partition groups in force (null when there is none). */
  partitionGroups(): string[][] | null {
    return this.groups?.map((g) => [...g]) ?? null;
  }

  hasCuts(): boolean {
    return this.cuts.size > 0;
  }

  /** The one-way cuts in force, as [from, to]. */
  cutPairs(): [string, string][] {
    return [...this.cuts].map((pair) => pair.split('>') as [string, string]);
  }

  // ---- state --------------------------------------------------------------------------------------------

  /** One acknowledged write on `name` (durable there when this returns). */
  write(name: string): AckedWrite {
    const agent = this.agent(name);
    const seq = ++this.writeSeq;
    const key = `${name}/${seq}`;
    const value = { by: name, seq, at: Date.now() };
    let bytes = 0;
    // The update's own size (what replication carries), captured as the transaction commits.
    const off = agent.state.onChange((_doc, update, origin) => {
      if (origin === Origin.local) bytes += update.byteLength;
    });
    try {
      // A slotted record (docs/epochs.md), so that epoch switches carry it like any record.
      agent.state.transactLocal('workloads', (doc: Y.Doc) =>
        doc
          .getMap(WRITES_MAP)
          .set(
            slotKey(key, agent.state.nodeId),
            encodeRecord({ stamp: agent.state.clock.next(Date.now()), value }),
          ),
      );
    } finally {
      off();
    }
    const write: AckedWrite = { key, node: name, at: performance.now(), bytes };
    this.acked.push(write);
    return write;
  }

  ackedWrites(): readonly AckedWrite[] {
    return this.acked;
  }

  /** Keys of the harness's writes present on `name`. */
  writeKeysOn(name: string): Set<string> {
    return new Set(
      liveValues(readSlots(this.agent(name).state.doc('workloads').getMap(WRITES_MAP)).slots).keys(),
    );
  }

  /** Every later arrival of a harness write on any agent (local writes included); returns unsubscribe. */
  onApplied(listener: AppliedListener): () => void {
    this.appliedListeners.add(listener);
    return () => this.appliedListeners.delete(listener);
  }

  /** Writes a workload spec through `via` (default: the first running agent). */
  apply(draft: SimWorkloadDraft, via?: string): WorkloadSpec {
    const through = via ?? this.operator();
    const spec = this.agent(through).workloads.put(simWorkloadSpec(this.image, draft));
    this.recordFault('apply', [through], `${draft.name} (${draft.scratchClass}, ${draft.cpus} cpu)`);
    return spec;
  }

  /** Sets (or clears) `name`'s drain flag through `via` (default: the first running agent). */
  drain(name: string, draining = true, via?: string): void {
    this.requireNode(name);
    const through = via ?? this.operator();
    this.agent(through).enrollment.setDraining(name, { draining, at: Date.now(), by: 'sim' });
    this.recordFault('drain', [name], draining ? name : `${name} lifted`);
  }

  /** The workload specs as the first running agent sees them. */
  specs(): WorkloadSpec[] {
    const live = this.live();
    return live.length === 0 ? [] : this.agent(live[0] as string).workloads.list();
  }

  /** Drain flags as the first running agent sees them. */
  draining(): Set<string> {
    const live = this.live();
    if (live.length === 0) return new Set();
    const agent = this.agent(live[0] as string);
    return new Set(this.names().filter((name) => agent.enrollment.isDraining(name)));
  }

  capacity(): Capacity {
    return this.options.capacity ?? { cpus: 2, memoryMb: 2048, scratchMb: 4096 };
  }

  /** Running agents grouped by their digests of all three documents; one group = converged. */
  digestGroups(): string[][] {
    const groups = new Map<string, string[]>();
    for (const name of this.live()) {
      const digests = this.agent(name).state.digestsAll();
      const key = `${digests.enrollment}/${digests.workloads}/${digests.observed}`;
      const group = groups.get(key) ?? [];
      group.push(name);
      groups.set(key, group);
    }
    return [...groups.values()].sort((a, b) => b.length - a.length);
  }

  converged(): boolean {
    return this.digestGroups().length <= 1;
  }

  // ---- faults log ---------------------------------------------------------------------------------------

  /** SWIM's state of `node` in running agent `viewer`'s view (null: no SWIM, not a member, or `viewer` is down). */
  swimStateOf(viewer: string, node: string): 'alive' | 'suspect' | 'dead' | null {
    const agent = this.requireNode(viewer).agent;
    return agent?.swim?.stateOf(node)?.state ?? null;
  }

  faults(): readonly FaultEvent[] {
    return this.faultLog;
  }

  onFault(listener: (event: FaultEvent) => void): () => void {
    this.faultListeners.add(listener);
    return () => this.faultListeners.delete(listener);
  }

  // ---- teardown -----------------------------------------------------------------------------------------

  /** Halts every agent (no graceful hand-over: that is a scenario step, not cleanup) and removes the root. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const up = [...this.nodes.values()].filter((n) => n.up);
    for (const node of up) {
      node.up = false;
      node.runner?.kill();
    }
    await Promise.allSettled(up.map((node) => this.teardown(node)));
    this.net.close();
    if (this.ownsRoot) await rm(this.root, { recursive: true, force: true });
  }

  // ---- internals ----------------------------------------------------------------------------------------

  private ordered(): SimNode[] {
    return [...this.nodes.values()].sort((a, b) => a.index - b.index);
  }

  private operator(): string {
    const first = this.live()[0];
    if (first === undefined) throw new Error('no running agent to write through');
    return first;
  }

  private async addAndStart(): Promise<string> {
    // Name reserved before the first await: several starts may run at once.
    const index = ++this.lastIndex;
    const name = `n${index}`;
    this.net.addNode(name);
    const key = await generateNodeKey();
    const node: SimNode = {
      name,
      index,
      key,
      peerId: peerIdOf(key),
      dataDir: join(this.root, name),
      agent: null,
      runner: null,
      faults: { leakOnStop: false },
      up: false,
      starts: 0,
    };
    this.nodes.set(name, node);
    await this.startAgent(node);
    return name;
  }

  private bootstrapFor(node: SimNode): string[] {
    const candidates = [...this.nodes.values()].filter((n) => n.up && n.name !== node.name);
    const count = Math.min(this.options.bootstrapPeers ?? 3, candidates.length);
    return this.pick
      .sample(candidates, count)
      .map((peer) => `${this.net.address(peer.name)}/p2p/${peer.peerId}`);
  }

  private async startAgent(node: SimNode): Promise<void> {
    const t = this.timing;
    const now = this.clock.clockFor(node.name);
    const reconcilerOn = this.options.reconciler ?? true;
    const membership = this.options.membership;
    const runner = reconcilerOn
      ? new SimRunner({
          node: node.name,
          dataDir: node.dataDir,
          registry: this.registry,
          logger: this.logger.child({ node: node.name }),
          timing: this.options.runner,
          faults: node.faults,
          now,
        })
      : null;
    const reconciler: ReconcilerOptions | undefined =
      runner === null
        ? undefined
        : {
            runner,
            verifyImageSignature: this.image.verify,
            timing: {
              fenceAfterMs: t.fenceAfterMs,
              claimSettleMs: t.claimSettleMs,
              fenceSlackMs: t.fenceSlackMs,
              clockDriftPpm: t.clockDriftPpm,
            },
            maxStopTimeoutMs: t.maxStopTimeoutMs,
            tickMs: t.tickMs,
            debounceMs: t.debounceMs,
            checkpointIntervalMs: t.checkpointIntervalMs,
            handoffMs: t.handoffMs,
            replicas: t.replicas,
            maxParallel: t.maxParallel,
            onStop: 'halt',
            monotonicNow: monotonicClock(this.options.clockRates?.[node.name] ?? 1),
            ...(membership?.liveness === 'swim' ? { leaseKind: 'swim' as const } : {}),
          };
    const agent = await NodeAgent.create({
      org: SIM_ORG,
      nodeId: node.name,
      dataDir: node.dataDir,
      durability: 'nosync',
      logger: this.logger,
      gossip: {
        customTransport: this.net.transport(node.name),
        listen: [this.net.address(node.name)],
        privateKey: node.key,
        bootstrap: this.bootstrapFor(node),
        now,
        ...heartbeatSchedule(membership?.liveness ?? 'acked-heartbeats', {
          heartbeatMs: t.heartbeatMs,
          ...(membership?.heartbeatIntervalMs !== undefined && {
            swimIntervalMs: membership.heartbeatIntervalMs,
          }),
        }),
        suspectAfterMs: t.suspectAfterMs,
        deadAfterMs: t.deadAfterMs,
        syncGraceMs: t.syncGraceMs,
        syncIntervalMs: t.syncIntervalMs,
        syncTimeoutMs: t.syncTimeoutMs,
        gossipHeartbeatMs: t.gossipHeartbeatMs,
        batchMs: t.batchMs,
        redialIntervalMs: t.redialIntervalMs,
        redialBackoffMaxMs: t.redialBackoffMaxMs,
        meshCheckIntervalMs: t.meshCheckIntervalMs,
        targetConnections: t.targetConnections,
        ...(this.options.mesh ? { mesh: this.options.mesh } : {}),
        ...(this.options.floodPublish !== undefined && { floodPublish: this.options.floodPublish }),
      },
      ...(reconciler ? { reconciler } : {}),
      ...(membership
        ? {
            membership: {
              swim: true,
              vouch: membership.liveness === 'swim',
              ...(membership.params ? { params: membership.params } : {}),
            },
          }
        : {}),
    });
    try {
      this.enroll(agent, node);
      if (agent.reconciler) {
        // A pre-pulled image: every node (or every node of `imageOn`) has it before its first claim.
        const prePulled = this.options.imageOn?.includes(node.name) ?? true;
        if (prePulled && !(await agent.reconciler.images.has(this.image.digest))) {
          await agent.reconciler.images.importFile(this.image.tar, this.image.digest);
        }
      }
      this.attachApplied(agent, node.name);
      await agent.start();
    } catch (err) {
      this.detachers.get(node.name)?.();
      await agent.stop().catch(() => undefined);
      throw err;
    }
    node.agent = agent;
    node.runner = runner;
    node.up = true;
    node.starts++;
  }

  /**
   * Without an enrollment bundle (the simulator admits every peer) nobody
   * writes a node's record, so each agent writes its own, as EnrollmentTrust
   * does for enrolled agents: placement needs it (capacity, labels).
   */
  /** The witness configuration as the simulator's "CA" issued it last (version 1 at start). */
  private witnessConfig: { version: number; witnesses: string[] } | null = null;

  /** The witnesses of the configuration issued last (empty before the first agent started). */
  witnesses(): string[] {
    return [...(this.witnessConfig?.witnesses ?? [])];
  }

  /**
   * Issues the next witness configuration and writes it through `via` (like
   * `silo ca witnesses set --socket`): it reaches the others by gossip.
   */
  setWitnesses(witnesses: string[], via?: string): number {
    const version = (this.witnessConfig?.version ?? 0) + 1;
    this.witnessConfig = { version, witnesses: [...witnesses].sort() };
    const through = via ?? this.operator();
    this.writeWitnessConfig(this.agent(through));
    this.recordFault('witnesses', [through], `v${version}: ${this.witnessConfig.witnesses.join(', ')}`);
    return version;
  }

  private writeWitnessConfig(agent: NodeAgent): void {
    const config = this.witnessConfig;
    if (config === null) return;
    const known = agent.enrollment.witnessConfig();
    if (known !== null && known.version >= config.version) return;
    agent.enrollment.putWitnessConfig({
      ...config,
      issuedAt: Date.now(),
      cert: Buffer.from('unsigned: the simulator runs without enrollment trust').toString('base64'),
    });
  }

  private enroll(agent: NodeAgent, node: SimNode): void {
    // Every agent starts with the configuration its bundle would carry.
    if (this.witnessConfig === null) {
      const option = this.options.witnesses;
      const names = Array.isArray(option)
        ? option
        : Array.from({ length: Math.min(option ?? 3, this.options.nodes) }, (_, i) => `n${i + 1}`);
      this.witnessConfig = { version: 1, witnesses: [...names].sort() };
    }
    this.writeWitnessConfig(agent);
    const existing = agent.enrollment.get(node.name);
    if (existing?.peerId === node.peerId) return;
    agent.enrollment.put({
      nodeId: node.name,
      peerId: node.peerId,
      wgPublicKey: Buffer.alloc(32, node.index % 256).toString('base64'),
      overlayIp: `10.${(node.index >> 16) & 255}.${(node.index >> 8) & 255}.${node.index & 255}`,
      endpoints: [],
      capacity: this.capacity(),
      labels: { sim: 'true' },
      issuedAt: Date.now(),
      cert: Buffer.from('unsigned: the simulator runs without enrollment trust').toString('base64'),
    });
  }

  private attachApplied(agent: NodeAgent, name: string): void {
    // Through the state, not the Y.Map: an epoch switch replaces the document (then every key
    // present is reported; listeners keep the first arrival of each).
    const off = agent.state.onTransaction('workloads', 'after', (tr) => {
      if (this.appliedListeners.size === 0) return;
      const at = performance.now();
      const map = agent.state.doc('workloads').getMap(WRITES_MAP);
      const keys =
        tr === null
          ? [...liveValues(readSlots(map).slots).keys()]
          : [...([...tr.changed].find(([type]) => (type as unknown) === map)?.[1] ?? [])]
              .filter((slot): slot is string => slot !== null)
              .map((slot) => parseSlotKey(slot)?.key ?? slot);
      for (const key of keys) for (const listener of this.appliedListeners) listener(name, key, at);
    });
    this.detachers.set(name, off);
  }

  private async teardown(node: SimNode): Promise<void> {
    const agent = node.agent;
    node.agent = null;
    node.runner = null;
    this.detachers.get(node.name)?.();
    this.detachers.delete(node.name);
    if (agent === null) return;
    try {
      // halt: the loop stops where it is, processes (already killed) are not released.
      await agent.reconciler?.stop('halt');
      await agent.stop();
    } catch (err) {
      this.logger.warn({ err, node: node.name }, 'tearing down a sim agent failed');
    }
  }

  private recordFault(kind: FaultKind, nodes: string[], detail: string): void {
    const event: FaultEvent = { kind, at: performance.now(), nodes, detail };
    this.faultLog.push(event);
    for (const listener of this.faultListeners) listener(event);
  }

  private requireNode(name: string): SimNode {
    const node = this.nodes.get(name);
    if (node === undefined) throw new RangeError(`unknown sim node ${JSON.stringify(name)}`);
    return node;
  }
}

function describeLink(params: Partial<LinkParams>): string {
  const parts: string[] = [];
  if (params.latencyMs !== undefined) parts.push(`latency ${params.latencyMs} ms`);
  if (params.jitterMs !== undefined) parts.push(`jitter ${params.jitterMs} ms`);
  if (params.lossPct !== undefined) parts.push(`loss ${params.lossPct}%`);
  return parts.join(', ');
}

/** "n1..n10, n12": node names with consecutive runs folded, for timeline lines. */
export function compactNames(names: readonly string[]): string {
  const numbered = names.map((name) => ({ name, n: /^n(\d+)$/.exec(name)?.[1] }));
  if (numbered.some((x) => x.n === undefined)) return names.join(', ');
  const nums = numbered.map((x) => Number(x.n)).sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < nums.length; ) {
    let j = i;
    while (j + 1 < nums.length && nums[j + 1] === (nums[j] as number) + 1) j++;
    parts.push(
      j - i >= 2
        ? `n${nums[i]}..n${nums[j]}`
        : nums
            .slice(i, j + 1)
            .map((x) => `n${x}`)
            .join(', '),
    );
    i = j + 1;
  }
  return parts.join(', ');
}

/** A monotonic clock running at `rate` × real time (the clock-rate bound of docs/placement.md). */
function monotonicClock(rate: number): () => number {
  if (!(rate > 0.5 && rate < 1.5)) throw new RangeError(`clock rate must be in (0.5, 1.5), got ${rate}`);
  const origin = performance.now();
  return () => origin + (performance.now() - origin) * rate;
}
