import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { spawnDaemon } from './exec.js';

/**
 * A supervised `wireguard-go -f <interface>`: userspace WireGuard for kernels
 * without the module. It runs in the foreground as our child, not daemonized,
 * so we hold its pid, see its output and notice when it dies.
 *
 * Its UAPI socket, /var/run/wireguard/<interface>.sock, is not namespaced
 * (`ip netns exec` does not remount /var/run), which is why interface names
 * must be unique per node even when nodes live in different namespaces.
 */

const KEPT_OUTPUT_LINES = 20;

export interface WireguardGoOptions {
  interfaceName: string;
  netns?: string;
  binary?: string;
  logger: Logger;
  /** Called when the process exits without stop() having been called. */
  onUnexpectedExit: (detail: string) => void;
}

export class WireguardGoProcess {
  readonly #options: WireguardGoOptions;
  readonly #output: string[] = [];
  #child: ReturnType<typeof spawnDaemon> | undefined;
  #exited: Promise<string> | undefined;
  #stopping = false;

  constructor(options: WireguardGoOptions) {
    this.#options = options;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Spawn it; resolves once spawned (the caller waits for the interface to appear). */
  start(): void {
    if (this.#child !== undefined) throw new Error('wireguard-go already started');
    const { interfaceName, netns, logger } = this.#options;
    const child = spawnDaemon([this.#options.binary ?? 'wireguard-go', '-f', interfaceName], {
      ...(netns !== undefined ? { netns } : {}),
      env: {
        LOG_LEVEL: 'error',
        // Some builds refuse to start on kernels that have WireGuard; the fallback is deliberate here.
        WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1',
      },
    });
    this.#child = child;
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue;
      createInterface({ input: stream }).on('line', (line) => {
        this.#output.push(line);
        if (this.#output.length > KEPT_OUTPUT_LINES) this.#output.shift();
        logger.debug({ line }, 'wireguard-go output');
      });
    }
    this.#exited = child.then((result) => {
      const detail =
        result.exitCode !== undefined
          ? `exit code ${result.exitCode}`
          : `signal ${result.signal ?? 'unknown'}`;
      if (!this.#stopping) this.#options.onUnexpectedExit(`${detail}${this.#lastOutput()}`);
      return detail;
    });
  }

  /** Resolves with a description when the process exits (undefined if never started). */
  get exited(): Promise<string> | undefined {
    return this.#exited;
  }

  lastOutput(): string {
    return this.#lastOutput();
  }

  #lastOutput(): string {
    return this.#output.length > 0 ? `; last output: ${this.#output.join(' | ')}` : '';
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs = 5000): Promise<void> {
    const child = this.#child;
    const exited = this.#exited;
    if (child === undefined || exited === undefined) return;
    this.#stopping = true;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, graceMs);
    });
    await Promise.race([exited, killed]);
    clearTimeout(timer);
    await exited;
  }
}
