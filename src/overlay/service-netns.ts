import { createHash } from 'node:crypto';
import { lstat, readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { CommandError, type CommandRunner } from './exec.js';

/**
 * A service's own network namespace (docs/services.md, "Service
 * addresses"): a named namespace holding one veth end, `eth0`, with the
 * service address as its only address and a default route to the host end.
 * The host end carries a link-local gateway address and the /32 route to
 * the service address, and the host forwards between it and the WireGuard
 * interface. So the service sees a normal interface and may bind 0.0.0.0 or
 * its address; it knows nothing of WireGuard.
 *
 * The host end lives in the agent's network namespace, or in `hostNetns`
 * when the agent manages a namespace it does not run in (tests). The
 * service namespace is created from the caller's mount namespace: `ip netns
 * add` run under `ip netns exec` would bind-mount it in a private mount
 * namespace that nothing else sees.
 */

/** The host end's address, the service's default gateway: link-local, the same for every service. */
export const SERVICE_GATEWAY = '169.254.77.1';

/** The host-side nftables table of one service (named after its veth: unique per agent and workload). */
function hostTable(hostVeth: string): string {
  return `silo_${hostVeth}`;
}
const SERVICE_IFNAME = 'eth0';

export interface ServiceNetnsOptions {
  runner: CommandRunner;
  logger: Logger;
  /** Distinguishes agents sharing one kernel (the data directory's hash, as for cgroups). */
  instanceId: string;
  /** Namespace of the host end (default: the agent's own). */
  hostNetns?: string;
  /**
   * conn_auth (docs/security.md, "Service addresses"): only these sources
   * (the org CIDR) reach a service, only on its declared ports, and (with
   * `overlayInterface`) only through the WireGuard interface or from
   * another local service. Absent: no filter.
   */
  filter?: { allowedSources: string; overlayInterface?: string };
  ipPath?: string;
}

export interface ServiceNetnsNames {
  /** The named namespace (`/run/netns/<netns>`). */
  netns: string;
  /** The host end of the veth pair (≤ 15 chars). */
  hostVeth: string;
}

export class ServiceNetns {
  readonly #options: ServiceNetnsOptions;
  readonly #logger: Logger;
  readonly #ip: string;

  constructor(options: ServiceNetnsOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'service-netns' });
    this.#ip = options.ipPath ?? 'ip';
  }

  /** Names derived from the instance and the workload: stable, so a restarted agent finds what it left. */
  names(workload: string): ServiceNetnsNames {
    const hash = createHash('sha256').update(`${this.#options.instanceId}/${workload}`).digest('hex');
    return { netns: `silo-svc-${hash.slice(0, 16)}`, hostVeth: `sv${hash.slice(0, 12)}` };
  }

  /** Path of the namespace for `nsenter --net=<path>`. */
  path(workload: string): string {
    return `/run/netns/${this.names(workload).netns}`;
  }

  /**
   * (Re)creates the namespace of `workload` with `address`. Whatever a
   * previous run left under the same names is removed first, so a start
   * always begins from a known state.
   */
  async setup(workload: string, address: string, ports: readonly number[] = []): Promise<string> {
    const { netns, hostVeth } = this.names(workload);
    await this.teardown(workload);
    await this.#run(['netns', 'add', netns]);
    try {
      await this.#host([
        'link',
        'add',
        hostVeth,
        'type',
        'veth',
        'peer',
        'name',
        SERVICE_IFNAME,
        'netns',
        netns,
      ]);
      await this.#run(['-n', netns, 'link', 'set', 'lo', 'up']);
      await this.#run(['-n', netns, 'address', 'add', `${address}/32`, 'dev', SERVICE_IFNAME]);
      await this.#run(['-n', netns, 'link', 'set', SERVICE_IFNAME, 'up']);
      await this.#run(['-n', netns, 'route', 'add', SERVICE_GATEWAY, 'dev', SERVICE_IFNAME]);
      await this.#run([
        '-n',
        netns,
        'route',
        'add',
        'default',
        'via',
        SERVICE_GATEWAY,
        'dev',
        SERVICE_IFNAME,
      ]);
      await this.#host(['address', 'replace', `${SERVICE_GATEWAY}/32`, 'dev', hostVeth]);
      await this.#host(['link', 'set', hostVeth, 'up']);
      await this.#host(['route', 'replace', `${address}/32`, 'dev', hostVeth]);
      await this.#installFilter(netns, hostVeth, ports);
      // The host forwards between the WireGuard interface and the service's veth.
      await this.#options.runner.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], this.#hostOptions());
    } catch (err) {
      await this.teardown(workload).catch(() => undefined);
      throw err;
    }
    this.#logger.info({ workload, address, netns }, 'service network namespace ready');
    return this.path(workload);
  }

  /** Removes the namespace (its veth pair and the host route go with it). Safe when there is none. */
  async teardown(workload: string): Promise<void> {
    const { netns, hostVeth } = this.names(workload);
    await this.#ignoreMissing(['netns', 'delete', netns]);
    // A host end whose namespace was deleted some other way.
    await this.#ignoreMissing(['link', 'delete', hostVeth], true);
    if (this.#options.filter?.overlayInterface !== undefined) {
      try {
        await this.#options.runner.run(
          ['nft', 'delete', 'table', 'inet', hostTable(hostVeth)],
          this.#hostOptions(),
        );
      } catch (err) {
        if (!(err instanceof CommandError && /no such file|does not exist/i.test(err.stderr))) throw err;
      }
    }
  }

  /**
   * In the service namespace: drop everything but loopback, replies, and
   * new traffic from allowed sources to the declared ports (and pings). On
   * the host: traffic forwarded to the service must arrive over WireGuard
   * (cryptokey routing vouches for its source) or from another local
   * service; an underlay packet with a forged org source is dropped here.
   */
  async #installFilter(netns: string, hostVeth: string, ports: readonly number[]): Promise<void> {
    const filter = this.#options.filter;
    if (filter === undefined) return;
    const sources = `{ ${filter.allowedSources}, ${SERVICE_GATEWAY} }`;
    const portSet = ports.length === 0 ? null : `{ ${ports.join(', ')} }`;
    const inside = [
      'table inet silo {',
      '  chain input {',
      '    type filter hook input priority 0; policy drop;',
      '    iifname "lo" accept',
      '    ct state established,related accept',
      `    ip saddr ${sources} icmp type echo-request accept`,
      ...(portSet === null
        ? []
        : [
            `    ip saddr ${sources} tcp dport ${portSet} accept`,
            `    ip saddr ${sources} udp dport ${portSet} accept`,
          ]),
      '  }',
      '}',
      '',
    ].join('\n');
    await this.#options.runner.run(['nft', '-f', '-'], { netns, input: inside });
    if (filter.overlayInterface === undefined) return;
    const host = [
      `table inet ${hostTable(hostVeth)} {`,
      '  chain forward {',
      '    type filter hook forward priority 0; policy accept;',
      `    oifname "${hostVeth}" iifname "${filter.overlayInterface}" accept`,
      `    oifname "${hostVeth}" iifname "sv*" accept`,
      `    oifname "${hostVeth}" drop`,
      '  }',
      '}',
      '',
    ].join('\n');
    await this.#options.runner.run(['nft', '-f', '-'], { ...this.#hostOptions(), input: host });
  }

  async #ignoreMissing(args: string[], onHost = false): Promise<void> {
    try {
      await (onHost ? this.#host(args) : this.#run(args));
    } catch (err) {
      if (
        err instanceof CommandError &&
        // "No such device": the host end went with the namespace between the lookup and the delete.
        /no such file|no such device|cannot find|does not exist|not found/i.test(err.stderr)
      )
        return;
      throw err;
    }
  }

  /** `ip` in the caller's namespaces (netns management, `ip -n <service netns>`). */
  async #run(args: string[]): Promise<void> {
    await this.#options.runner.run([this.#ip, ...args]);
  }

  /** `ip` on the host end's side. */
  async #host(args: string[]): Promise<void> {
    await this.#options.runner.run([this.#ip, ...args], this.#hostOptions());
  }

  #hostOptions(): { netns?: string } {
    return this.#options.hostNetns === undefined ? {} : { netns: this.#options.hostNetns };
  }
}

