import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { NodeRow } from '../../src/agent/api/views.js';
import type { ConnectionInfo } from '../../src/gossip/index.js';
import { ExecaRunner } from '../../src/overlay/exec.js';
import { Wg, type WgDump } from '../../src/overlay/wg.js';
import { agentToml, silo, waitFor } from '../cli/helpers.js';
import { type AgentProcess, spawnAgentProcess, waitForAgentApi } from '../helpers/agent-process.js';

/**
 * A lab of `silo agent` processes for end-to-end tests, each in its own
 * network namespace, joined by veth pairs to a bridge in a "hub" namespace
 * (underlay 10.231.30.0/24, only inside namespaces the test makes), each with
 * its own WireGuard interface. Set up as an operator would (`org init`,
 * `node init`, `ca sign`), torn down completely by `Lab.cleanUp`, also after
 * a failure. Used by test/e2e/overlay-cluster.test.ts and
 * test/e2e/service-address-cluster.test.ts.
 */

export const RUN = String(process.pid);
export const NS_PREFIX = `silo-e2e-${RUN}`;
export const BRIDGE = 'br0';
export const UNDERLAY = (index: number): string => `10.231.30.${index}`;
export const WG_PORT = 51820;
export const GOSSIP_PORT = 7946;

export const runner = new ExecaRunner();
export const wg = new Wg({ runner });

export interface Status {
  nodeId: string;
  peerId: string;
  peers: number;
  addrs: string[];
  connections: ConnectionInfo[];
  members: { nodeId: string }[];
  revoked: { revokedAt: number; reason: string } | null;
}

/** An agent process in a namespace. */
export type AgentProc = AgentProcess & { ns: string };

export interface ClusterNode {
  id: string;
  index: number;
  ns: string;
  /** WireGuard interface (unique per run: wireguard-go's UAPI sockets are not namespaced). */
  wgInterface: string;
  dir: string;
  socket: string;
  peerId: string;
  wgPublicKey: string;
  overlayIp: string;
  agent: AgentProc;
}

/** Everything the test made, torn down in reverse by `cleanUp` even after a failure. */
export class Lab {
  readonly namespaces: string[] = [];
  readonly agents: AgentProc[] = [];
  /** Other helper processes (killed outright at cleanup). */
  readonly processes: ChildProcess[] = [];
  readonly wgInterfaces: string[] = [];
  readonly nodes: ClusterNode[] = [];
  readonly hub: string;

  /** `tag` (one letter) keeps the namespaces and interfaces of two labs of one run apart; `org` is the agents' org name. */
  constructor(
    readonly dir: string,
    readonly tag: string,
    readonly org: string,
  ) {
    this.hub = this.namespace('hub');
  }

  namespace(name: string): string {
    return `${NS_PREFIX}-${this.tag}-${name}`;
  }

  /** At most 15 characters; unique per run and lab, since wireguard-go's UAPI sockets are shared by all namespaces. */
  interfaceName(nodeId: string): string {
    return `se${RUN}${this.tag}${nodeId.replace(/[^a-z0-9]/g, '').slice(-3)}`.slice(0, 15);
  }

  async createHub(): Promise<void> {
    await this.createNamespace(this.hub);
    await ip(['link', 'add', BRIDGE, 'type', 'bridge'], this.hub);
    await ip(['link', 'set', BRIDGE, 'up'], this.hub);
  }

  /** A namespace with `eth0` = UNDERLAY(index)/24, its other end on the hub's bridge. */
  async createHost(ns: string, index: number): Promise<void> {
    await this.createNamespace(ns);
    const hubEnd = `h${index}`;
    await ip(['link', 'add', hubEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns], this.hub);
    await ip(['link', 'set', hubEnd, 'master', BRIDGE], this.hub);
    await ip(['link', 'set', hubEnd, 'up'], this.hub);
    await ip(['address', 'add', `${UNDERLAY(index)}/24`, 'dev', 'eth0'], ns);
    await ip(['link', 'set', 'eth0', 'up'], ns);
  }

  private async createNamespace(ns: string): Promise<void> {
    await runner.run(['ip', 'netns', 'add', ns]);
    this.namespaces.push(ns);
    await ip(['link', 'set', 'lo', 'up'], ns);
  }

