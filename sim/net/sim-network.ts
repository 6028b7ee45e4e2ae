/**
 * The simulated network many in-process agents run on: node registry, link
 * model, faults (partition, one-way cut, crash), counters, and the libp2p
 * transport factory for each node. See docs/sim.md, "Network model".
 *
 * One SimNetwork per simulation; nothing here is module-global, so tests and
 * benchmarks can run several networks side by side.
 */
import { ConnectionFailedError, ListenError, type Transport } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { LinkModel, type LinkParams } from './link-model.js';
import { Prng, type Seed } from './prng.js';
import { type SimConnectionEnd, SimConnectionPair } from './sim-connection.js';
import {
  NODE_NAME_PATTERN,
  type SimDialRequest,
  type SimFabric,
  type SimInboundHandler,
  SimTransport,
  type SimTransportComponents,
} from './sim-transport.js';

export interface SimNetworkOptions {
  /** Seeds every random draw of the network (jitter, loss) and `prng` for the harness. */
  seed: Seed;
  defaultLatencyMs?: number;
  defaultJitterMs?: number;
  defaultLossPct?: number;
  /** Delay for a lost chunk, doubled per repeated loss (default 200 ms, Linux's minimum RTO). */
  retransmitTimeoutMs?: number;
}

export interface PartitionOptions {
  /**
   * 'abort' (default): connections across the partition fail at once on both
   * ends, like a network that resets them. 'stall': they stay open, their
   * bytes held until heal(), and only libp2p's own timeouts (connection
   * monitor pings, stream timeouts) end them, as on a real TCP path that
   * silently stops delivering.
   */
  mode?: 'abort' | 'stall';
}

export interface CutOptions {
  /**
   * Abort connections between the two nodes once the cut has lasted this
   * long (TCP giving up on retransmissions; Linux's default is ~15 min, a
   * TCP_USER_TIMEOUT makes it shorter). Default: never; the connection
   * stalls until heal() or until libp2p's own timeouts end it.
   */
  abortAfterMs?: number;
}

export interface LinkCounters {
  from: string;
  to: string;
  /** Bytes written onto the link (after noise/yamux framing), counted when sent. */
  bytes: number;
  chunks: number;
}

export interface ConnectionCounters {
  opened: number;
  /** Connections not yet closed at both ends (includes one end waiting for a FIN/RST held by a cut). */
  open: number;
  /** Connections whose both ends have closed (any reason). */
  ended: number;
  /** Connections torn down by crash() or an 'abort' partition or a cut's abortAfterMs. */
  destroyedByNetwork: number;
  dialsRefused: number;
}

export interface SimNetworkStats {
  links: LinkCounters[];
  totalBytes: number;
  totalChunks: number;
  connections: ConnectionCounters;
}

export interface LiveConnection {
  id: number;
  dialer: string;
  listener: string;
  /** Directions currently held by a cut, as "from->to". */
  held: string[];
}

function key(from: string, to: string): string {
  return `${from}\u0000${to}`;
}

export class SimNetwork implements SimFabric {
  readonly links: LinkModel;
  /** Root PRNG for the harness's own random choices: use `prng.fork(label)` per consumer. */
  readonly prng: Prng;

  private readonly nodeNames = new Set<string>();
  private readonly crashed = new Set<string>();
  private readonly listeners = new Map<string, SimInboundHandler>();
  private readonly live = new Set<SimConnectionPair>();
  private readonly partitionCuts = new Set<string>();
  private partitionMode: 'abort' | 'stall' = 'abort';
  /** One-way cuts, each with the timer that aborts its connections (if asked for). */
  private readonly oneWayCuts = new Map<string, ReturnType<typeof setTimeout> | undefined>();
  private readonly linkCounters = new Map<string, LinkCounters>();
  private connectionCounters: ConnectionCounters = emptyConnectionCounters();
  private nextConnectionId = 1;

  constructor(options: SimNetworkOptions) {
    this.prng = new Prng(options.seed);
    this.links = new LinkModel({
      seed: this.prng.fork('links').seed,
      defaultLatencyMs: options.defaultLatencyMs ?? 0,
      defaultJitterMs: options.defaultJitterMs ?? 0,
      defaultLossPct: options.defaultLossPct ?? 0,
      retransmitTimeoutMs: options.retransmitTimeoutMs,
    });
  }

