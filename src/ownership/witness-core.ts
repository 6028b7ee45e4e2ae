import type { LeaseReply, LeaseRequest, RefusalReason } from './lease-messages.js';
import { MAX_LEASE_MS } from './lease-messages.js';
import type { WitnessConfig } from './witness-config.js';

/**
 * The witness side of the lease protocol (docs/placement.md, rules W1-W6).
 * Pure: time comes in as `now` (this witness's monotonic clock, ms), the
 * caller persists what `handle` returns in `persist` durably BEFORE it sends
 * the reply, and feeds the persisted records back to `restore` after a
 * restart. Nothing here reads a clock or does I/O.
 */

/** What a witness must remember across restarts about one workload. */
export interface WitnessRecord {
  workload: string;
  /** Highest ballot granted (0: never granted). */
  ballot: number;
  /** Node holding `ballot`, null when none. */
  holder: string | null;
  /** The holder's claimant incarnation (0 when none). */
  incarnation: number;
  /** The holder said it stopped (W4); the ballot stays used. */
  released: boolean;
  /**
   * Longest lease length the holder asked for with this ballot, on its own
   * clock: a restart holds it this long again, so it never cuts short a
   * longer lease an earlier round promised (W5).
   */
  durationMs: number;
}

interface LiveRecord extends WitnessRecord {
  /** Local time the hold ends (durationMs stretched by the drift bound). */
  expiresAt: number;
}

export interface WitnessCoreOptions {
  selfId: string;
  /** Clock rates differ from real time by at most this many parts per million (docs/placement.md). */
  clockDriftPpm: number;
  /**
   * The longest lease this witness grants (claimant's clock, ms; at most
   * MAX_LEASE_MS, the default). Longer requests are refused `too-long`. It
   * bounds the quiet period after a restart (W6), so it is also what a
   * restart costs this witness in availability.
   */
  maxLeaseMs?: number;
}

export interface HandleResult {
  reply: LeaseReply;
  /** Must be on disk (fsynced) before `reply` leaves this node; null when nothing changed. */
  persist: WitnessRecord | null;
}

/**
 * How long a witness holds a lease the claimant counts as `durationMs` on its
 * own clock: the claimant's clock may run slow by ρ and ours fast by ρ, so
 * the hold outlasts the claimant's belief in real time:
 * hold/(1+ρ) ≥ duration/(1−ρ).
 */
export function holdMs(durationMs: number, clockDriftPpm: number): number {
  const rho = clockDriftPpm / 1e6;
  return Math.ceil((durationMs * (1 + rho)) / (1 - rho)) + 1;
}

export class WitnessCore {
  private readonly selfId: string;
  private readonly driftPpm: number;
  private readonly maxLeaseMs: number;
  private readonly records = new Map<string, LiveRecord>();
  private config: WitnessConfig | null = null;
  /** W6: no hold is granted before this local time. */
  private quietUntil = Number.NEGATIVE_INFINITY;

  constructor(options: WitnessCoreOptions) {
    if (
      !(
        Number.isFinite(options.clockDriftPpm) &&
        options.clockDriftPpm >= 0 &&
        options.clockDriftPpm < 100_000
      )
    )
      throw new RangeError(`clockDriftPpm must be in [0, 100000), got ${options.clockDriftPpm}`);
    const maxLeaseMs = options.maxLeaseMs ?? MAX_LEASE_MS;
    if (!(Number.isSafeInteger(maxLeaseMs) && maxLeaseMs >= 1 && maxLeaseMs <= MAX_LEASE_MS))
      throw new RangeError(`maxLeaseMs must be an integer in [1, ${MAX_LEASE_MS}], got ${maxLeaseMs}`);
    this.selfId = options.selfId;
    this.driftPpm = options.clockDriftPpm;
    this.maxLeaseMs = maxLeaseMs;
  }

  /**
   * W6: after a start on a store that existed, grant no hold for one maximal
   * hold. The store may be an older copy (restored from a backup, a VM
   * snapshot rolled back) that has forgotten grants made since; W1 and W5
   * cannot help with what was never read back. Every lease this witness
   * granted in an earlier life has ended once the quiet period is over,
   * whatever the store says. Returns the local time it ends.
   */
  startQuietPeriod(now: number): number {
    this.quietUntil = Math.max(this.quietUntil, now + holdMs(this.maxLeaseMs, this.driftPpm));
    return this.quietUntil;
  }

  /** How long the quiet period still lasts, ms (0: over, or none). */
  quietRemainingMs(now: number): number {
    return Math.max(0, Math.ceil(this.quietUntil - now));
  }

  /**
   * After a restart: every lease the records name counts as freshly granted
   * now (the old clock readings mean nothing to a new process). W5: a
   * restarted witness never shortens a lease.
   */
  restore(records: Iterable<WitnessRecord>, now: number): void {
    for (const record of records) {
      const expiresAt =
        record.holder !== null && !record.released ? now + holdMs(record.durationMs, this.driftPpm) : now;
      this.records.set(record.workload, { ...record, expiresAt });
    }
  }

