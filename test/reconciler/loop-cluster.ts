import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NodeAgent } from '../../src/agent/node-agent.js';
import { nodeKeyToBytes } from '../../src/gossip/keys.js';
import { signImageDigest } from '../../src/identity/image-signing.js';
import type { SwimParams } from '../../src/membership/swim-core.js';
import { buildImage } from '../../src/reconciler/image.js';
import { loadManifest, manifestToSpec, type WorkloadSpecDraft } from '../../src/reconciler/manifest.js';
import { rankNodes } from '../../src/reconciler/placement/index.js';
import type { ReconcilerOptions } from '../../src/reconciler/reconciler.js';
import type { EnrollmentRole, ObservedStatus } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';
import {
  EnrolledCluster,
  type EnrolledNode,
  FAST_GOSSIP,
  ORG_NAME,
  waitFor,
} from '../agent/enrolled-cluster.js';
import { FAST_OWNERSHIP } from '../helpers/fast-timings.js';

export { waitFor } from '../agent/enrolled-cluster.js';

const COUNTER_DIR = fileURLToPath(new URL('../../config/examples/counter', import.meta.url));
const CHILD = fileURLToPath(new URL('./loop-agent-child.ts', import.meta.url));

/**
 * Small timings so that the tests finish quickly (dead_after 1.5 s from
 * FAST_GOSSIP): a takeover waits dead_after + the extra wait for the old
 * holder's stop (about 1.8 s with stop_timeout 2 s) + claim_settle.
 */
export const LOOP_OPTIONS: ReconcilerOptions = {
  sandbox: 'none',
  timing: FAST_OWNERSHIP,
  tickMs: 200,
  debounceMs: 30,
  checkpointIntervalMs: 400,
  replicas: 1,
  maxParallel: 1,
  handoffMs: 1500,
  supervisor: { backoffBaseMs: 100, backoffCapMs: 400, crashLoopDeaths: 50 },
  limits: { enabled: false },
  quota: { intervalMs: 1000 },
};

export interface CounterImage {
  tar: string;
  digest: string;
  signature: string;
}

/** An enrolled cluster whose agents run the reconciler; children are agents in their own process. */
/** Settings every agent of a LoopCluster gets on top of FAST_GOSSIP and LOOP_OPTIONS. */
export interface LoopClusterSettings {
  gossip?: { heartbeatAcks?: boolean };
  membership?: { swim: boolean; params?: Partial<SwimParams> };
  reconciler?: ReconcilerOptions;
}

export class LoopCluster extends EnrolledCluster {
  readonly children = new Map<string, ChildProcess>();
  private image: CounterImage | null = null;
  private readonly nodeDirs: string[] = [];

  constructor(private readonly settings: LoopClusterSettings = {}) {
    super();
  }

  async startAgent(
    node: EnrolledNode,
    bootstrap: string[] = [],
    options: ReconcilerOptions = {},
  ): Promise<NodeAgent> {
    const agent = await NodeAgent.create({
      org: ORG_NAME,
      nodeId: node.nodeId,
      dataDir: node.dataDir,
      logger: silentLogger(),
      trust: { bundle: node.bundle },
      gossip: {
        ...FAST_GOSSIP,
        ...this.settings.gossip,
        privateKey: node.identity.libp2pPrivateKey,
        bootstrap,
      },
      reconciler: { ...LOOP_OPTIONS, ...this.settings.reconciler, ...options },
      ...(this.settings.membership ? { membership: this.settings.membership } : {}),
    });
    await agent.start();
    this.agents.set(node.nodeId, agent);
    return agent;
  }

  /**
   * Enrolls `ids`, starts the first as an in-process agent and registers the
   * others' records with it (as `ca sign --socket` does); the others get its
   * address as their seed and are the caller's to start.
   */
  async enrollAround(
    ids: readonly string[],
    nodes: Map<string, EnrolledNode>,
  ): Promise<{ first: NodeAgent; seed: string }> {
    const [firstId, ...rest] = ids;
    if (firstId === undefined) throw new Error('enrollAround needs at least one node id');
    const a = await this.enroll(firstId);
    nodes.set(a.nodeId, a);
    const first = await this.startAgent(a);
    const seed = first.gossip.multiaddrs()[0]!;
    for (const id of rest) {
      const node = await this.enroll(id, [seed]);
      first.enrollment.put(node.bundle.record);
      nodes.set(id, node);
    }
    return { first, seed };
  }

  /**
   * The usual start of a loop test: every node of `ids` enrolled and started
   * in this process around the first, all hearing each other, and the
   * counter image imported on the first (others fetch it from there).
   */
  async startMesh(ids: readonly string[], nodes: Map<string, EnrolledNode>): Promise<NodeAgent> {
    const { first, seed } = await this.enrollAround(ids, nodes);
    for (const id of ids.slice(1)) await this.startAgent(nodes.get(id)!, [seed]);
    await waitFor(`every agent hears the ${ids.length - 1} others`, () =>
      [...this.agents.values()].every((a) => a.gossip.detector.nodesIn('alive').length === ids.length - 1),
    );
    await first.reconciler!.images.importFile((await this.counterImage()).tar);
    return first;
  }

