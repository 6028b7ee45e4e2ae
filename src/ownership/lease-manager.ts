import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import type { Counter, Gauge, Registry } from 'prom-client';
import { Listeners } from '../util/listeners.js';
import { counterIn, gaugeIn } from '../util/metrics.js';
import { LeaseClaimant, type LeaseStatus, type LeaseWant, type Outgoing } from './claimant-core.js';
import { WINDOW_STRETCH } from './lease-bounds.js';
import type { LeaseReply, LeaseRequest } from './lease-messages.js';
import type { WitnessConfig } from './witness-config.js';

/**
 * Drives this node's LeaseClaimant (docs/placement.md, "Witness leases"):
 * sends the rounds it asks for to the witnesses (itself without the
 * network), feeds the replies back, and tells the reconcile loop when a
 * lease starts or ends so it can start or fence at once.
 *
 * Every time here is on a monotonic clock (performance.now by default),
 * never the wall clock: a lease is a duration on this node's clock from the
 * send time of the request that earned it. A watchdog on the event loop
 * drops every grant when the loop stalled past `stallMarginMs` (rule C6):
 * after a stall nothing decided before it may be acted on.
 */
export interface LeaseTransport {
  /** Sends a batch to witness `nodeId`; resolves with one reply per request (same order). */
  ask(nodeId: string, requests: LeaseRequest[]): Promise<LeaseReply[]>;
}

export interface LeaseManagerOptions {
  selfId: string;
  transport: LeaseTransport;
  /** Serves batches addressed to this node itself (its own witness role). */
  local: (requests: LeaseRequest[]) => LeaseReply[];
  config: () => WitnessConfig | null;
  now?: () => number;
  /** A loop stall longer than this drops every grant (default 2 s: services.fence_slack). */
  stallMarginMs: number;
  /** Acquisition retry base (default 500 ms). */
  retryMs?: number;
  logger: Logger;
  registry: Registry;
}

const WATCHDOG_MS = 100;
/** Round trips of lease batches kept for the window estimate. */
const RTT_SAMPLES = 64;

export class LeaseManager {
  private readonly options: LeaseManagerOptions;
  private readonly claimant: LeaseClaimant;
  private readonly clock: () => number;
  private readonly logger: Logger;
  private readonly listeners = new Listeners<[]>((err) =>
    this.logger.error({ err }, 'lease listener failed'),
  );
  private readonly metrics: { stalls: Counter; rounds: Counter<'result'>; held: Gauge };
  private pollTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private edgeTimer: NodeJS.Timeout | null = null;
  private lastBeat = 0;
  private readonly rtts: number[] = [];
  private running = false;
  /** workload → mayRun as last reported, to notify on changes only. */
  private reported = new Map<string, boolean>();

  constructor(options: LeaseManagerOptions) {
    this.options = options;
    this.clock = options.now ?? (() => performance.now());
    this.logger = options.logger.child({ component: 'lease' });
    this.claimant = new LeaseClaimant({
      selfId: options.selfId,
      retryMs: options.retryMs ?? 500,
      // A fresh incarnation per process (docs/protocol.md, "Witness leases").
      incarnation: randomInt(1, 2 ** 47),
    });
    this.metrics = {
      stalls: counterIn(options.registry, {
        name: 'silo_lease_loop_stalls_total',
        help: 'Event-loop stalls longer than the margin; each dropped every lease grant this node held',
      }),
      rounds: counterIn(options.registry, {
        name: 'silo_lease_batches_sent_total',
        help: 'Lease request batches sent to witnesses by result',
        labelNames: ['result'],
      }),
      held: gaugeIn(options.registry, {
        name: 'silo_leases_held',
        help: 'Exclusive workloads whose lease this node holds (a quorum of witnesses granted it)',
        collect: () => {
          const config = this.options.config();
          const now = this.clock();
          this.metrics.held.set(
            this.claimant.wanted().filter((w) => this.claimant.status(w, now, config).held).length,
          );
        },
      }),
    };
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.lastBeat = this.clock();
    this.watchdog = setInterval(() => this.checkStall(), WATCHDOG_MS);
    this.watchdog.unref();
    this.schedulePoll();
  }