  /**
   * Our wireguard-go processes, as "pid argv" (matched by this run's interface names only: others
   * may run theirs). Read from /proc rather than with pgrep, which needs one more package.
   */
  async leftoverWireguardGo(): Promise<string[]> {
    const found: string[] = [];
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const argv = await readFile(`/proc/${entry}/cmdline`, 'utf8')
        .then((text) => text.split('\0').filter((arg) => arg !== ''))
        .catch(() => [] as string[]); // exited meanwhile
      const name = argv.at(-1);
      if (argv[0]?.endsWith('wireguard-go') && name !== undefined && this.wgInterfaces.includes(name)) {
        found.push(`${entry} ${argv.join(' ')}`);
      }
    }
    return found;
  }

  async cleanUp(t: TestContext): Promise<void> {
    const problems: string[] = [];
    const attempt = async (what: string, action: () => Promise<unknown>): Promise<void> => {
      await action().catch((err: unknown) => problems.push(`${what}: ${(err as Error).message}`));
    };
    // Agents first: a clean stop takes their WireGuard interface and wireguard-go down with them.
    await Promise.all(this.agents.map((agent) => attempt(`stopping agent in ${agent.ns}`, agent.stop)));
    for (const child of this.processes) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await exited;
      }
    }
    // SILO_E2E_LOG_DIR=<dir> keeps every agent's log (JSON lines) for a look after the run.
    const logDir = process.env.SILO_E2E_LOG_DIR;
    if (logDir) {
      await attempt(`saving logs to ${logDir}`, async () => {
        await mkdir(logDir, { recursive: true });
        for (const node of this.nodes) await writeFile(join(logDir, `${node.id}.log`), node.agent.log());
      });
    }
    // An agent that died without a clean stop leaves its wireguard-go behind. SIGTERM first: only
    // then does wireguard-go remove its UAPI socket; SIGKILL what is still there after a while.
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      for (const line of await this.leftoverWireguardGo()) {
        const pid = Number(line.split(' ')[0]);
        await attempt(`${signal} to ${line}`, async () => process.kill(pid, signal));
      }
      const gone = await waitFor(
        'our wireguard-go processes to exit',
        async () => (await this.leftoverWireguardGo()).length === 0,
        5000,
      ).catch(() => false);
      if (gone) break;
    }
    // A SIGKILLed wireguard-go leaves its socket file; it is ours (the name carries our pid).
    for (const name of this.wgInterfaces) {
      await attempt(`removing the UAPI socket of ${name}`, () =>
        rm(`/var/run/wireguard/${name}.sock`, { force: true }),
      );
    }
    for (const ns of [...this.namespaces].reverse()) {
      await attempt(`deleting namespace ${ns}`, () => runner.run(['ip', 'netns', 'delete', ns]));
    }
    await attempt(`removing ${this.dir}`, () => rm(this.dir, { recursive: true, force: true }));

    // Verify that nothing is left.
    const listed = (await runner.run(['ip', 'netns', 'list'])).stdout;
    const namespacesLeft = listed.split('\n').filter((line) => line.startsWith(this.namespace('')));
    if (namespacesLeft.length > 0) problems.push(`namespaces left: ${namespacesLeft.join(', ')}`);
    const wgLeft = await this.leftoverWireguardGo();
    if (wgLeft.length > 0) problems.push(`wireguard-go left: ${wgLeft.join('; ')}`);
    const socketsLeft = this.wgInterfaces.filter((name) => existsSync(`/var/run/wireguard/${name}.sock`));
    if (socketsLeft.length > 0) problems.push(`UAPI sockets left: ${socketsLeft.join(', ')}`);
    if (existsSync(this.dir)) problems.push(`${this.dir} left`);
    if (problems.length > 0) {
      for (const problem of problems) t.diagnostic(`cleanup: ${problem}`);
      throw new Error(`cleanup incomplete: ${problems.join('; ')}`);
    }
  }

  dumpLogs(t: TestContext): void {
    for (const node of this.nodes) {
      const tail = node.agent.log().split('\n').slice(-40).join('\n');
      t.diagnostic(`--- ${node.id} (${node.ns}) exit=${String(node.agent.exitCode())} log tail ---\n${tail}`);
    }
  }
}

export function ip(args: string[], ns: string): Promise<{ stdout: string }> {
  return runner.run(['ip', '-n', ns, ...args]);
}