/**
 * A service's resolv.conf: the agent's service DNS first (names of the zone
 * searched without the suffix), then the host's nameservers that are
 * reachable from a service namespace (not loopback). glibc moves on to the
 * next nameserver when one answers REFUSED, which the service DNS does for
 * every name outside its zone. None (the host's file stays) when the host's
 * /etc/resolv.conf is a symlink: it usually points under /run, which is a
 * fresh tmpfs in the sandbox, so it cannot be bound over.
 */
export function serviceResolvConf(
  dns: { nameserver: string; zone: string },
  logger: Logger,
  hostFile = '/etc/resolv.conf',
): () => Promise<string | undefined> {
  let warned = false;
  return async () => {
    const info = await lstat(hostFile).catch(() => null);
    if (info?.isSymbolicLink() === true) {
      if (!warned)
        logger.warn({ hostFile }, 'host resolv.conf is a symlink: services keep it, without service names');
      warned = true;
      return undefined;
    }
    const host = info === null ? '' : await readFile(hostFile, 'utf8').catch(() => '');
    const others = host
      .split('\n')
      .map((line) => /^\s*nameserver\s+(\S+)/.exec(line)?.[1])
      .filter((ip): ip is string => ip !== undefined && !/^127\.|^::1$/.test(ip) && ip !== dns.nameserver);
    return [
      `search ${dns.zone}`,
      `nameserver ${dns.nameserver}`,
      ...others.map((ip) => `nameserver ${ip}`),
      '',
    ].join('\n');
  };
}