  stop(): void {
    this.running = false;
    for (const timer of [this.pollTimer, this.edgeTimer]) if (timer) clearTimeout(timer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.pollTimer = this.edgeTimer = this.watchdog = null;
  }

  /** Called when a lease starts or ends (may run / must stop). */
  onChange(listener: () => void): () => void {
    return this.listeners.add(listener);
  }

  want(workload: string, want: LeaseWant): void {
    const before = this.claimant.wanted().includes(workload);
    this.claimant.want(workload, want, this.clock());
    if (!before) {
      this.logger.info({ workload, durationMs: want.durationMs }, 'asking the witnesses for a lease');
      this.schedulePoll(0);
    }
  }

  /** The workload is not running here (stopped or never started): release its lease. */
  unwant(workload: string): void {
    if (!this.claimant.wanted().includes(workload)) return;
    this.claimant.unwant(workload, this.clock());
    this.logger.info({ workload }, 'lease released');
    this.schedulePoll(0);
  }

  /**
   * The agent stops and nothing runs here any more (the caller stopped every
   * process): releases every lease and waits up to `timeoutMs` for the
   * witnesses to answer, so that the next holder does not wait out the hold.
   */
  async releaseAll(timeoutMs: number): Promise<void> {
    const workloads = this.claimant.wanted();
    if (workloads.length === 0) return;
    for (const workload of workloads) this.claimant.unwant(workload, this.clock());
    const sent = this.send(this.claimant.poll(this.clock(), this.options.config()));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.allSettled(sent), timeout]);
    clearTimeout(timer);
    this.logger.info({ workloads }, 'leases released: agent stopping');
  }

  wanted(): string[] {
    return this.claimant.wanted();
  }

  configured(): boolean {
    return this.options.config() !== null;
  }

  status(workload: string): LeaseStatus {
    this.checkStall();
    return this.claimant.status(workload, this.clock(), this.options.config());
  }

  /** Whether `workload` may run here right now (its lease is held and not within the stop budget of its end). */
  mayRun(workload: string): boolean {
    return this.status(workload).mayRun;
  }

  private checkStall(): void {
    const now = this.clock();
    const gap = now - this.lastBeat;
    this.lastBeat = now;
    if (gap > this.options.stallMarginMs + WATCHDOG_MS && this.running) {
      this.metrics.stalls.inc();
      const held = this.claimant
        .wanted()
        .filter((w) => this.claimant.status(w, now, this.options.config()).held);
      this.claimant.dropAll();
      if (held.length > 0) {
        this.logger.error(
          { stalledMs: Math.round(gap), workloads: held },
          'event loop stalled past the lease margin: every lease grant dropped, exclusive workloads fence',
        );
      }
      this.notify();
    }
  }

  private schedulePoll(delayMs?: number): void {
    if (!this.running) return;
    const now = this.clock();
    const next = this.claimant.nextPollAt();
    const wait = delayMs ?? (next === null ? null : Math.max(0, next - now));
    if (wait === null) return;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      this.poll();
    }, wait);
    this.pollTimer.unref();
  }

  private poll(): void {
    if (!this.running) return;
    this.send(this.claimant.poll(this.clock(), this.options.config()));
    this.schedulePoll();
    this.checkEdges();
  }

  /** Sends a poll's requests, one batch per witness; resolves per batch when its replies are in. */
  private send(outgoing: Outgoing[]): Promise<void>[] {
    const byWitness = new Map<string, LeaseRequest[]>();
    for (const { to, request } of outgoing) {
      const batch = byWitness.get(to) ?? [];
      batch.push(request);
      byWitness.set(to, batch);
    }
    const sent: Promise<void>[] = [];
    for (const [to, requests] of byWitness) {
      if (to === this.options.selfId) {
        this.deliver(this.options.local(requests));
        continue;
      }
      const sentAt = this.clock();
      sent.push(
        this.options.transport.ask(to, requests).then(
          (replies) => {
            this.recordRtt(this.clock() - sentAt);
            this.metrics.rounds.inc({ result: 'ok' });
            this.deliver(replies);
          },
          (err: unknown) => {
            this.metrics.rounds.inc({ result: 'error' });
            this.logger.debug({ witness: to, err: (err as Error).message }, 'lease batch failed');
          },
        ),
      );
    }
    return sent;
  }

  private recordRtt(ms: number): void {
    this.rtts.push(ms);
    if (this.rtts.length > RTT_SAMPLES) this.rtts.shift();
  }

  /**
   * The run window to ask for, at least `baseMs` (fence_after): on a slow or
   * lossy network (TCP retransmissions stall a connection for seconds)
   * renewals come back late, so the window stretches to 4× the slow tail of
   * recent round trips, up to 4× `baseMs`. Any length is as safe as any
   * other (the witnesses hold what was asked for); a longer one trades
   * takeover time for not fencing a holder the network merely slowed.
   * WINDOW_STRETCH is part of the witnesses' bound on lease lengths
   * (lease-bounds.ts).
   */
  windowFor(baseMs: number): number {
    if (this.rtts.length < 4) return baseMs;
    const sorted = [...this.rtts].sort((a, b) => a - b);
    const tail = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))]!;
    return Math.round(Math.min(WINDOW_STRETCH * baseMs, Math.max(baseMs, 4 * tail)));
  }

  private deliver(replies: readonly LeaseReply[]): void {
    const now = this.clock();
    for (const reply of replies) this.claimant.onReply(reply, now);
    this.checkEdges();
  }

  /** Notifies when a workload's mayRun flipped, and arms a timer for the next run-window end. */
  private checkEdges(): void {
    const now = this.clock();
    const config = this.options.config();
    let changed = false;
    let nextEdge: number | null = null;
    const current = new Map<string, boolean>();
    for (const workload of this.claimant.wanted()) {
      const status = this.claimant.status(workload, now, config);
      current.set(workload, status.mayRun);
      if ((this.reported.get(workload) ?? false) !== status.mayRun) changed = true;
      if (status.mayRun && status.runUntil !== null)
        nextEdge = nextEdge === null ? status.runUntil : Math.min(nextEdge, status.runUntil);
    }
    for (const [workload, was] of this.reported) if (was && !current.has(workload)) changed = true;
    this.reported = current;
    if (this.edgeTimer) clearTimeout(this.edgeTimer);
    this.edgeTimer = null;
    if (nextEdge !== null && this.running) {
      this.edgeTimer = setTimeout(() => this.checkEdges(), Math.max(0, nextEdge - now) + 1);
      this.edgeTimer.unref();
    }
    if (changed) this.notify();
  }

  private notify(): void {
    this.listeners.emit();
  }
}
