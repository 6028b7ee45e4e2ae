import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as toToml } from 'smol-toml';
import type { CliIo } from '../../src/cli/context.js';
import { freeLoopbackPorts } from '../../src/cli/demo/free-port.js';
import { main } from '../../src/cli/main.js';
import { type AgentProcess, BIN, spawnAgentProcess, waitForAgentApi } from '../helpers/agent-process.js';
import { waitFor as sharedWaitFor, type Truthy } from '../helpers/wait.js';

export { type AgentProcess, BIN } from '../helpers/agent-process.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function tempDir(prefix = 'silo-cli-'): Promise<{ dir: string; remove: () => Promise<void> }> {
  // Short paths: a unix socket path must stay under 108 bytes.
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Runs the CLI in this process (same code path as bin/silo.js) with captured output. */
export async function silo(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    out: (text) => {
      stdout += text;
    },
    err: (text) => {
      stderr += text;
    },
    isTTY: false,
  };
  const code = await main(['node', 'silo', ...args], io, env);
  return { code, stdout, stderr };
}

/** Runs the real `silo` binary in a child process. */
export function siloProcess(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 120_000,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, SILO_SOCKET: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

/** Starts `silo agent --config <file>` as a child process (log level warn) and waits for its API. */
export async function startAgentProcess(configFile: string, socketPath: string): Promise<AgentProcess> {
  const agent = spawnAgentProcess({
    configFile,
    socketPath,
    env: { ...process.env, SILO_LOG_LEVEL: 'warn' },
  });
  await waitForAgentApi(agent);
  return agent;
}

export function agentToml(config: Record<string, unknown>): string {
  return toToml(config);
}

/** The shared waitFor, polling every 250 ms: CLI tests poll agents over their API. */
export function waitFor<T>(what: string, check: () => Promise<T>, timeoutMs = 60_000): Promise<Truthy<T>> {
  return sharedWaitFor(what, check, timeoutMs, 250);
}

/** One `silo agent` child process of a test cluster and the files it runs on. */
export interface ClusterNode {
  id: string;
  dir: string;
  identityDir: string;
  socket: string;
  config: string;
  port: number;
  peerId: string;
  agent?: AgentProcess;
}

export interface EnrolledAgentsOptions {
  /** Holds the org (`<dir>/org`) and one directory per node (`<dir>/<id>`). */
  dir: string;
  org: string;
  cidr: string;
  ids: string[];
  /** Extra `silo node init` flags of node `index` (capacity, labels). */
  nodeInitArgs: (index: number) => string[];
  /** Config sections of node `index`, merged key by key over the defaults (gossip timings, api socket, log level). */
  config?: (index: number, extraPorts: number[]) => Record<string, Record<string, unknown>>;
  /** Free loopback ports to pick besides the nodes' own (e.g. a TCP API), drawn in the same call so none collide. */
  extraPorts?: number;
}

export interface EnrolledAgents {
  orgDir: string;
  /** What `silo org init --json` printed. */
  orgInit: RunResult;
  nodes: ClusterNode[];
  /** What `silo ca sign --json` printed for each node after the first (signed with the first as seed, registered through its API). */
  laterSigns: RunResult[];
  extraPorts: number[];
}

/**
 * An org and its agents set up with the CLI's own commands, as an operator
 * would: `org init`, `node init` per node, `ca sign` of the first node, which
 * starts alone; every later node is signed with the first as its seed and
 * registered through the first's API, then started. Each step's exit code is
 * asserted; waiting for liveness and convergence is the caller's business.
 */
/**
 * One enrolled agent process (node id `n1`) in a temporary directory, for
 * tests of what a single agent's CLI and API show; stop() stops it and
 * removes the directory.
 */
export async function startSingleAgent(options: {
  prefix: string;
  org: string;
  cidr: string;
  config?: Record<string, Record<string, unknown>>;
}): Promise<{ node: ClusterNode; stop: () => Promise<void> }> {
  const made = await tempDir(options.prefix);
  try {
    const cluster = await startEnrolledAgents({
      dir: made.dir,
      org: options.org,
      cidr: options.cidr,
      ids: ['n1'],
      nodeInitArgs: () => [],
      ...(options.config ? { config: () => options.config ?? {} } : {}),
    });
    const node = cluster.nodes[0]!;
    return {
      node,
      stop: async () => {
        await node.agent?.stop();
        await made.remove();
      },
    };
  } catch (err) {
    await made.remove();
    throw err;
  }
}

export async function startEnrolledAgents(options: EnrolledAgentsOptions): Promise<EnrolledAgents> {
  const orgDir = join(options.dir, 'org');
  const orgInit = await silo([
    'org',
    'init',
    '--dir',
    orgDir,
    '--name',
    options.org,
    '--cidr',
    options.cidr,
    '--json',
  ]);
  assertExit(orgInit, 'org init');
  const ports = await freeLoopbackPorts(options.ids.length + (options.extraPorts ?? 0));
  const extraPorts = ports.slice(options.ids.length);
  const nodes: ClusterNode[] = [];
  for (const [i, id] of options.ids.entries()) {
    const dir = join(options.dir, id);
    const identityDir = join(dir, 'identity');
    const port = ports[i]!;
    const endpoint = `/ip4/127.0.0.1/tcp/${port}`;
    const init = await silo([
      'node',
      'init',
      '--dir',
      identityDir,
      '--id',
      id,
      '--endpoint',
      endpoint,
      ...options.nodeInitArgs(i),
      '--json',
    ]);
    assertExit(init, `node init ${id}`);
    const { peerId } = JSON.parse(init.stdout) as { peerId: string };
    const config = join(dir, 'agent.toml');
    const socket = join(dir, 'silo.sock');
    const defaults: Record<string, Record<string, unknown>> = {
      node: { id, data_dir: dir },
      gossip: { listen: [endpoint], heartbeat: '500ms', suspect_after: '2s', dead_after: '8s' },
      services: { fence_after: '4s' },
      api: { socket },
      log: { level: 'warn', pretty: 'never' },
    };
    const sections = { ...defaults };
    for (const [name, values] of Object.entries(options.config?.(i, extraPorts) ?? {})) {
      sections[name] = { ...defaults[name], ...values };
    }
    await writeFile(config, agentToml({ org: options.org, ...sections }));
    nodes.push({ id, dir, identityDir, socket, config, port, peerId });
  }
  try {
    return await enrollAndStart(orgDir, nodes, orgInit, extraPorts);
  } catch (err) {
    // The caller never sees these nodes, so nobody else would stop them.
    for (const node of nodes) await node.agent?.stop();
    throw err;
  }
}

async function enrollAndStart(
  orgDir: string,
  nodes: ClusterNode[],
  orgInit: RunResult,
  extraPorts: number[],
): Promise<EnrolledAgents> {
  const first = nodes[0]!;
  const sign = (node: ClusterNode, extra: string[]): Promise<RunResult> =>
    silo([
      'ca',
      'sign',
      '--org',
      orgDir,
      join(node.identityDir, 'request.json'),
      '-o',
      join(node.identityDir, 'enrollment.json'),
      ...extra,
    ]);
  assertExit(await sign(first, []), `ca sign ${first.id}`);
  first.agent = await startAgentProcess(first.config, first.socket);
  const seed = `/ip4/127.0.0.1/tcp/${first.port}/p2p/${first.peerId}`;
  const laterSigns: RunResult[] = [];
  for (const node of nodes.slice(1)) {
    const signed = await sign(node, ['--seed', seed, '--socket', first.socket, '--json']);
    assertExit(signed, `ca sign ${node.id}`);
    laterSigns.push(signed);
    node.agent = await startAgentProcess(node.config, node.socket);
  }
  return { orgDir, orgInit, nodes, laterSigns, extraPorts };
}

function assertExit(result: RunResult, what: string): void {
  if (result.code !== 0) throw new Error(`silo ${what} exited ${result.code}: ${result.stderr}`);
}

/**
 * The keys that occur more than once at the top level of a JSON object text
 * (JSON.parse keeps the last and hides the others): pino writes a child
 * logger's bindings and a call's fields side by side, so a field named like
 * a binding ("node") would say two things under one name.
 */
export function duplicateTopLevelKeys(line: string): string[] {
  const seen = new Set<string>();
  const duplicates: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') {
      let end = i + 1;
      while (end < line.length && line[end] !== '"') end += line[end] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = line.slice(i + 1, end);
        if (seen.has(key)) duplicates.push(key);
        seen.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1 && c === '{';
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return duplicates;
}