  // ---- nodes --------------------------------------------------------------------------------------------

  addNode(name: string): void {
    if (!NODE_NAME_PATTERN.test(name)) {
      throw new RangeError(`sim node name ${JSON.stringify(name)} must match ${NODE_NAME_PATTERN}`);
    }
    if (this.nodeNames.has(name)) throw new RangeError(`sim node ${name} already exists`);
    this.nodeNames.add(name);
  }

  hasNode(name: string): boolean {
    return this.nodeNames.has(name);
  }

  nodes(): string[] {
    return [...this.nodeNames];
  }

  /** The libp2p `transports: [...]` entry for a node: `transports: [net.transport('a')]`. */
  transport(name: string): (components: SimTransportComponents) => Transport {
    this.requireNode(name, 'transport');
    return (components) => new SimTransport(components, this, name);
  }

  /** The address a node listens on (and others dial), `/memory/<name>`. */
  address(name: string): string {
    this.requireNode(name, 'address');
    return `/memory/${name}`;
  }

  // ---- link parameters ----------------------------------------------------------------------------------

  setLink(a: string, b: string, params: Partial<LinkParams>): void {
    this.requireNode(a, 'setLink');
    this.requireNode(b, 'setLink');
    this.links.setLink(a, b, params);
  }

  setDefaultLink(params: Partial<LinkParams>): void {
    this.links.setDefault(params);
  }

  // ---- faults -------------------------------------------------------------------------------------------

  /**
   * Split the nodes into groups that cannot reach each other. Every node must
   * be in exactly one group. Replaces any earlier partition (one-way cuts
   * stay). New dials across it are refused; existing connections across it
   * are aborted or stalled (see PartitionOptions).
   */
  partition(groups: string[][], options: PartitionOptions = {}): void {
    const groupOf = new Map<string, number>();
    groups.forEach((group, index) => {
      for (const name of group) {
        this.requireNode(name, 'partition');
        if (groupOf.has(name)) throw new RangeError(`partition: node ${name} is in more than one group`);
        groupOf.set(name, index);
      }
    });
    const missing = this.nodes().filter((name) => !groupOf.has(name));
    if (missing.length > 0) throw new RangeError(`partition: nodes in no group: ${missing.join(', ')}`);
    this.partitionCuts.clear();
    this.partitionMode = options.mode ?? 'abort';
    for (const [a, ga] of groupOf) {
      for (const [b, gb] of groupOf) if (ga !== gb) this.partitionCuts.add(key(a, b));
    }
    this.applyCuts();
  }

  /**
   * One-way cut: nothing from `from` reaches `to`; `to` still reaches `from`.
   * New dials between them fail either way (a TCP handshake needs both
   * directions); bytes already flowing from -> to are held until heal(), which
   * stalls the connection, as a one-way loss does to TCP.
   */
  cut(from: string, to: string, options: CutOptions = {}): void {
    this.requireNode(from, 'cut');
    this.requireNode(to, 'cut');
    if (from === to) throw new RangeError(`cut: from and to are the same node (${from})`);
    const { abortAfterMs } = options;
    if (abortAfterMs !== undefined && !(Number.isFinite(abortAfterMs) && abortAfterMs >= 0)) {
      throw new RangeError(`cut: abortAfterMs must be a finite number >= 0, got ${abortAfterMs}`);
    }
    const k = key(from, to);
    const previous = this.oneWayCuts.get(k);
    if (previous !== undefined) clearTimeout(previous);
    const timer =
      abortAfterMs === undefined
        ? undefined
        : setTimeout(() => {
            this.oneWayCuts.set(k, undefined);
            this.destroyWhere(
              (pair) => pair.joins(from, to),
              () =>
                new ConnectionFailedError(
                  `sim: ${from} -> ${to} cut for ${abortAfterMs} ms, connection timed out`,
                ),
            );
          }, abortAfterMs);
    this.oneWayCuts.set(k, timer);
    this.applyCuts();
  }

  /** Remove every partition and cut; held bytes are delivered from now on. */
  heal(): void {
    this.partitionCuts.clear();
    for (const timer of this.oneWayCuts.values()) if (timer !== undefined) clearTimeout(timer);
    this.oneWayCuts.clear();
    this.applyCuts();
  }

