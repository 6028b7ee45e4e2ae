import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { wireguardEndpointOf } from './endpoints.js';
import { type CommandRunner, commandExists, ExecaRunner } from './exec.js';
import { checkInterfaceName, Ip, isMissingKernelWireguard } from './ip.js';
import { type OverlayMetrics, overlayMetrics } from './metrics.js';
import { WG_KEY_PATTERN, Wg, type WgDump, type WgPeerState } from './wg.js';
import { WireguardGoProcess } from './wireguard-go.js';

/**
 * Keeps one WireGuard interface's peers equal to the org's active enrolled
 * nodes (docs/architecture.md). Level-triggered: `sync` compares the wanted peers
 * with what `wg show <if> dump` reports and changes only the difference, so it
 * may be called as often as the enrollment view changes (or on a timer) and a
 * repeated call with the same nodes runs no `wg set` at all.
 *
 * Peer endpoints: WireGuard rewrites a peer's endpoint to wherever its latest
 * authenticated packet came from (roaming, NAT), and the dump shows resolved
 * addresses where a record may hold a DNS name. So an endpoint is set when the
 * peer has none or when the record's endpoint changed since we last set it,
 * never merely because the dump shows a different one.
 */

/** What the manager needs of an enrollment record. */
export interface OverlayNode {
  nodeId: string;
  wgPublicKey: string;
  overlayIp: string;
  endpoints: readonly string[];
  /**
   * Service addresses this node holds (`<address>/32`), routed to it on top
   * of its overlay IP (routing from state, docs/services.md "Service
   * addresses"). WireGuard gives an address to one peer at most, so an
   * address listed under two nodes would end up with whichever is set last:
   * callers compute these with src/overlay/service-routes.ts, which never does that.
   */
  serviceIps?: readonly string[];
}

export type WireguardMode = 'auto' | 'kernel' | 'userspace';

export interface OverlayManagerOptions {
  /** Unique per node (wireguard-go's UAPI sockets are shared by all namespaces), at most 15 chars. */
  interfaceName: string;
  listenPort: number;
  /** File with the WireGuard private key (node directory's wg.key). */
  privateKeyFile: string;
  overlayIp: string;
  /** Prefix length of the org's overlay CIDR: the whole overlay is routed through the interface. */
  overlayPrefix: number;
  netns?: string;
  /** 'auto' (default): kernel WireGuard when available, else wireguard-go. */
  mode?: WireguardMode;
  /** Seconds; keeps NAT mappings open. Default 25. */
  persistentKeepalive?: number;
  wireguardGoPath?: string;
  /** How long to wait for wireguard-go's interface to appear. Default 10 s. */
  readyTimeoutMs?: number;
  logger: Logger;
  registry: Registry;
  /** Command runner (default: execa). */
  runner?: CommandRunner;
}

export interface SyncResult {
  added: string[];
  updated: string[];
  removed: string[];
  /** Peers whose change failed (left for the next sync), with the error. */
  failed: { publicKey: string; error: string }[];
  /** Nodes not turned into peers (self, no usable key, our own overlay IP). */
  skipped: { nodeId: string; reason: string }[];
}

interface WantedPeer {
  nodeId: string;
  publicKey: string;
  endpoint: string | undefined;
  allowedIps: string[];
}

type State = 'down' | 'up' | 'crashed';

const HOST_ROUTE = /^(?:[0-9]{1,3}\.){3}[0-9]{1,3}\/32$/;

