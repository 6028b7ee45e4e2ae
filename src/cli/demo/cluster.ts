import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify as toToml } from 'smol-toml';
import type { WorkloadRow } from '../../agent/api/views.js';
import { NODE_FILES } from '../../identity/node-identity.js';
import { packageRoot } from '../../util/package-root.js';
import { sleep } from '../../util/sleep.js';
import { ApiClient } from '../api-client.js';
import { signRequest } from '../commands/ca.js';
import { initNode } from '../commands/node.js';
import { initOrg } from '../commands/org.js';
import type { StatusResponse } from '../commands/query.js';
import { freeLoopbackPorts } from './free-port.js';

const binPath = (): string => join(packageRoot(), 'bin', 'silo.js');

export interface DemoNode {
  nodeId: string;
  dir: string;
  identityDir: string;
  configFile: string;
  socketPath: string;
  logFile: string;
  port: number;
  peerId: string;
  /** The libp2p address other nodes dial: /ip4/127.0.0.1/tcp/<port>/p2p/<peer id>. */
  addr: string;
  client: ApiClient;
  child: ChildProcess | null;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
}

export interface NodeSnapshot {
  nodeId: string;
  up: boolean;
  error: string | null;
  status: StatusResponse | null;
  /** How many of the other answering nodes see this one alive. */
  seenAliveBy: number;
  /** How many other nodes answered. */
  observers: number;
}

export interface ClusterSnapshot {
  at: number;
  nodes: NodeSnapshot[];
  /** Up, and alive in the view of every other node that answered. */
  alive: number;
  /** Every node answers and all hold the same three document digests. */
  converged: boolean;
  workloads: WorkloadRow[] | null;
}

export interface DemoClusterOptions {
  dir: string;
  nodes: number;
  org?: string;
}

/**
 * A local cluster for `silo demo` and end-to-end tests: an org, N enrolled
 * nodes with fixed loopback ports, each agent a separate `silo agent`
 * process with its data, identity, socket and log under `dir`.
 */
export class DemoCluster {
  readonly org: string;
  readonly orgDir: string;

  private constructor(
    readonly dir: string,
    org: string,
    readonly nodes: DemoNode[],
  ) {
    this.org = org;
    this.orgDir = join(dir, 'org');
  }

  /** org init, then node init + ca sign for every node (seed peers: the nodes before it), and agent configs. */
  static async create(options: DemoClusterOptions): Promise<DemoCluster> {
    const org = options.org ?? 'demo';
    const orgDir = join(options.dir, 'org');
    await initOrg({ dir: orgDir, name: org, cidr: '10.42.0.0/16' });
    const ports = await freeLoopbackPorts(options.nodes);
    const nodes: DemoNode[] = [];
    for (let i = 0; i < options.nodes; i++) {
      const nodeId = `node-${i + 1}`;
      const dir = join(options.dir, nodeId);
      const identityDir = join(dir, 'identity');
      const port = ports[i]!;
      const listen = `/ip4/127.0.0.1/tcp/${port}`;
      const init = await initNode({
        dir: identityDir,
        id: nodeId,
        endpoints: [listen],
        cpus: 1,
        memoryMb: 512,
        scratchMb: 1024,
        labels: { demo: 'true' },
      });
      await signRequest({
        orgDir,
        requestFile: init.requestFile,
        out: join(identityDir, NODE_FILES.enrollment),
        seeds: nodes.map((n) => n.addr),
      });
      const socketPath = join(dir, 'silo.sock');
      const configFile = join(dir, 'agent.toml');
      await writeFile(configFile, agentToml({ org, nodeId, dir, identityDir, listen, socketPath }));
      nodes.push({
        nodeId,
        dir,
        identityDir,
        configFile,
        socketPath,
        logFile: join(dir, 'agent.log'),
        port,
        peerId: init.peerId,
        addr: `${listen}/p2p/${init.peerId}`,
        client: new ApiClient({ socketPath }),
        child: null,
        exit: null,
      });
    }
    return new DemoCluster(options.dir, org, nodes);
  }

  /**
   * Starts the first node, registers every other node's signed record with
   * it (so it admits them: a node accepts connections only from enrolled
   * peers), then starts the others. Resolves when every API answers.
   */
  async start(onStep: (text: string) => void = () => {}): Promise<void> {
    const [first, ...rest] = this.nodes;
    if (!first) return;
    onStep(`starting ${first.nodeId}`);
    this.spawn(first);
    await this.waitForApi(first);
    for (const node of rest) {
      const bundle = JSON.parse(await readFile(join(node.identityDir, NODE_FILES.enrollment), 'utf8')) as {
        record: unknown;
      };
      await first.client.request('POST', '/v1/enrollments', { json: bundle.record, timeoutMs: 30_000 });
    }
    if (rest.length === 0) return;
    onStep(`starting ${rest.map((n) => n.nodeId).join(', ')}`);
    for (const node of rest) this.spawn(node);
    await Promise.all(rest.map((node) => this.waitForApi(node)));
  }