/** Runs `silo ...` in this process (the CLI's own code path) and returns its --json output. */
export async function siloJson<T>(args: string[]): Promise<T> {
  const result = await silo([...args, '--json']);
  assert.equal(result.code, 0, `silo ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

/**
 * `nsenter --net=/run/netns/<ns> node bin/silo.js agent --config <file>`:
 * only the network namespace changes. `ip netns exec` would also give the
 * agent a private mount namespace, in which the `ip netns add` of its service
 * namespaces (src/overlay/service-netns.ts) binds them where nothing else
 * sees them; a systemd unit runs the agent in the host's mount namespace too.
 * nsenter execs the agent (no --fork), so the child's pid is the agent's.
 */
export function spawnAgent(ns: string, configFile: string, socket: string): AgentProc {
  const env: NodeJS.ProcessEnv = {};
  // The agent's config must be what the test wrote, not whatever SILO_* the runner's shell has.
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('SILO_')) env[key] = value;
  const agent = spawnAgentProcess({
    configFile,
    socketPath: socket,
    wrapper: ['nsenter', `--net=/run/netns/${ns}`, '--'],
    env,
  });
  return { ...agent, ns };
}

/** Waits for the agent's control API; stops the agent when it does not come up. */
export function waitForApi(agent: AgentProc): Promise<void> {
  return waitForAgentApi(agent, `the agent in ${agent.ns}`);
}

export function status(node: { agent: AgentProc }): Promise<Status> {
  return node.agent.client.request<Status>('GET', '/v1/status', { timeoutMs: 10_000 });
}

export async function nodeRows(node: ClusterNode): Promise<NodeRow[]> {
  return (await node.agent.client.request<{ nodes: NodeRow[] }>('GET', '/v1/nodes', { timeoutMs: 10_000 }))
    .nodes;
}

export function wgDump(node: ClusterNode): Promise<WgDump> {
  return wg.showDump(node.wgInterface, node.ns);
}

export interface AddNodeOptions {
  lab: Lab;
  id: string;
  index: number;
  orgDir: string;
  /** Overlay multiaddrs of the seed nodes (`ca sign --seed`). */
  seeds: string[];
  /** A running agent to register the signed record with (`ca sign --socket`). */
  registerWith?: string;
  /** Defaults to the WireGuard overlay; the intruder gossips on its underlay address instead. */
  overlay?: boolean;
  overlayIp?: string;
  /** Routes added in the node's namespace before its agent starts. */
  routes?: { to: string; via: string }[];
  /** Keys of the agent's `[services]` section over the defaults (no sandbox, fence_after 2s). */
  services?: Record<string, unknown>;
}

export type PreparedNode = Omit<ClusterNode, 'agent'> & { configFile: string };

/** Namespace, `silo node init`, `silo ca sign` and the agent's config: one node as an operator sets it up. */
export async function prepareNode(options: AddNodeOptions): Promise<PreparedNode> {
  const { lab, id, index } = options;
  const overlay = options.overlay ?? true;
  const ns = lab.namespace(id);
  await lab.createHost(ns, index);
  for (const route of options.routes ?? []) await ip(['route', 'add', route.to, 'via', route.via], ns);
  const dir = join(lab.dir, id);
  const identityDir = join(dir, 'identity');
  await mkdir(dir, { recursive: true });
  const init = await siloJson<{ peerId: string; wgPublicKey: string; requestFile: string }>([
    'node',
    'init',
    '--dir',
    identityDir,
    '--id',
    id,
    '--endpoint',
    `wg://${UNDERLAY(index)}:${WG_PORT}`,
    '--cpus',
    '1',
    '--memory-mb',
    '256',
    '--scratch-mb',
    '64',
  ]);
  const signed = await siloJson<{ overlayIp: string; registered: boolean }>([
    'ca',
    'sign',
    '--org',
    options.orgDir,
    init.requestFile,
    '-o',
    join(identityDir, 'enrollment.json'),
    ...options.seeds.flatMap((seed) => ['--seed', seed]),
    ...(options.overlayIp ? ['--overlay-ip', options.overlayIp] : []),
    ...(options.registerWith ? ['--socket', options.registerWith] : []),
  ]);
  assert.equal(signed.registered, options.registerWith !== undefined);
  const socket = join(dir, 'api.sock');
  const wgInterface = lab.interfaceName(id);
  const configFile = join(dir, 'agent.toml');
  await writeFile(
    configFile,
    agentToml({
      org: lab.org,
      node: { id, data_dir: join(dir, 'data'), identity_dir: identityDir },
      gossip: {
        listen: [`/ip4/${overlay ? '0.0.0.0' : UNDERLAY(index)}/tcp/${GOSSIP_PORT}`],
        heartbeat: '200ms',
        suspect_after: '1s',
        dead_after: '3s',
        sync_interval: '1s',
        sync_grace: '400ms',
      },
      overlay: overlay
        ? { mode: 'wireguard', interface: wgInterface, listen_port: WG_PORT }
        : { mode: 'none' },
      api: { socket },
      services: { sandbox: 'none', fence_after: '2s', ...options.services },
      log: { level: 'info', pretty: 'never' },
    }),
  );
  if (overlay) lab.wgInterfaces.push(wgInterface);
  return {
    id,
    index,
    ns,
    wgInterface,
    dir,
    socket,
    configFile,
    peerId: init.peerId,
    wgPublicKey: init.wgPublicKey,
    overlayIp: signed.overlayIp,
  };
}

/** prepareNode, then `silo agent` in the node's namespace, up once its API answers. */
export async function addNode(options: AddNodeOptions): Promise<ClusterNode> {
  const prepared = await prepareNode(options);
  const agent = spawnAgent(prepared.ns, prepared.configFile, prepared.socket);
  options.lab.agents.push(agent);
  const node: ClusterNode = { ...prepared, agent };
  options.lab.nodes.push(node);
  await waitForApi(agent);
  return node;
}

export function seedOf(node: ClusterNode): string {
  return `/ip4/${node.overlayIp}/tcp/${GOSSIP_PORT}/p2p/${node.peerId}`;
}