  /** Starts `node` as an agent in a child process (so that it can be SIGKILLed like a real crash). */
  async startChild(node: EnrolledNode, bootstrap: string[]): Promise<{ addrs: string[] }> {
    const configFile = join(this.root, `${node.nodeId}-child.json`);
    await writeFile(
      configFile,
      JSON.stringify({
        org: ORG_NAME,
        nodeId: node.nodeId,
        dataDir: node.dataDir,
        bundle: node.bundle,
        privateKey: Buffer.from(nodeKeyToBytes(node.identity.libp2pPrivateKey)).toString('base64'),
        bootstrap,
        gossip: { ...FAST_GOSSIP, ...this.settings.gossip },
        reconciler: { ...LOOP_OPTIONS, ...this.settings.reconciler },
        membership: this.settings.membership,
      }),
    );
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, configFile], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.children.set(node.nodeId, child);
    return new Promise((resolve, reject) => {
      let buffered = '';
      const timer = setTimeout(() => reject(new Error(`child agent ${node.nodeId} did not start`)), 60_000);
      child.stdout?.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const newline = buffered.indexOf('\n');
        if (newline < 0) return;
        clearTimeout(timer);
        resolve(JSON.parse(buffered.slice(0, newline)) as { addrs: string[] });
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`child agent ${node.nodeId} exited early (${code ?? signal})`));
      });
    });
  }

  /** SIGKILL: the agent dies at once; its services (own process groups) live on as orphans. */
  async crashChild(nodeId: string): Promise<void> {
    const child = this.children.get(nodeId);
    this.children.delete(nodeId);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /** SIGTERM: a graceful agent stop (services released). */
  async stopChild(nodeId: string): Promise<void> {
    const child = this.children.get(nodeId);
    this.children.delete(nodeId);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  }

  override async close(): Promise<void> {
    await Promise.allSettled([...this.children.keys()].map((id) => this.stopChild(id)));
    // Services a crashed child left behind (its successor normally reaps them).
    for (const node of this.nodeDirs) killRecordedServices(node);
    await super.close();
  }

  override async enroll(
    nodeId: string,
    seedPeers: string[] = [],
    role?: EnrollmentRole,
  ): Promise<EnrolledNode> {
    const node = await super.enroll(nodeId, seedPeers, role);
    this.nodeDirs.push(node.dataDir);
    return node;
  }

  /** The example counter's image, built and signed by the org CA (once per cluster). */
  async counterImage(): Promise<CounterImage> {
    if (this.image === null) {
      const tar = join(this.root, 'counter.tar');
      const { digest } = await buildImage(join(COUNTER_DIR, 'image'), tar);
      this.image = { tar, digest, signature: signImageDigest(this.org.caPrivateKey, digest) };
    }
    return this.image;
  }

  /** The example counter's manifest as a spec, counting every 0.1 s, stopping within 2 s. */
  async counterSpec(name: string, overrides: Partial<WorkloadSpecDraft> = {}): Promise<WorkloadSpecDraft> {
    const image = await this.counterImage();
    const { manifest } = await loadManifest(join(COUNTER_DIR, 'manifest.toml'));
    const spec = manifestToSpec(
      { ...manifest, name },
      { imageDigest: image.digest, imageSignature: image.signature },
    );
    return { ...spec, env: { COUNTER_INTERVAL: '0.1' }, stopTimeoutMs: 2000, ...overrides };
  }
}

/** Kills the services recorded in a data dir's pid files (cleanup after crash tests). */
function killRecordedServices(dataDir: string): void {
  let names: string[] = [];
  try {
    names = readdirSync(join(dataDir, 'services'));
  } catch {
    return;
  }
  for (const name of names) {
    try {
      const record = JSON.parse(
        readFileSync(join(dataDir, 'services', name, 'supervise', 'pid'), 'utf8'),
      ) as {
        pid: number;
      };
      process.kill(-record.pid, 'SIGKILL');
    } catch {
      // no record, or already gone
    }
  }
}

/** A workload name whose rendezvous order over `nodeIds` starts with `first` (then `second`, if given). */
export function nameRankedFirst(prefix: string, nodeIds: string[], first: string, second?: string): string {
  for (let i = 0; i < 10_000; i++) {
    const name = `${prefix}-${i}`;
    const ranked = rankNodes(name, nodeIds);
    if (ranked[0] === first && (second === undefined || ranked[1] === second)) return name;
  }
  throw new Error(`no name ranks ${first} first`);
}

/** Every node's entry for `workload` as `agent` sees it. */
export function entriesOf(agent: NodeAgent, workload: string): Map<string, ObservedStatus> {
  const out = new Map<string, ObservedStatus>();
  for (const [nodeId, statuses] of agent.observed.listAll()) {
    const status = statuses.get(workload);
    if (status) out.set(nodeId, status);
  }
  return out;
}

/** Node ids whose entry for `workload` is `phase`, as `agent` sees it. */
export function nodesIn(agent: NodeAgent, workload: string, phase: ObservedStatus['phase']): string[] {
  return [...entriesOf(agent, workload)].filter(([, s]) => s.phase === phase).map(([nodeId]) => nodeId);
}

export async function readCount(dataDir: string, workload: string): Promise<number> {
  const text = await readFile(join(dataDir, 'services', workload, 'state', 'count'), 'utf8').catch(() => '');
  const value = Number.parseInt(text.trim(), 10);
  return Number.isFinite(value) ? value : -1;
}

/** Waits until `agent` sees `workload` running on exactly one node and returns that node. */
export async function waitRunningOnOne(
  agent: NodeAgent,
  workload: string,
  timeoutMs = 60_000,
): Promise<string> {
  let running: string[] = [];
  await waitFor(
    `${workload} running on exactly one node (as ${agent.nodeId} sees it)`,
    () => {
      running = nodesIn(agent, workload, 'running');
      return running.length === 1;
    },
    timeoutMs,
  );
  return running[0]!;
}