  /** True if bytes from `from` cannot reach `to` now. */
  isCut(from: string, to: string): boolean {
    const k = key(from, to);
    return this.partitionCuts.has(k) || this.oneWayCuts.has(k);
  }

  /**
   * The node dies: all its connections fail at once on both ends, in-flight
   * bytes to and from it are lost, and dials to or from it are refused until
   * recover(name). (Its libp2p node is the harness's to stop and restart.)
   */
  crash(name: string): void {
    this.requireNode(name, 'crash');
    this.crashed.add(name);
    this.destroyWhere(
      (pair) => pair.involves(name),
      () => new ConnectionFailedError(`sim: ${name} crashed`),
    );
  }

  recover(name: string): void {
    this.requireNode(name, 'recover');
    this.crashed.delete(name);
  }

  isCrashed(name: string): boolean {
    return this.crashed.has(name);
  }

  // ---- observation --------------------------------------------------------------------------------------

  stats(): SimNetworkStats {
    const links = [...this.linkCounters.values()].map((c) => ({ ...c }));
    return {
      links,
      totalBytes: links.reduce((sum, c) => sum + c.bytes, 0),
      totalChunks: links.reduce((sum, c) => sum + c.chunks, 0),
      connections: { ...this.connectionCounters, open: this.live.size },
    };
  }

  /** Zero the byte, chunk and connection counters (e.g. at the start of a measurement window). */
  resetStats(): void {
    this.linkCounters.clear();
    this.connectionCounters = emptyConnectionCounters();
  }

  liveConnections(): LiveConnection[] {
    return [...this.live].map((pair) => {
      const held: string[] = [];
      for (const [from, to] of directions(pair)) {
        if (pair.channel(from, to)?.isHeld) held.push(`${from}->${to}`);
      }
      return { id: pair.id, dialer: pair.dialerNode, listener: pair.listenerNode, held };
    });
  }

  /**
   * Least total configured latency (not jitter, not loss) from `from` to every
   * node it can reach over live connections whose direction is not cut: the
   * lower bound on how fast anything `from` publishes can arrive. Unreachable
   * nodes are left out.
   */
  shortestPathLatencyMs(from: string): Map<string, number> {
    this.requireNode(from, 'shortestPathLatencyMs');
    const edges = new Map<string, Map<string, number>>();
    for (const pair of this.live) {
      if (!pair.usable) continue;
      for (const [u, v] of directions(pair)) {
        if (pair.channel(u, v)?.isHeld || this.isCut(u, v)) continue;
        let out = edges.get(u);
        if (out === undefined) {
          out = new Map();
          edges.set(u, out);
        }
        out.set(v, this.links.params(u, v).latencyMs);
      }
    }
    // Dijkstra; node counts are small, so a linear scan for the minimum is fine.
    const dist = new Map<string, number>([[from, 0]]);
    const done = new Set<string>();
    while (true) {
      let current: string | undefined;
      let best = Number.POSITIVE_INFINITY;
      for (const [node, d] of dist) {
        if (!done.has(node) && d < best) {
          best = d;
          current = node;
        }
      }
      if (current === undefined) break;
      done.add(current);
      for (const [next, weight] of edges.get(current) ?? []) {
        const candidate = best + weight;
        if (candidate < (dist.get(next) ?? Number.POSITIVE_INFINITY)) dist.set(next, candidate);
      }
    }
    return dist;
  }

  /** Tear down every connection and timer (end of a simulation). Listeners stay registered. */
  close(): void {
    for (const timer of this.oneWayCuts.values()) if (timer !== undefined) clearTimeout(timer);
    this.oneWayCuts.clear();
    this.destroyWhere(
      () => true,
      () => new ConnectionFailedError('sim network closed'),
    );
  }

  // ---- SimFabric (used by SimTransport) -----------------------------------------------------------------

  listen(handler: SimInboundHandler): void {
    if (!this.nodeNames.has(handler.node)) throw new ListenError(`sim: unknown node ${handler.node}`);
    if (this.listeners.has(handler.node))
      throw new ListenError(`sim: /memory/${handler.node} is already in use`);
    this.listeners.set(handler.node, handler);
  }

  unlisten(handler: SimInboundHandler): void {
    if (this.listeners.get(handler.node) === handler) this.listeners.delete(handler.node);
  }

