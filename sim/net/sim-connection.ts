/**
 * One simulated stream connection: two MultiaddrConnection ends joined by two
 * LinkChannels (one per direction) of the link model.
 *
 * The ends behave like TCP sockets as libp2p's TCP transport uses them:
 * - writing: every chunk the upper layer writes goes through the link model;
 * - close(): sends FIN behind the data already in flight and stops reading;
 *   the other end, on FIN, finishes its reads and closes too (like a Node
 *   socket with allowHalfOpen=false, which answers FIN with FIN);
 * - abort(err): sends RST behind the data in flight; the other end's reads
 *   fail when it arrives. An RST crossing a cut is held like any other
 *   segment, so that end notices only through its own timeouts, as on TCP;
 * - destroy(err) (network side: crash, partition): both ends fail at once.
 *
 * The ends are built from own properties (arrow functions), not prototype
 * methods, because libp2p's upgrader copies the connection with object spread.
 */
import { ConnectionClosedError, type Logger, type MultiaddrConnection } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { ChunkQueue } from './chunk-queue.js';
import type { LinkChannel, LinkModel } from './link-model.js';

/** What crosses a link: stream bytes, or TCP's FIN / RST. */
type Segment = { kind: 'data'; chunk: Uint8Array } | { kind: 'fin' } | { kind: 'rst' };

export class ConnectionResetError extends Error {
  override readonly name = 'ConnectionResetError';
}

export interface SimEndInit {
  /** The node this end belongs to. */
  node: string;
  remoteAddr: Multiaddr;
  log: Logger;
}

export interface SimConnectionPairInit {
  id: number;
  links: LinkModel;
  dialer: SimEndInit;
  listener: SimEndInit;
  /** Counts bytes as they are put on the wire (before any delay). */
  onData: (from: string, to: string, bytes: number) => void;
  /** Both ends are closed; the pair can be forgotten. */
  onClosed: (pair: SimConnectionPair) => void;
}

export class SimConnectionEnd implements MultiaddrConnection {
  readonly node: string;
  readonly source: AsyncGenerator<Uint8Array>;
  remoteAddr: Multiaddr;
  timeline: MultiaddrConnection['timeline'] = { open: Date.now() };
  log: Logger;

  private readonly inbound = new ChunkQueue();
  private outgoing: LinkChannel<Segment> | undefined;
  private finSent = false;
  private done = false;

  constructor(
    init: SimEndInit,
    private readonly onData: (bytes: number) => void,
    private readonly onDone: () => void,
  ) {
    this.node = init.node;
    this.remoteAddr = init.remoteAddr;
    this.log = init.log;
    this.source = this.inbound.read();
  }

  get closed(): boolean {
    return this.done;
  }

  /** Wire the outgoing direction (the pair builds both ends before their channels). */
  attach(outgoing: LinkChannel<Segment>): void {
    this.outgoing = outgoing;
  }

  // Typed through the interface: the project's uint8arraylist is a newer major than @libp2p/interface's.
  sink: MultiaddrConnection['sink'] = async (source) => {
    try {
      for await (const buf of source) {
        // After FIN/RST/destroy, TCP refuses writes; stop pulling from the muxer.
        if (this.done || this.finSent) break;
        const chunk = buf instanceof Uint8Array ? buf : buf.subarray();
        if (chunk.byteLength === 0) continue;
        this.onData(chunk.byteLength);
        this.outgoing?.send({ kind: 'data', chunk });
      }
    } catch (err) {
      // The upper layer's source failed (muxer aborted); as in @libp2p/tcp, log and end our side.
      this.log.error('%s sim connection sink error - %e', this.node, err);
    }
    this.sendFin();
  };

  close = async (): Promise<void> => {
    if (this.done) return;
    this.log('%s closing sim connection', this.node);
    this.sendFin();
    this.inbound.end();
    this.finish();
  };

  abort = (err: Error): void => {
    if (this.done) return;
    this.log('%s aborting sim connection - %e', this.node, err);
    if (!this.finSent) {
      this.finSent = true;
      this.outgoing?.send({ kind: 'rst' });
    }
    this.inbound.fail(err);
    this.finish();
  };

