import { CommandError, type CommandRunner } from './exec.js';

/** Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no "/", whitespace or ":". */
export const INTERFACE_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,15}$/;

export function checkInterfaceName(name: string): string {
  if (!INTERFACE_NAME_PATTERN.test(name) || name === '.' || name === '..') {
    throw new Error(`invalid interface name "${name}" (1-15 chars: letters, digits, "_", "-", ".")`);
  }
  return name;
}

/** Typed wrapper over iproute2's `ip`, for the few operations the overlay needs. */
export class Ip {
  readonly #runner: CommandRunner;
  readonly #ip: string;

  constructor(options: { runner: CommandRunner; ipPath?: string }) {
    this.#runner = options.runner;
    this.#ip = options.ipPath ?? 'ip';
  }

  async linkExists(name: string, netns?: string): Promise<boolean> {
    try {
      await this.#run(['link', 'show', 'dev', checkInterfaceName(name)], netns);
      return true;
    } catch (err) {
      if (err instanceof CommandError && /does not exist/i.test(err.stderr)) return false;
      throw err;
    }
  }

  /** Create a kernel WireGuard interface; fails with CommandError when the kernel has no WireGuard. */
  async addWireguardLink(name: string, netns?: string): Promise<void> {
    await this.#run(['link', 'add', 'dev', checkInterfaceName(name), 'type', 'wireguard'], netns);
  }

  async deleteLink(name: string, netns?: string): Promise<void> {
    await this.#run(['link', 'delete', 'dev', checkInterfaceName(name)], netns);
  }

  async setLinkUp(name: string, netns?: string): Promise<void> {
    await this.#run(['link', 'set', 'dev', checkInterfaceName(name), 'up'], netns);
  }

  /** Add `address/prefix` to the interface; `replace` keeps it idempotent across restarts. */
  async replaceAddress(name: string, addressWithPrefix: string, netns?: string): Promise<void> {
    await this.#run(['address', 'replace', addressWithPrefix, 'dev', checkInterfaceName(name)], netns);
  }

  async #run(args: string[], netns: string | undefined): Promise<string> {
    const { stdout } = await this.#runner.run([this.#ip, ...args], netns === undefined ? {} : { netns });
    return stdout;
  }
}

/** True when a failed `ip link add ... type wireguard` means "this kernel has no WireGuard". */
export function isMissingKernelWireguard(err: unknown): boolean {
  return err instanceof CommandError && /unknown device type|not supported/i.test(err.stderr);
}
