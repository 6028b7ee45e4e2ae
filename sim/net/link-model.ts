/**
 * Per-link, per-direction delivery scheduler: the simulator's model of what a
 * network path does to the bytes of one stream connection.
 *
 * Each item (a chunk, or a FIN/RST marker) sent on a direction arrives at
 *
 *     max(now + latency + jitter + lossPenalty, previous arrival on this direction)
 *
 * i.e. a propagation delay, not a throughput cap: a burst of K chunks arrives
 * about `latency` later, not K × latency (which is what @libp2p/memory's
 * `latency` option does, see docs/sim.md). The max() keeps the byte stream in
 * order, as TCP does.
 *
 * Loss: a stream transport can never drop bytes (noise and yamux framing would
 * break), so a "lost" chunk is delivered late instead, by one retransmission
 * timeout, doubling for each further loss of the retransmission (TCP's
 * exponential backoff). Later chunks queue behind it (head-of-line blocking).
 *
 * Hold (one-way cut): a held direction delivers nothing; at release every
 * pending item is rescheduled from the release time, as if TCP retransmitted
 * it once the path came back.
 */
import { Prng, type Seed } from './prng.js';

export interface LinkParams {
  /** One-way propagation delay, the minimum a chunk takes. */
  latencyMs: number;
  /** Extra delay drawn uniformly from [0, jitterMs) per chunk, so latency stays a lower bound. */
  jitterMs: number;
  /** Percent (0..100) of chunks that are "lost" and so delayed by a retransmission timeout. */
  lossPct: number;
}

export interface LinkModelOptions {
  seed: Seed;
  defaultLatencyMs?: number;
  defaultJitterMs?: number;
  defaultLossPct?: number;
  /** Delay added for a lost chunk (Linux's minimum RTO is 200 ms). Doubles per repeated loss. */
  retransmitTimeoutMs?: number;
  /** Cap for the doubled retransmission timeout. */
  maxRetransmitTimeoutMs?: number;
  /** Monotonic milliseconds; defaults to performance.now. */
  now?: () => number;
}

const DEFAULT_RTO_MS = 200;
const DEFAULT_MAX_RTO_MS = 60_000;
/** setTimeout can fire a fraction of a millisecond "early" against performance.now; deliver those too. */
const TIMER_SLACK_MS = 1;

export function validateLinkParams(params: Partial<LinkParams>, what: string): void {
  for (const key of ['latencyMs', 'jitterMs'] as const) {
    const value = params[key];
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
      throw new RangeError(`${what}: ${key} must be a finite number >= 0, got ${value}`);
    }
  }
  const loss = params.lossPct;
  if (loss !== undefined && !(Number.isFinite(loss) && loss >= 0 && loss < 100)) {
    // 100% would mean a chunk is retransmitted forever; use a cut for that.
    throw new RangeError(`${what}: lossPct must be within [0, 100), got ${loss}`);
  }
}

function directionKey(from: string, to: string): string {
  return `${from}\u0000${to}`;
}

export class LinkModel {
  private readonly root: Prng;
  private defaults: LinkParams;
  private readonly overrides = new Map<string, Partial<LinkParams>>();
  private readonly prngs = new Map<string, Prng>();
  private readonly rtoMs: number;
  private readonly maxRtoMs: number;
  readonly now: () => number;

  constructor(options: LinkModelOptions) {
    this.root = new Prng(options.seed);
    const defaults = {
      latencyMs: options.defaultLatencyMs ?? 0,
      jitterMs: options.defaultJitterMs ?? 0,
      lossPct: options.defaultLossPct ?? 0,
    };
    validateLinkParams(defaults, 'LinkModel defaults');
    this.defaults = defaults;
    this.rtoMs = options.retransmitTimeoutMs ?? DEFAULT_RTO_MS;
    this.maxRtoMs = options.maxRetransmitTimeoutMs ?? DEFAULT_MAX_RTO_MS;
    if (!(this.rtoMs > 0 && this.maxRtoMs >= this.rtoMs)) {
      throw new RangeError('LinkModel: need 0 < retransmitTimeoutMs <= maxRetransmitTimeoutMs');
    }
    this.now = options.now ?? (() => performance.now());
  }

  /** Change the defaults every link without an override uses (fields left out keep their value). */
  setDefault(params: Partial<LinkParams>): void {
    validateLinkParams(params, 'setDefault');
    this.defaults = { ...this.defaults, ...definedOnly(params) };
  }

  /** Override both directions between a and b; fields left out keep the link's current value. */
  setLink(a: string, b: string, params: Partial<LinkParams>): void {
    this.setDirection(a, b, params);
    this.setDirection(b, a, params);
  }

  /** Override one direction only (asymmetric paths). */
  setDirection(from: string, to: string, params: Partial<LinkParams>): void {
    validateLinkParams(params, `setLink(${from} -> ${to})`);
    const key = directionKey(from, to);
    this.overrides.set(key, { ...this.overrides.get(key), ...definedOnly(params) });
  }