export class OverlayManager {
  readonly #options: OverlayManagerOptions;
  readonly #logger: Logger;
  readonly #metrics: OverlayMetrics;
  readonly #wg: Wg;
  readonly #ip: Ip;
  readonly #keepalive: number;
  /** Endpoint last written per peer public key (see the class comment). */
  readonly #appliedEndpoints = new Map<string, string>();
  #state: State = 'down';
  #implementation: 'kernel' | 'userspace' | null = null;
  #userspace: WireguardGoProcess | undefined;
  #publicKey: string | null = null;
  /** up/sync/down run one at a time, in call order. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: OverlayManagerOptions) {
    checkInterfaceName(options.interfaceName);
    if (!Number.isInteger(options.listenPort) || options.listenPort < 1 || options.listenPort > 65535) {
      throw new Error(`invalid WireGuard listen port ${options.listenPort}`);
    }
    if (!Number.isInteger(options.overlayPrefix) || options.overlayPrefix < 1 || options.overlayPrefix > 32) {
      throw new Error(`invalid overlay prefix length ${options.overlayPrefix}`);
    }
    this.#options = options;
    this.#logger = options.logger.child({ component: 'overlay', interface: options.interfaceName });
    this.#metrics = overlayMetrics(options.registry);
    const runner = options.runner ?? new ExecaRunner();
    this.#wg = new Wg({ runner });
    this.#ip = new Ip({ runner });
    this.#keepalive = options.persistentKeepalive ?? 25;
  }

  get interfaceName(): string {
    return this.#options.interfaceName;
  }

  /** 'kernel' or 'userspace' once up, else null. */
  get implementation(): 'kernel' | 'userspace' | null {
    return this.#implementation;
  }

  /** The interface's WireGuard public key once up. */
  get publicKey(): string | null {
    return this.#publicKey;
  }

  /** pid of the supervised wireguard-go, when running in userspace. */
  get userspacePid(): number | undefined {
    return this.#userspace?.pid;
  }

