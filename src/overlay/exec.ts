import { execa, type ResultPromise } from 'execa';
import { SiloError } from '../util/silo-error.js';

/**
 * Running the system tools the overlay needs (`wg`, `ip`, `wireguard-go`).
 * Every command can target a network namespace: it then runs as
 * `ip netns exec <ns> <argv...>` (tests and the end-to-end suite run each node
 * in its own namespace).
 */

export class CommandError extends SiloError<'command_failed'> {
  constructor(
    /** The full argv that ran, namespace prefix included. */
    readonly argv: readonly string[],
    /** Exit code, or undefined when the process could not start, timed out or died of a signal. */
    readonly exitCode: number | undefined,
    readonly stderr: string,
    detail: string,
  ) {
    super('command_failed', `\`${argv.join(' ')}\` ${detail}${stderr.length > 0 ? `: ${stderr}` : ''}`);
  }
}

export interface RunOptions {
  netns?: string;
  /** Written to the command's stdin (e.g. a private key for `wg pubkey`). */
  input?: string;
  timeoutMs?: number;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; rejects with CommandError unless it exits 0. */
export interface CommandRunner {
  run(argv: readonly string[], options?: RunOptions): Promise<CommandResult>;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const NETNS_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export function withNetns(argv: readonly string[], netns: string | undefined): string[] {
  if (netns === undefined) return [...argv];
  if (!NETNS_NAME.test(netns)) throw new Error(`invalid network namespace name "${netns}"`);
  return ['ip', 'netns', 'exec', netns, ...argv];
}

export class ExecaRunner implements CommandRunner {
  async run(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    const full = withNetns(argv, options.netns);
    const [file, ...args] = full;
    if (file === undefined) throw new Error('empty command');
    const result = await execa(file, args, {
      reject: false,
      timeout: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      ...(options.input !== undefined ? { input: options.input } : { stdin: 'ignore' as const }),
      // Tools print localized messages otherwise; errors are matched and logged in English.
      env: { LC_ALL: 'C' },
    });
    const stdout = String(result.stdout ?? '');
    const stderr = String(result.stderr ?? '').trim();
    if (!result.failed) return { stdout, stderr };
    throw new CommandError(full, result.exitCode, stderr, describeFailure(result));
  }
}

function describeFailure(result: {
  exitCode?: number | undefined;
  timedOut: boolean;
  signal?: string | undefined;
  code?: string | undefined;
}): string {
  if (result.timedOut) return 'timed out';
  if (result.code === 'ENOENT') return 'failed: command not found';
  if (result.exitCode !== undefined) return `exited with code ${result.exitCode}`;
  if (result.signal !== undefined) return `was killed by ${result.signal}`;
  return `failed to run${result.code !== undefined ? ` (${result.code})` : ''}`;
}

export interface DaemonOptions {
  netns?: string;
  env?: Record<string, string>;
}

/** A long-running child (wireguard-go in the foreground), supervised by its owner. */
export function spawnDaemon(argv: readonly string[], options: DaemonOptions = {}): ResultPromise {
  const full = withNetns(argv, options.netns);
  const [file, ...args] = full;
  if (file === undefined) throw new Error('empty command');
  return execa(file, args, {
    reject: false,
    stdin: 'ignore',
    buffer: false,
    env: { LC_ALL: 'C', ...options.env },
  });
}

/** True when `name` is an executable on PATH (used to pick kernel vs userspace WireGuard, and by tests). */
export async function commandExists(name: string): Promise<boolean> {
  const result = await execa('sh', ['-c', 'command -v "$1"', 'sh', name], { reject: false, stdin: 'ignore' });
  return !result.failed && String(result.stdout).trim().length > 0;
}