  /** Drop every per-link override (back to the defaults). */
  clearOverrides(): void {
    this.overrides.clear();
  }

  params(from: string, to: string): LinkParams {
    return { ...this.defaults, ...this.overrides.get(directionKey(from, to)) };
  }

  /**
   * One delay draw for from -> to: latency + jitter + loss penalty. Each
   * direction has its own PRNG stream forked from the seed, so its sequence
   * depends only on how many chunks crossed that direction.
   */
  sampleDelayMs(from: string, to: string): number {
    const { latencyMs, jitterMs, lossPct } = this.params(from, to);
    const prng = this.prngFor(from, to);
    let delay = latencyMs;
    if (jitterMs > 0) delay += prng.range(0, jitterMs);
    if (lossPct > 0) {
      let rto = this.rtoMs;
      while (prng.chance(lossPct / 100)) {
        delay += rto;
        rto = Math.min(rto * 2, this.maxRtoMs);
      }
    }
    return delay;
  }

  /** A FIFO delivery channel for one direction of one connection. */
  openChannel<T>(from: string, to: string, deliver: (item: T) => void): LinkChannel<T> {
    return new LinkChannel<T>(this, from, to, deliver);
  }

  private prngFor(from: string, to: string): Prng {
    const key = directionKey(from, to);
    let prng = this.prngs.get(key);
    if (prng === undefined) {
      prng = this.root.fork(`link:${key}`);
      this.prngs.set(key, prng);
    }
    return prng;
  }
}

interface Pending<T> {
  item: T;
  /** Arrival time on the model's clock; Infinity while the direction is held. */
  at: number;
}

export class LinkChannel<T> {
  private queue: Pending<T>[] = [];
  private head = 0;
  private lastArrival = Number.NEGATIVE_INFINITY;
  private cancelTimer: (() => void) | undefined;
  private held = false;
  private closed = false;

  constructor(
    private readonly model: LinkModel,
    readonly from: string,
    readonly to: string,
    private readonly deliver: (item: T) => void,
  ) {}

  get pending(): number {
    return this.queue.length - this.head;
  }

  get isHeld(): boolean {
    return this.held;
  }

  send(item: T): void {
    if (this.closed) return;
    this.queue.push({ item, at: this.held ? Number.POSITIVE_INFINITY : this.nextArrival() });
    if (!this.held) this.arm();
  }

  /** Stop delivering (one-way cut): items stay queued, nothing arrives until release(). */
  hold(): void {
    if (this.closed || this.held) return;
    this.held = true;
    this.disarm();
    for (let i = this.head; i < this.queue.length; i++)
      (this.queue[i] as Pending<T>).at = Number.POSITIVE_INFINITY;
  }

  /** Path is back: everything still pending is resent now and arrives one (jittered) latency later. */
  release(): void {
    if (this.closed || !this.held) return;
    this.held = false;
    for (let i = this.head; i < this.queue.length; i++) (this.queue[i] as Pending<T>).at = this.nextArrival();
    this.arm();
  }

  /** Drop everything pending and deliver nothing more (connection torn down). */
  close(): void {
    this.closed = true;
    this.disarm();
    this.queue = [];
    this.head = 0;
  }

  private nextArrival(): number {
    const at = Math.max(this.model.now() + this.model.sampleDelayMs(this.from, this.to), this.lastArrival);
    this.lastArrival = at;
    return at;
  }

  /** One timer per channel, for the head item: arrivals are monotonic, so the head is always due first. */
  private arm(): void {
    if (this.cancelTimer !== undefined || this.pending === 0) return;
    const wait = (this.queue[this.head] as Pending<T>).at - this.model.now();
    if (wait <= 0) {
      const handle = setImmediate(() => this.fire());
      this.cancelTimer = () => clearImmediate(handle);
    } else {
      const handle = setTimeout(() => this.fire(), wait);
      this.cancelTimer = () => clearTimeout(handle);
    }
  }

  private disarm(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  private fire(): void {
    this.cancelTimer = undefined;
    const due = this.model.now() + TIMER_SLACK_MS;
    while (!this.closed && !this.held && this.head < this.queue.length) {
      const next = this.queue[this.head] as Pending<T>;
      if (next.at > due) break;
      this.head++;
      this.deliver(next.item);
    }
    if (this.closed) return;
    // Drop delivered entries so their chunks can be collected; compact in bulk to keep this O(1) amortised.
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (!this.held) this.arm();
  }
}

function definedOnly(params: Partial<LinkParams>): Partial<LinkParams> {
  const out: Partial<LinkParams> = {};
  if (params.latencyMs !== undefined) out.latencyMs = params.latencyMs;
  if (params.jitterMs !== undefined) out.jitterMs = params.jitterMs;
  if (params.lossPct !== undefined) out.lossPct = params.lossPct;
  return out;
}
