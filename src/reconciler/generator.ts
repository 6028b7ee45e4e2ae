import { spawn } from 'node:child_process';
import { SiloError } from '../util/silo-error.js';
import { killQuietly } from './proc.js';
import type { LaunchPlan } from './sandbox.js';

/**
 * The optional MetalOS-style generator: a program from the image run before
 * every start with the runtime config as JSON on stdin. It may write files
 * into RUNTIME_DIRECTORY; a non-zero exit (or a timeout) fails the start, and
 * the reason carries the tail of its stderr.
 */

/** What a generator reads on stdin (documented in docs/services.md). */
export interface RuntimeConfig {
  service: string;
  revision: number;
  nodeId: string | null;
  image: { name: string; digest: string };
  sandbox: 'bubblewrap' | 'none';
  /** The directories as the service will see them. */
  directories: { runtime: string; state: string; cache: string; logs: string };
  env: Record<string, string>;
  args: string[];
  network: 'overlay' | 'host' | 'none';
  resources: { cpus: number; memoryMb: number; scratchMb: number };
}

export class GeneratorError extends SiloError<'generator_failed'> {
  constructor(message: string, options?: ErrorOptions) {
    super('generator_failed', message, options);
  }
}

const STDERR_TAIL_BYTES = 1500;

export async function runGenerator(
  plan: LaunchPlan,
  config: RuntimeConfig,
  timeoutMs: number,
  log?: (chunk: Buffer) => void,
): Promise<void> {
  const stdio: ('pipe' | 'ignore')[] = ['pipe', 'pipe', 'pipe'];
  if (plan.statusFd !== null) {
    while (stdio.length < plan.statusFd) stdio.push('ignore');
    stdio[plan.statusFd] = 'pipe';
  }
  const child = spawn(plan.file, plan.args, { env: plan.env, cwd: plan.cwd, stdio, detached: true });
  let stderr = Buffer.alloc(0);
  child.stdout?.on('data', (chunk: Buffer) => log?.(chunk));
  child.stderr?.on('data', (chunk: Buffer) => {
    log?.(chunk);
    stderr = Buffer.concat([stderr, chunk]);
    if (stderr.length > STDERR_TAIL_BYTES * 2) stderr = stderr.subarray(stderr.length - STDERR_TAIL_BYTES);
  });
  if (plan.statusFd !== null) child.stdio[plan.statusFd]?.on('data', () => undefined);
  child.stdin?.on('error', () => undefined); // a generator that ignores stdin may close it early
  child.stdin?.end(`${JSON.stringify(config)}\n`);

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    if (child.pid !== undefined) killQuietly(-child.pid, 'SIGKILL');
  }, timeoutMs);
  try {
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
      (resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code, signal) => resolve({ code, signal }));
      },
    );
    const tail = stderr
      .subarray(Math.max(0, stderr.length - STDERR_TAIL_BYTES))
      .toString('utf8')
      .trim();
    if (timedOut)
      throw new GeneratorError(`generator timed out after ${timeoutMs / 1000} s${tail ? `: ${tail}` : ''}`);
    if (code !== 0) {
      const how = signal !== null ? `killed by ${signal}` : `exit code ${code}`;
      throw new GeneratorError(`generator failed (${how})${tail ? `: ${tail}` : ''}`);
    }
  } catch (err) {
    if (err instanceof GeneratorError) throw err;
    throw new GeneratorError(`generator could not start: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
    // Nothing the generator started may outlive it.
    if (child.pid !== undefined) killQuietly(-child.pid, 'SIGKILL');
  }
}