  /** The link delivered a segment to this end. */
  receive(segment: Segment): void {
    if (this.done) return;
    switch (segment.kind) {
      case 'data':
        this.inbound.push(segment.chunk);
        return;
      case 'fin':
        // Remote finished writing: drain what we have, answer with our FIN, close.
        this.inbound.end();
        this.sendFin();
        this.finish();
        return;
      case 'rst':
        this.inbound.fail(new ConnectionResetError(`connection reset by ${this.remoteAddr}`));
        this.finish();
        return;
    }
  }

  /** Network-side failure (crash, partition): no segment is sent, reads fail now. */
  destroy(err: Error): void {
    if (this.done) return;
    this.finSent = true;
    this.inbound.fail(err);
    this.finish();
  }

  private sendFin(): void {
    if (this.finSent || this.done) return;
    this.finSent = true;
    this.outgoing?.send({ kind: 'fin' });
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    // Assign through the property: libp2p's upgrader replaced `timeline` with a Proxy that closes the
    // Connection and emits connection:close when `close` is set.
    this.timeline.close = Date.now();
    this.onDone();
  }
}

export class SimConnectionPair {
  readonly id: number;
  readonly dialerEnd: SimConnectionEnd;
  readonly listenerEnd: SimConnectionEnd;
  private readonly forward: LinkChannel<Segment>;
  private readonly backward: LinkChannel<Segment>;
  private readonly onClosed: (pair: SimConnectionPair) => void;
  private forgotten = false;

  constructor(init: SimConnectionPairInit) {
    this.id = init.id;
    this.onClosed = init.onClosed;
    const d = init.dialer.node;
    const l = init.listener.node;
    const endDone = (): void => this.maybeForget();
    this.dialerEnd = new SimConnectionEnd(init.dialer, (n) => init.onData(d, l, n), endDone);
    this.listenerEnd = new SimConnectionEnd(init.listener, (n) => init.onData(l, d, n), endDone);
    this.forward = init.links.openChannel<Segment>(d, l, (s) => this.listenerEnd.receive(s));
    this.backward = init.links.openChannel<Segment>(l, d, (s) => this.dialerEnd.receive(s));
    this.dialerEnd.attach(this.forward);
    this.listenerEnd.attach(this.backward);
  }

  get dialerNode(): string {
    return this.dialerEnd.node;
  }

  get listenerNode(): string {
    return this.listenerEnd.node;
  }

  /** Both ends closed. */
  get closed(): boolean {
    return this.dialerEnd.closed && this.listenerEnd.closed;
  }

  /** Neither end has closed: bytes can still flow both ways (unless a cut holds them). */
  get usable(): boolean {
    return !this.dialerEnd.closed && !this.listenerEnd.closed;
  }

  /** True if this connection joins a and b (either way round). */
  joins(a: string, b: string): boolean {
    return (
      (this.dialerNode === a && this.listenerNode === b) || (this.dialerNode === b && this.listenerNode === a)
    );
  }

  involves(node: string): boolean {
    return this.dialerNode === node || this.listenerNode === node;
  }

  /** The channel carrying from -> to, if this connection joins them. */
  channel(from: string, to: string): LinkChannel<Segment> | undefined {
    if (this.dialerNode === from && this.listenerNode === to) return this.forward;
    if (this.listenerNode === from && this.dialerNode === to) return this.backward;
    return undefined;
  }

  /** Tear down both ends at once, dropping whatever is in flight (crash, partition). */
  destroy(err: Error = new ConnectionClosedError('sim connection destroyed')): void {
    this.forward.close();
    this.backward.close();
    this.dialerEnd.destroy(err);
    this.listenerEnd.destroy(err);
  }

  private maybeForget(): void {
    if (this.forgotten || !this.closed) return;
    this.forgotten = true;
    // Nobody reads any more: drop in-flight segments and timers.
    this.forward.close();
    this.backward.close();
    this.onClosed(this);
  }
}
