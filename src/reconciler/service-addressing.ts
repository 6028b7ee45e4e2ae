import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { RuntimeEntry, ServiceNetworkAccess } from './runtime-types.js';
import type { SandboxChoice } from './sandbox.js';
import type { ServiceDirs } from './scratch.js';

/**
 * Service addresses as the runtime sees them (docs/services.md, "Service
 * addresses"): a sandboxed `network = "overlay"` service runs in a network
 * namespace of its own with its address, made before every start and
 * removed with the service. Without a ServiceNetworkAccess, overlay
 * services share the host's network and everything here does nothing.
 */
export class ServiceAddressing {
  constructor(
    private readonly network: ServiceNetworkAccess | undefined,
    private readonly logger: Logger,
  ) {}

  /** Calls `listener` whenever the addresses may have changed; returns the unsubscribe. */
  onChange(listener: () => void): (() => void) | undefined {
    return this.network?.onChange?.(listener);
  }

  /** The service's address in the converged document now, or undefined while it has none. */
  addressOf(name: string): string | undefined {
    return this.network?.addressOf(name);
  }

  /**
   * A sandboxed overlay service's own namespace with its address, made anew
   * before every start; undefined when it shares the host's network. No
   * address yet (a claim lost to an older one and not yet repaired) fails
   * this start, and the restart policy tries again.
   */
  async namespaceFor(entry: RuntimeEntry, choice: SandboxChoice): Promise<string | undefined> {
    const { spec } = entry;
    const network = this.network;
    if (network === undefined || spec.network !== 'overlay' || choice.kind !== 'bubblewrap') return undefined;
    entry.address = undefined;
    const address = network.addressOf(spec.name);
    if (address === undefined) throw new Error('no service address assigned yet');
    const path = await network.setup(spec.name, address, spec.ports ?? []);
    entry.address = address;
    return path;
  }

  /** Writes the service's resolv.conf next to its supervise records; its path, or undefined for none. */
  async resolvConf(dirs: ServiceDirs): Promise<string | undefined> {
    const contents = await this.network?.resolvConf?.();
    if (contents === undefined) return undefined;
    const path = join(dirs.supervise, 'resolv.conf');
    await writeFile(path, contents, { mode: 0o644 });
    return path;
  }

  /** The address leaves this node with the service: nothing here answers for it any more. */
  async release(entry: RuntimeEntry): Promise<void> {
    if (this.network === undefined || entry.spec.network !== 'overlay') return;
    await this.network
      .teardown(entry.spec.name)
      .catch((err: unknown) =>
        this.logger.warn({ err, service: entry.spec.name }, 'removing the service namespace failed'),
      );
  }

  /**
   * The services whose namespace was made with an address the document no
   * longer gives them. The address map is resolved once for the whole pass
   * (and only when some service has an address): it is recomputed from the
   * claims, and a pass runs on every change of the workloads document.
   */
  moved(entries: Iterable<[string, RuntimeEntry]>): string[] {
    const network = this.network;
    if (network === undefined) return [];
    let addresses: ReadonlyMap<string, string> | undefined;
    const addressOf = (name: string): string | undefined => {
      if (network.addresses === undefined) return network.addressOf(name);
      addresses ??= network.addresses();
      return addresses.get(name);
    };
    const moved: string[] = [];
    for (const [name, entry] of entries) {
      if (entry.address !== undefined && addressOf(name) !== entry.address) moved.push(name);
    }
    return moved;
  }
}