  /** Polls until every node is alive to all others and the digests agree; false on timeout. */
  async waitConverged(
    timeoutMs: number,
    onProgress: (snapshot: ClusterSnapshot) => void = () => {},
  ): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const snapshot = await this.snapshot();
      onProgress(snapshot);
      if (snapshot.converged && snapshot.alive === this.nodes.length) return true;
      if (Date.now() > deadline) return false;
      this.assertRunning();
      await sleep(500);
    }
  }

  async snapshot(): Promise<ClusterSnapshot> {
    const statuses = await Promise.all(
      this.nodes.map(async (node) => {
        try {
          return {
            node,
            status: await node.client.request<StatusResponse>('GET', '/v1/status', { timeoutMs: 5000 }),
          };
        } catch (err) {
          return { node, status: null, error: (err as Error).message };
        }
      }),
    );
    const answering = statuses.filter((s) => s.status !== null);
    const nodes: NodeSnapshot[] = statuses.map(({ node, status, error }) => {
      const observers = answering.filter((o) => o.node !== node);
      const seenAliveBy = observers.filter((o) =>
        o.status?.members.some((m) => m.nodeId === node.nodeId && m.state === 'alive'),
      ).length;
      return {
        nodeId: node.nodeId,
        up: status !== null,
        error: error ?? null,
        status,
        seenAliveBy,
        observers: observers.length,
      };
    });
    const alive = nodes.filter((n) => n.up && n.seenAliveBy === n.observers).length;
    const digestSets = new Set(answering.map((s) => JSON.stringify(s.status?.digests)));
    const converged = answering.length === this.nodes.length && digestSets.size === 1;
    let workloads: WorkloadRow[] | null = null;
    const reader = answering[0]?.node;
    if (reader) {
      try {
        workloads = (
          await reader.client.request<{ workloads: WorkloadRow[] }>('GET', '/v1/workloads', {
            timeoutMs: 5000,
          })
        ).workloads;
      } catch {
        workloads = null;
      }
    }
    return { at: Date.now(), nodes, alive, converged, workloads };
  }

  /** SIGTERM to every agent (they stop cleanly), SIGKILL to any still running after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    await Promise.all(
      this.nodes.map(async (node) => {
        const child = node.child;
        if (!child || node.exit !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  private spawn(node: DemoNode): void {
    const log = openSync(node.logFile, 'a');
    try {
      const child = spawn(process.execPath, [binPath(), 'agent', '--config', node.configFile], {
        stdio: ['ignore', log, log],
        env: agentEnv(process.env),
      });
      node.child = child;
      node.exit = null;
      child.once('exit', (code, signal) => {
        node.exit = { code, signal };
      });
    } finally {
      closeSync(log);
    }
  }

  private async waitForApi(node: DemoNode, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (node.exit !== null) throw new Error(await this.exitMessage(node));
      try {
        await node.client.request('GET', '/v1/status', { timeoutMs: 2000 });
        return;
      } catch {
        if (Date.now() > deadline)
          throw new Error(
            `${node.nodeId}: API did not answer within ${timeoutMs / 1000}s (log: ${node.logFile})`,
          );
        await sleep(200);
      }
    }
  }

  private assertRunning(): void {
    const dead = this.nodes.find((n) => n.exit !== null);
    if (dead) throw new Error(`${dead.nodeId} exited (code ${dead.exit?.code}); log: ${dead.logFile}`);
  }

  private async exitMessage(node: DemoNode): Promise<string> {
    const log = await readFile(node.logFile, 'utf8').catch(() => '');
    const tail = log.trim().split('\n').slice(-5).join('\n  ');
    return `${node.nodeId} exited (code ${node.exit?.code}, signal ${node.exit?.signal}); last log lines:\n  ${tail}`;
  }
}

function agentToml(options: {
  org: string;
  nodeId: string;
  dir: string;
  identityDir: string;
  listen: string;
  socketPath: string;
}): string {
  return `# silo demo node (written by \`silo demo\`)\n${toToml({
    org: options.org,
    node: { id: options.nodeId, data_dir: options.dir, identity_dir: options.identityDir },
    gossip: { transport: 'tcp', listen: [options.listen] },
    overlay: { mode: 'none' },
    api: { socket: options.socketPath },
    services: { sandbox: 'auto' },
    log: { level: 'info', pretty: 'never' },
  })}\n`;
}

/** The demo's own config files decide; SILO_<SECTION>_<KEY> overrides meant for a real agent would not apply. */
function agentEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(env).filter(([name]) => !name.startsWith('SILO_') || name === 'SILO_DEBUG'),
  );
}
