/**
 * A libp2p 2.x transport over the simulated network: `/memory/<node>`
 * multiaddrs, in-process connections whose bytes go through the link model.
 *
 * Same shape as @libp2p/memory (transport, listener, MultiaddrConnection),
 * but the connections belong to a SimNetwork instead of a module-level map,
 * so several simulated networks can coexist in one process, and every chunk
 * is delayed per link and direction instead of per listener.
 *
 * A transport belongs to one simulated node: it dials from that node and may
 * only listen on that node's own address, so the network always knows which
 * two nodes a connection joins.
 */
import {
  type ComponentLogger,
  type Connection,
  ConnectionFailedError,
  type CreateListenerOptions,
  type DialTransportOptions,
  ListenError,
  type Listener,
  type ListenerEvents,
  type Logger,
  type PeerId,
  serviceCapabilities,
  setMaxListeners,
  type Transport,
  TypedEventEmitter,
  transportSymbol,
  type Upgrader,
} from '@libp2p/interface';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import type { SimConnectionEnd } from './sim-connection.js';

const MEMORY_CODE = 777;
const P2P_CODE = 421;

/** Node names become a multiaddr component, so keep them to a safe alphabet. */
export const NODE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function simAddress(node: string): Multiaddr {
  return multiaddr(`/memory/${node}`);
}

/** The node a `/memory/<node>[/p2p/<id>]` multiaddr names, or undefined for any other address. */
export function simNodeName(ma: Multiaddr): string | undefined {
  const components = ma.getComponents();
  const [first, second, ...rest] = components;
  if (first?.code !== MEMORY_CODE || first.value === undefined || rest.length > 0) return undefined;
  if (second !== undefined && second.code !== P2P_CODE) return undefined;
  return NODE_NAME_PATTERN.test(first.value) ? first.value : undefined;
}

/** What libp2p hands a transport factory that this transport uses. */
export interface SimTransportComponents {
  peerId: PeerId;
  logger: ComponentLogger;
}

/** A listening node, as the network sees it. */
export interface SimInboundHandler {
  node: string;
  peerId: PeerId;
  log: Logger;
  /** A new inbound connection end, not yet upgraded. */
  accept(end: SimConnectionEnd): void;
}

export interface SimDialRequest {
  from: string;
  to: string;
  dialerPeerId: PeerId;
  dialerLog: Logger;
  signal: AbortSignal;
}

/** The part of SimNetwork a transport talks to. */
export interface SimFabric {
  listen(handler: SimInboundHandler): void;
  unlisten(handler: SimInboundHandler): void;
  /** Resolves with the dialer's end once the (simulated) handshake is done; rejects if refused. */
  dial(request: SimDialRequest): Promise<SimConnectionEnd>;
}

export class SimTransport implements Transport {
  readonly [transportSymbol] = true as const;
  readonly [Symbol.toStringTag] = '@silo/sim-transport';
  readonly [serviceCapabilities]: string[] = ['@libp2p/transport'];
  private readonly log: Logger;

  constructor(
    private readonly components: SimTransportComponents,
    private readonly fabric: SimFabric,
    readonly node: string,
  ) {
    this.log = components.logger.forComponent('silo:sim:transport');
  }

  async dial(ma: Multiaddr, options: DialTransportOptions): Promise<Connection> {
    options.signal.throwIfAborted();
    const to = simNodeName(ma);
    if (to === undefined) throw new ConnectionFailedError(`${this.node}: not a sim address: ${ma}`);
    const end = await this.fabric.dial({
      from: this.node,
      to,
      dialerPeerId: this.components.peerId,
      dialerLog: this.components.logger.forComponent('silo:sim:connection'),
      signal: options.signal,
    });
    try {
      options.signal.throwIfAborted();
      return await options.upgrader.upgradeOutbound(end, options);
    } catch (err) {
      end.abort(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  createListener(options: CreateListenerOptions): Listener {
    return new SimListener(this.components, this.fabric, this.node, options.upgrader, this.log);
  }

  listenFilter = (multiaddrs: Multiaddr[]): Multiaddr[] =>
    multiaddrs.filter((ma) => simNodeName(ma) !== undefined);

  dialFilter = (multiaddrs: Multiaddr[]): Multiaddr[] => this.listenFilter(multiaddrs);
}

class SimListener extends TypedEventEmitter<ListenerEvents> implements Listener {
  private handler: SimInboundHandler | undefined;
  /** Aborts inbound upgrades still in progress when the listener closes. */
  private readonly shutdown = new AbortController();

  constructor(
    private readonly components: SimTransportComponents,
    private readonly fabric: SimFabric,
    private readonly node: string,
    private readonly upgrader: Upgrader,
    private readonly log: Logger,
  ) {
    super();
    setMaxListeners(Number.POSITIVE_INFINITY, this.shutdown.signal);
  }

  async listen(ma: Multiaddr): Promise<void> {
    const name = simNodeName(ma);
    if (name !== this.node) {
      throw new ListenError(`sim node ${this.node} can only listen on ${simAddress(this.node)}, not ${ma}`);
    }
    if (this.handler !== undefined) throw new ListenError(`sim node ${this.node} is already listening`);
    const handler: SimInboundHandler = {
      node: this.node,
      peerId: this.components.peerId,
      log: this.components.logger.forComponent('silo:sim:connection'),
      accept: (end) => this.onInbound(end),
    };
    this.fabric.listen(handler); // throws if the address is taken
    this.handler = handler;
    queueMicrotask(() => this.safeDispatchEvent('listening'));
  }

  getAddrs(): Multiaddr[] {
    return this.handler === undefined ? [] : [simAddress(this.node)];
  }

  updateAnnounceAddrs(): void {}

  async close(): Promise<void> {
    if (this.handler !== undefined) {
      this.fabric.unlisten(this.handler);
      this.handler = undefined;
    }
    this.shutdown.abort();
    queueMicrotask(() => this.safeDispatchEvent('close'));
  }

  private onInbound(end: SimConnectionEnd): void {
    this.upgrader.upgradeInbound(end, { signal: this.shutdown.signal }).catch((err: unknown) => {
      this.log('%s inbound upgrade failed - %e', this.node, err);
      end.abort(err instanceof Error ? err : new Error(String(err)));
    });
  }
}
