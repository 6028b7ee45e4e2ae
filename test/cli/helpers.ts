import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toToml } from 'smol-toml';
import { ApiClient } from '../../src/cli/api-client.js';
import type { CliIo } from '../../src/cli/context.js';
import { main } from '../../src/cli/main.js';
import { waitFor as sharedWaitFor, type Truthy } from '../helpers/wait.js';

export const BIN = fileURLToPath(new URL('../../bin/silo.js', import.meta.url));

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

export interface AgentProcess {
  child: ChildProcess;
  socketPath: string;
  client: ApiClient;
  log: () => string;
  /** SIGTERM and wait; resolves with the exit code. */
  stop: () => Promise<number | null>;
}

/** Starts `silo agent --config <file>` as a child process and waits for its API. */
export async function startAgentProcess(configFile: string, socketPath: string): Promise<AgentProcess> {
  const child = spawn(process.execPath, [BIN, 'agent', '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SILO_LOG_LEVEL: 'warn' },
  });
  let log = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    log += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    log += chunk.toString();
  });
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      exitCode = code;
      resolve(code);
    }),
  );
  const client = new ApiClient({ socketPath });
  const agent: AgentProcess = {
    child,
    socketPath,
    client,
    log: () => log,
    stop: async () => {
      if (exitCode === undefined) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exitCode !== undefined) throw new Error(`agent exited with ${exitCode}:\n${log}`);
    try {
      await client.request('GET', '/v1/status', { timeoutMs: 2000 });
      return agent;
    } catch {
      if (Date.now() > deadline) {
        await agent.stop();
        throw new Error(`agent API did not come up:\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

export function agentToml(config: Record<string, unknown>): string {
  return toToml(config);
}

/** The shared waitFor, polling every 250 ms: CLI tests poll agents over their API. */
export function waitFor<T>(what: string, check: () => Promise<T>, timeoutMs = 60_000): Promise<Truthy<T>> {
  return sharedWaitFor(what, check, timeoutMs, 250);
}