  async dial(request: SimDialRequest): Promise<SimConnectionEnd> {
    const { from, to, signal } = request;
    this.requireNode(from, 'dial');
    this.refuseUnlessReachable(from, to);
    // SYN: the listener learns of the connection one (jittered) latency later.
    await sleep(this.links.sampleDelayMs(from, to), signal);
    this.refuseUnlessReachable(from, to);
    const handler = this.listeners.get(to) as SimInboundHandler;
    const id = this.nextConnectionId++;
    const pair = new SimConnectionPair({
      id,
      links: this.links,
      dialer: {
        node: from,
        remoteAddr: multiaddr(`/memory/${to}/p2p/${handler.peerId}`),
        log: request.dialerLog,
      },
      listener: {
        node: to,
        // Like TCP's ephemeral source port: unique per connection and not dialable. Using the dialer's
        // listen address here would make libp2p abort one of two connections crossing between the same
        // pair of nodes as a "duplicate multiaddr connection".
        remoteAddr: multiaddr(`/memory/${from}:${id}/p2p/${request.dialerPeerId}`),
        log: handler.log,
      },
      onData: (f, t, bytes) => this.countData(f, t, bytes),
      onClosed: (closed) => {
        if (this.live.delete(closed)) this.connectionCounters.ended++;
      },
    });
    this.live.add(pair);
    this.connectionCounters.opened++;
    handler.accept(pair.listenerEnd);
    // SYN-ACK: the dialer may send once the answer is back.
    try {
      await sleep(this.links.sampleDelayMs(to, from), signal);
    } catch (err) {
      pair.dialerEnd.abort(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
    if (pair.dialerEnd.closed)
      throw new ConnectionFailedError(`sim dial ${from} -> ${to}: closed during handshake`);
    return pair.dialerEnd;
  }

  // ---- internals ----------------------------------------------------------------------------------------

  private refuseUnlessReachable(from: string, to: string): void {
    const reason = this.unreachableReason(from, to);
    if (reason === undefined) return;
    this.connectionCounters.dialsRefused++;
    throw new ConnectionFailedError(`sim dial ${from} -> ${to} refused: ${reason}`);
  }

  private unreachableReason(from: string, to: string): string | undefined {
    if (from === to) return 'dialing self';
    if (this.crashed.has(from)) return `${from} is crashed`;
    if (!this.nodeNames.has(to)) return `no node named ${to}`;
    if (this.crashed.has(to)) return `${to} is crashed`;
    if (this.isCut(from, to) || this.isCut(to, from)) return 'path is cut';
    if (!this.listeners.has(to)) return `nothing listens on /memory/${to}`;
    return undefined;
  }

  /** Bring every live connection in line with the current cuts. */
  private applyCuts(): void {
    if (this.partitionMode === 'abort') {
      this.destroyWhere(
        (pair) => this.partitionCuts.has(key(pair.dialerNode, pair.listenerNode)),
        () => new ConnectionFailedError('sim: partitioned'),
      );
    }
    for (const pair of this.live) {
      for (const [from, to] of directions(pair)) {
        const channel = pair.channel(from, to);
        if (this.isCut(from, to)) channel?.hold();
        else channel?.release();
      }
    }
  }

  private destroyWhere(match: (pair: SimConnectionPair) => boolean, reason: () => Error): void {
    for (const pair of [...this.live]) {
      if (!match(pair)) continue;
      this.connectionCounters.destroyedByNetwork++;
      pair.destroy(reason());
    }
  }

  private countData(from: string, to: string, bytes: number): void {
    const k = key(from, to);
    let counters = this.linkCounters.get(k);
    if (counters === undefined) {
      counters = { from, to, bytes: 0, chunks: 0 };
      this.linkCounters.set(k, counters);
    }
    counters.bytes += bytes;
    counters.chunks++;
  }

  private requireNode(name: string, what: string): void {
    if (!this.nodeNames.has(name)) throw new RangeError(`${what}: unknown sim node ${JSON.stringify(name)}`);
  }
}

function directions(pair: SimConnectionPair): Array<[string, string]> {
  return [
    [pair.dialerNode, pair.listenerNode],
    [pair.listenerNode, pair.dialerNode],
  ];
}

function emptyConnectionCounters(): ConnectionCounters {
  return { opened: 0, open: 0, ended: 0, destroyedByNetwork: 0, dialsRefused: 0 };
}

/** setTimeout that rejects with the signal's reason when aborted. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
