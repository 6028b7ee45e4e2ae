import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../../src/cli/api-client.js';
import { waitFor } from './wait.js';

/** The real `silo` binary (bin/silo.js, running the built bundle). */
export const BIN = fileURLToPath(new URL('../../bin/silo.js', import.meta.url));

/** Output kept per agent: enough for a failure message, bounded for long runs. */
const LOG_LIMIT = 256 * 1024;

/** A `silo agent` child process and its control API. */
export interface AgentProcess {
  child: ChildProcess;
  socketPath: string;
  client: ApiClient;
  /** Resolves with the exit code once the process is gone (-1: killed by a signal). */
  exited: Promise<number | null>;
  /** undefined while running; -1 when killed by a signal. */
  exitCode: () => number | null | undefined;
  /** Its stdout and stderr (the last LOG_LIMIT bytes). */
  log: () => string;
  /** SIGTERM, SIGKILL after 20 s; resolves with the exit code once the process is gone. */
  stop: () => Promise<number | null>;
}

export interface SpawnAgentOptions {
  configFile: string;
  socketPath: string;
  /** A command the agent runs under (e.g. `nsenter --net=...  --`); it must exec the agent, not fork it. */
  wrapper?: readonly string[];
  /** The agent's whole environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

/** Starts `silo agent --config <file>` (the one way tests run agent processes); does not wait for it. */
export function spawnAgentProcess(options: SpawnAgentOptions): AgentProcess {
  const command = [
    ...(options.wrapper ?? []),
    process.execPath,
    BIN,
    'agent',
    '--config',
    options.configFile,
  ];
  const child = spawn(command[0] as string, command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: options.env ?? process.env,
  });
  let log = '';
  const append = (chunk: Buffer): void => {
    log += chunk.toString();
    if (log.length > LOG_LIMIT) log = log.slice(-LOG_LIMIT / 2);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code, signal) => {
      exitCode = code ?? (signal ? -1 : null);
      resolve(exitCode);
    });
  });
  let stopping: Promise<number | null> | null = null;
  return {
    child,
    socketPath: options.socketPath,
    client: new ApiClient({ socketPath: options.socketPath }),
    exited,
    exitCode: () => exitCode,
    log: () => log,
    stop: () => {
      stopping ??= (async () => {
        if (exitCode === undefined) child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        const code = await exited;
        clearTimeout(timer);
        return code;
      })();
      return stopping;
    },
  };
}

/**
 * Waits for the agent's control API; an agent that exits first fails the wait
 * at once. On failure the agent is stopped and the error carries its last log lines.
 */
export async function waitForAgentApi(agent: AgentProcess, what = 'the agent'): Promise<void> {
  let exited = false;
  try {
    await waitFor(
      `${what} to serve its API`,
      async () => {
        if (agent.exitCode() !== undefined) {
          exited = true;
          return true;
        }
        await agent.client.request('GET', '/v1/status', { timeoutMs: 2000 });
        return true;
      },
      60_000,
    );
    if (exited) throw new Error(`${what} exited with ${agent.exitCode()} before serving its API`);
  } catch (err) {
    await agent.stop();
    throw new Error(`${(err as Error).message}\n${agent.log().split('\n').slice(-30).join('\n')}`);
  }
}