  up(): Promise<void> {
    return this.#serialized(async () => {
      if (this.#state !== 'down') throw new Error(`overlay interface ${this.interfaceName} is already up`);
      await this.#create();
    });
  }

  sync(nodes: readonly OverlayNode[]): Promise<SyncResult> {
    return this.#serialized(async () => {
      if (this.#state === 'down') throw new Error(`overlay interface ${this.interfaceName} is not up`);
      if (this.#state === 'crashed') {
        this.#logger.warn('recreating the overlay interface after wireguard-go exited');
        await this.#recreate();
      }
      return this.#applyPeers(nodes, await this.#currentDump());
    });
  }

  /** The interface's dump; an interface deleted behind our back is recreated (level-triggered, like the peers). */
  async #currentDump(): Promise<WgDump> {
    const { interfaceName: name, netns } = this.#options;
    try {
      return await this.#wg.showDump(name, netns);
    } catch (err) {
      if (await this.#ip.linkExists(name, netns)) throw err;
      this.#logger.warn('the overlay interface disappeared; recreating it');
      await this.#recreate();
      return this.#wg.showDump(name, netns);
    }
  }

  async #recreate(): Promise<void> {
    try {
      await this.#destroy();
      await this.#create();
    } catch (err) {
      // Stay eligible for another attempt at the next sync instead of falling to 'down'.
      this.#state = 'crashed';
      throw err;
    }
  }

  /** Remove the interface and stop wireguard-go. Safe to call more than once, and after a failed up(). */
  down(): Promise<void> {
    return this.#serialized(async () => {
      await this.#destroy();
      this.#state = 'down';
    });
  }

  #serialized<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #create(): Promise<void> {
    const { interfaceName: name, netns } = this.#options;
    try {
      if (await this.#ip.linkExists(name, netns)) {
        // Left by a previous run that died without down(): the name is ours (unique per node).
        this.#logger.warn('removing a stale overlay interface');
        await this.#ip.deleteLink(name, netns);
      }
      await this.#createLink();
      await this.#wg.setInterface(
        name,
        { privateKeyFile: this.#options.privateKeyFile, listenPort: this.#options.listenPort },
        netns,
      );
      await this.#ip.replaceAddress(name, `${this.#options.overlayIp}/${this.#options.overlayPrefix}`, netns);
      await this.#ip.setLinkUp(name, netns);
      this.#publicKey = (await this.#wg.showDump(name, netns)).interface.publicKey;
      this.#appliedEndpoints.clear();
      this.#state = 'up';
      this.#logger.info(
        {
          implementation: this.#implementation,
          overlayIp: this.#options.overlayIp,
          port: this.#options.listenPort,
        },
        'overlay interface up',
      );
    } catch (err) {
      await this.#destroy().catch((cleanupErr: unknown) => {
        this.#logger.warn({ err: cleanupErr }, 'cleanup after a failed overlay start failed');
      });
      this.#state = 'down';
      throw err;
    }
  }

  async #createLink(): Promise<void> {
    const { interfaceName: name, netns } = this.#options;
    const mode = this.#options.mode ?? 'auto';
    if (mode !== 'userspace') {
      try {
        await this.#ip.addWireguardLink(name, netns);
        this.#implementation = 'kernel';
        return;
      } catch (err) {
        if (mode === 'kernel' || !isMissingKernelWireguard(err)) throw err;
        this.#logger.info('kernel has no WireGuard; using wireguard-go');
      }
    }
    await this.#startUserspace();
    this.#implementation = 'userspace';
  }

  async #startUserspace(): Promise<void> {
    const { interfaceName: name, netns } = this.#options;
    const binary = this.#options.wireguardGoPath ?? 'wireguard-go';
    if (!(await commandExists(binary))) {
      throw new Error(`cannot create ${name}: no kernel WireGuard and ${binary} is not installed`);
    }
    const userspace = new WireguardGoProcess({
      interfaceName: name,
      ...(netns !== undefined ? { netns } : {}),
      binary,
      logger: this.#logger,
      onUnexpectedExit: (detail) => {
        // A process already replaced by a newer one has nothing to say about the current interface.
        if (this.#userspace !== userspace) return;
        this.#metrics.userspaceExits.inc({ interface: name });
        this.#logger.error(
          { detail },
          'wireguard-go exited unexpectedly; the next sync recreates the interface',
        );
        if (this.#state === 'up') this.#state = 'crashed';
      },
    });
    this.#userspace = userspace;
    userspace.start();
    await this.#waitForUserspace(userspace);
  }

  async #waitForUserspace(userspace: WireguardGoProcess): Promise<void> {
    const { interfaceName: name, netns } = this.#options;
    const deadline = Date.now() + (this.#options.readyTimeoutMs ?? 10_000);
    let exited: string | undefined;
    void userspace.exited?.then((detail) => {
      exited = detail;
    });
    while (Date.now() < deadline) {
      if (exited !== undefined) throw new Error(`wireguard-go for ${name} exited at start (${exited})`);
      // Ready = the tun device exists and the UAPI socket answers.
      if (await this.#ip.linkExists(name, netns)) {
        try {
          await this.#wg.showDump(name, netns);
          return;
        } catch {
          // UAPI socket not listening yet.
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`wireguard-go for ${name} did not become ready in time${userspace.lastOutput()}`);
  }

  async #destroy(): Promise<void> {
    const { interfaceName: name, netns } = this.#options;
    const userspace = this.#userspace;
    this.#userspace = undefined;
    // wireguard-go removes its tun device and socket on SIGTERM.
    if (userspace !== undefined) await userspace.stop();
    if (await this.#ip.linkExists(name, netns)) await this.#ip.deleteLink(name, netns);
    if (this.#state === 'up' || userspace !== undefined) this.#logger.info('overlay interface down');
    this.#implementation = null;
    this.#publicKey = null;
    this.#metrics.peers.set({ interface: name }, 0);
  }

  async #applyPeers(nodes: readonly OverlayNode[], dump: WgDump): Promise<SyncResult> {
    const { interfaceName: name, netns } = this.#options;
    const self = dump.interface.publicKey;
    const result: SyncResult = { added: [], updated: [], removed: [], failed: [], skipped: [] };
    const wanted = this.#wantedPeers(nodes, self, result);
    const current = new Map(dump.peers.map((peer) => [peer.publicKey, peer]));

    // Removals first: an overlay IP moving from one key to another must leave the old peer before
    // joining the new one, or WireGuard would reassign it and then drop it with the old peer.
    for (const peer of dump.peers) {
      if (wanted.has(peer.publicKey)) continue;
      await this.#change(result, peer.publicKey, 'remove', () =>
        this.#wg.removePeer(name, peer.publicKey, netns),
      );
      this.#appliedEndpoints.delete(peer.publicKey);
    }
    for (const peer of wanted.values()) {
      const existing = current.get(peer.publicKey);
      const setEndpoint = this.#endpointNeedsSet(peer, existing);
      if (existing !== undefined && !setEndpoint && !this.#settingsDiffer(peer, existing)) continue;
      const endpoint = setEndpoint ? peer.endpoint : undefined;
      const op = existing === undefined ? 'add' : 'update';
      const ok = await this.#change(result, peer.publicKey, op, () =>
        this.#wg.setPeer(
          name,
          {
            publicKey: peer.publicKey,
            ...(endpoint !== undefined ? { endpoint } : {}),
            allowedIps: peer.allowedIps,
            persistentKeepalive: this.#keepalive,
          },
          netns,
        ),
      );
      if (ok && endpoint !== undefined) this.#appliedEndpoints.set(peer.publicKey, endpoint);
    }
    this.#metrics.peers.set({ interface: name }, wanted.size);
    if (result.added.length + result.updated.length + result.removed.length + result.failed.length > 0) {
      this.#logger.info(
        {
          added: result.added.length,
          updated: result.updated.length,
          removed: result.removed.length,
          failed: result.failed.length,
        },
        'overlay peers synced',
      );
    }
    return result;
  }

  #wantedPeers(
    nodes: readonly OverlayNode[],
    self: string | null,
    result: SyncResult,
  ): Map<string, WantedPeer> {
    const wanted = new Map<string, WantedPeer>();
    for (const node of nodes) {
      if (node.wgPublicKey === self) continue;
      if (!WG_KEY_PATTERN.test(node.wgPublicKey)) {
        result.skipped.push({ nodeId: node.nodeId, reason: 'wgPublicKey is not a WireGuard key' });
        continue;
      }
      if (node.overlayIp === this.#options.overlayIp) {
        result.skipped.push({ nodeId: node.nodeId, reason: `claims our overlay IP ${node.overlayIp}` });
        continue;
      }
      if (wanted.has(node.wgPublicKey)) {
        result.skipped.push({ nodeId: node.nodeId, reason: 'same WireGuard key as another node' });
        continue;
      }
      wanted.set(node.wgPublicKey, {
        nodeId: node.nodeId,
        publicKey: node.wgPublicKey,
        endpoint: wireguardEndpointOf(node)?.hostPort,
        allowedIps: this.#allowedIps(node),
      });
    }
    for (const skip of result.skipped) this.#logger.warn(skip, 'enrolled node not added as a WireGuard peer');
    return wanted;
  }

  #allowedIps(node: OverlayNode): string[] {
    const own = `${node.overlayIp}/32`;
    const ips = [own];
    for (const ip of node.serviceIps ?? []) {
      if (!HOST_ROUTE.test(ip) || ip === `${this.#options.overlayIp}/32`) {
        this.#logger.warn(
          { nodeId: node.nodeId, route: ip },
          "service route skipped: not another host's /32",
        );
        continue;
      }
      if (!ips.includes(ip)) ips.push(ip);
    }
    return ips;
  }

  #endpointNeedsSet(peer: WantedPeer, existing: WgPeerState | undefined): boolean {
    if (peer.endpoint === undefined) return false;
    if (existing?.endpoint == null) return true;
    if (existing.endpoint === peer.endpoint) return false;
    return this.#appliedEndpoints.get(peer.publicKey) !== peer.endpoint;
  }

  #settingsDiffer(peer: WantedPeer, existing: WgPeerState): boolean {
    const keepalive = this.#keepalive === 0 ? null : this.#keepalive;
    if (existing.persistentKeepalive !== keepalive) return true;
    if (existing.allowedIps.length !== peer.allowedIps.length) return true;
    const have = new Set(existing.allowedIps);
    return peer.allowedIps.some((ip) => !have.has(ip));
  }

  async #change(
    result: SyncResult,
    publicKey: string,
    op: 'add' | 'update' | 'remove',
    command: () => Promise<void>,
  ): Promise<boolean> {
    const name = this.#options.interfaceName;
    this.#metrics.wgSetCalls.inc({ interface: name });
    try {
      await command();
    } catch (err) {
      this.#metrics.syncErrors.inc({ interface: name });
      this.#logger.warn({ err, publicKey, op }, 'WireGuard peer change failed; retried at the next sync');
      result.failed.push({ publicKey, error: (err as Error).message });
      return false;
    }
    this.#metrics.peerChanges.inc({ interface: name, op });
    (op === 'add' ? result.added : op === 'update' ? result.updated : result.removed).push(publicKey);
    return true;
  }
}
