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
import { NodeAgent } from '../../src/agent/node-agent.js';
import { generateNodeKey, type PrivateKey, peerIdOf } from '../../src/gossip/index.js';
import type { Capacity, WorkloadSpec } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';
import { SimClock } from '../net/clock.js';
import type { LinkParams } from '../net/link-model.js';
import { SimNetwork } from '../net/sim-network.js';
import { compactNames, describeLink, FaultLog } from './fault-log.js';
import { type AppliedListener, HarnessWrites } from './harness-writes.js';
import { RunningRegistry } from './running-registry.js';
import { simAgentOptions } from './sim-agent-options.js';
import {
  type AckedWrite,
  DEFAULT_SIM_TIMING,
  type FaultEvent,
  type SimClusterOptions,
  type SimTiming,
} from './sim-cluster-options.js';
import { enrollSelf, SimWitnessIssuer } from './sim-enrollment.js';
import { buildSimImage, type SimImage } from './sim-image.js';
import { SimRunner, type SimRunnerFaults } from './sim-runner.js';
import { type SimWorkloadDraft, simWorkloadSpec } from './workload.js';

export { compactNames } from './fault-log.js';
export type { AppliedListener } from './harness-writes.js';
export * from './sim-cluster-options.js';

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
  private readonly faultLog = new FaultLog();
  private readonly writes = new HarnessWrites();
  private readonly witnessIssuer = new SimWitnessIssuer();
  private readonly pick;
  private groups: string[][] | null = null;
  private readonly cuts = new Set<string>();
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
    return this.writes.write(this.agent(name), name);
  }

  ackedWrites(): readonly AckedWrite[] {
    return this.writes.ackedWrites();
  }

  /** Keys of the harness's writes present on `name`. */
  writeKeysOn(name: string): Set<string> {
    return this.writes.keysOn(this.agent(name));
  }

  /** Every later arrival of a harness write on any agent (local writes included); returns unsubscribe. */
  onApplied(listener: AppliedListener): () => void {
    return this.writes.onApplied(listener);
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
    return this.faultLog.all();
  }

  onFault(listener: (event: FaultEvent) => void): () => void {
    return this.faultLog.onFault(listener);
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
    const now = this.clock.clockFor(node.name);
    const runner =
      (this.options.reconciler ?? true)
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
    const agent = await NodeAgent.create(
      simAgentOptions(
        {
          name: node.name,
          dataDir: node.dataDir,
          key: node.key,
          now,
          runner,
          bootstrap: this.bootstrapFor(node),
        },
        { options: this.options, timing: this.timing, net: this.net, image: this.image, logger: this.logger },
      ),
    );
    try {
      this.enroll(agent, node);
      if (agent.reconciler) {
        // A pre-pulled image: every node (or every node of `imageOn`) has it before its first claim.
        const prePulled = this.options.imageOn?.includes(node.name) ?? true;
        if (prePulled && !(await agent.reconciler.images.has(this.image.digest))) {
          await agent.reconciler.images.importFile(this.image.tar, this.image.digest);
        }
      }
      this.writes.attach(agent, node.name);
      await agent.start();
    } catch (err) {
      this.writes.detach(node.name);
      await agent.stop().catch(() => undefined);
      throw err;
    }
    node.agent = agent;
    node.runner = runner;
    node.up = true;
    node.starts++;
  }

  /** The witnesses of the configuration issued last (empty before the first agent started). */
  witnesses(): string[] {
    return this.witnessIssuer.witnesses();
  }

  /**
   * Issues the next witness configuration and writes it through `via` (like
   * `silo ca witnesses set --socket`): it reaches the others by gossip.
   */
  setWitnesses(witnesses: string[], via?: string): number {
    const version = this.witnessIssuer.issue(witnesses);
    const through = via ?? this.operator();
    this.witnessIssuer.writeTo(this.agent(through));
    this.recordFault('witnesses', [through], `v${version}: ${this.witnessIssuer.witnesses().join(', ')}`);
    return version;
  }

  private enroll(agent: NodeAgent, node: SimNode): void {
    // Every agent starts with the configuration its bundle would carry.
    const option = this.options.witnesses;
    this.witnessIssuer.issueInitial(
      Array.isArray(option)
        ? option
        : Array.from({ length: Math.min(option ?? 3, this.options.nodes) }, (_, i) => `n${i + 1}`),
    );
    this.witnessIssuer.writeTo(agent);
    enrollSelf(agent, node, this.capacity(), this.net.address(node.name).toString());
  }

  private async teardown(node: SimNode): Promise<void> {
    const agent = node.agent;
    node.agent = null;
    node.runner = null;
    this.writes.detach(node.name);
    if (agent === null) return;
    try {
      // halt: the loop stops where it is, processes (already killed) are not released.
      await agent.reconciler?.stop('halt');
      await agent.stop();
    } catch (err) {
      this.logger.warn({ err, node: node.name }, 'tearing down a sim agent failed');
    }
  }

  private recordFault(...args: Parameters<FaultLog['record']>): void {
    this.faultLog.record(...args);
  }

  private requireNode(name: string): SimNode {
    const node = this.nodes.get(name);
    if (node === undefined) throw new RangeError(`unknown sim node ${JSON.stringify(name)}`);
    return node;
  }
}