  /** The configuration this witness counts in (the newest it knows); it never goes back (W3). */
  setConfig(config: WitnessConfig | null): void {
    if (config === null) return;
    if (this.config !== null && config.version < this.config.version) return;
    this.config = config;
  }

  configVersion(): number {
    return this.config?.version ?? 0;
  }

  isWitness(): boolean {
    return this.config?.witnesses.includes(this.selfId) ?? false;
  }

  handle(request: LeaseRequest, now: number): HandleResult {
    const record = this.records.get(request.workload);
    const refuse = (refusal: RefusalReason): HandleResult => ({
      reply: this.reply(request, now, false, refusal),
      persist: null,
    });
    if (!validRequest(request)) return refuse('invalid');
    if (!this.isWitness()) return refuse('not-a-witness');
    if (request.configVersion !== this.configVersion()) return refuse('config-mismatch');
    if (request.op === 'hold') {
      if (request.durationMs > this.maxLeaseMs) return refuse('too-long');
      // W6: renewals too: a restored record may name a holder that lost the
      // lease to another in the forgotten part of the history.
      if (now < this.quietUntil) return refuse('quiet');
    }

    if (request.op === 'release') {
      // W4: only the holder of that very ballot can release it.
      if (
        !record ||
        record.holder !== request.node ||
        record.incarnation !== request.incarnation ||
        record.ballot !== request.ballot ||
        record.released
      ) {
        return { reply: this.reply(request, now, false, 'stale-ballot'), persist: null };
      }
      const next: LiveRecord = { ...record, released: true, expiresAt: now };
      this.records.set(request.workload, next);
      return { reply: this.reply(request, now, true, null), persist: stored(next) };
    }

    const current = record ?? {
      workload: request.workload,
      ballot: 0,
      holder: null,
      incarnation: 0,
      released: false,
      durationMs: 0,
      expiresAt: now,
    };
    const renewal =
      current.holder === request.node &&
      current.incarnation === request.incarnation &&
      current.ballot === request.ballot &&
      !current.released;
    if (!renewal) {
      // W2: a new grant needs a ballot above every ballot granted, and no
      // unexpired lease of ANOTHER node. The same node may take a new ballot
      // over its own lease (it restarted; its processes died with it).
      if (request.ballot <= current.ballot) return refuse('stale-ballot');
      const live = current.holder !== null && !current.released && now < current.expiresAt;
      if (live && current.holder !== request.node) return refuse('held');
    }
    const next: LiveRecord = {
      workload: request.workload,
      ballot: request.ballot,
      holder: request.node,
      incarnation: request.incarnation,
      released: false,
      durationMs: renewal ? Math.max(current.durationMs, request.durationMs) : request.durationMs,
      // Never shorten a hold already promised (a renewal asking for less).
      expiresAt: Math.max(renewal ? current.expiresAt : now, now + holdMs(request.durationMs, this.driftPpm)),
    };
    this.records.set(request.workload, next);
    return { reply: this.reply(request, now, true, null), persist: stored(next) };
  }

  /** For status output and tests. */
  recordOf(workload: string): Readonly<WitnessRecord & { expiresAt: number }> | undefined {
    return this.records.get(workload);
  }

  workloads(): string[] {
    return [...this.records.keys()].sort();
  }

  private reply(
    request: LeaseRequest,
    now: number,
    granted: boolean,
    refusal: RefusalReason | null,
  ): LeaseReply {
    const record = this.records.get(request.workload);
    const holder = record && !record.released ? record.holder : null;
    return {
      workload: request.workload,
      witness: this.selfId,
      round: request.round,
      granted,
      refusal,
      ballot: record?.ballot ?? 0,
      holder,
      configVersion: this.configVersion(),
      remainingMs: record && holder !== null ? Math.max(0, Math.ceil(record.expiresAt - now)) : null,
    };
  }
}

function stored(record: LiveRecord): WitnessRecord {
  const { workload, ballot, holder, incarnation, released, durationMs } = record;
  return { workload, ballot, holder, incarnation, released, durationMs };
}

function validRequest(request: LeaseRequest): boolean {
  return (
    (request.op === 'hold' || request.op === 'release') &&
    typeof request.workload === 'string' &&
    request.workload.length > 0 &&
    typeof request.node === 'string' &&
    request.node.length > 0 &&
    Number.isSafeInteger(request.incarnation) &&
    request.incarnation >= 1 &&
    Number.isSafeInteger(request.ballot) &&
    request.ballot >= 1 &&
    Number.isSafeInteger(request.configVersion) &&
    Number.isSafeInteger(request.round) &&
    Number.isFinite(request.durationMs) &&
    request.durationMs > 0 &&
    request.durationMs <= MAX_LEASE_MS
  );
}
