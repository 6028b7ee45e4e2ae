import type { Logger } from 'pino';
import type { Counter, Gauge, Registry } from 'prom-client';
import { counterIn, gaugeIn } from '../util/metrics.js';
import type { GrantStore } from './grant-store.js';
import type { LeaseReply, LeaseRequest } from './lease-messages.js';
import type { WitnessConfig } from './witness-config.js';
import { WitnessCore } from './witness-core.js';

/**
 * A node's witness role: the WitnessCore, its durable grant store, and the
 * configuration in force. Every node runs one (a node that is not a witness
 * answers `not-a-witness`), so a configuration change needs no restart.
 *
 * `serve` is synchronous up to the reply: the batch is decided and written
 * to disk in one lmdb transaction before any reply is returned (rule W1), and
 * no other batch can interleave.
 */
export interface WitnessServiceOptions {
  selfId: string;
  store: GrantStore;
  /** The configuration in force (the enrollment document's newest), read on every batch. */
  config: () => WitnessConfig | null;
  clockDriftPpm: number;
  /** The longest lease this witness grants (lease-bounds.ts); also its quiet period after a restart (W6). */
  maxLeaseMs: number;
  /** Monotonic clock, ms (performance.now in the agent). */
  now: () => number;
  logger: Logger;
  registry: Registry;
}

export class WitnessService {
  private readonly core: WitnessCore;
  private readonly options: WitnessServiceOptions;
  private readonly logger: Logger;
  private readonly decisions: Counter<'op' | 'result'>;
  private readonly holding: Gauge;
  private readonly quiet: Gauge;

  constructor(options: WitnessServiceOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'witness' });
    this.core = new WitnessCore({
      selfId: options.selfId,
      clockDriftPpm: options.clockDriftPpm,
      maxLeaseMs: options.maxLeaseMs,
    });
    const records = options.store.load();
    const startedAt = options.now();
    this.core.restore(records, startedAt);
    if (records.length > 0)
      this.logger.info(
        { records: records.length },
        'witness records restored: every lease they name counts as granted now (a restart never shortens a lease)',
      );
    if (options.store.existed) {
      // W6 (docs/placement.md): the store may be an older copy.
      const quietMs = this.core.startQuietPeriod(startedAt) - startedAt;
      this.logger.info(
        { quietMs, maxLeaseMs: options.maxLeaseMs },
        'witness started on an existing store: it grants no lease until every lease it may have granted before has ended (a restored older copy of the store would have forgotten them)',
      );
    }
    this.decisions = counterIn(options.registry, {
      name: 'silo_witness_requests_total',
      help: 'Lease requests this node answered as a witness, by operation and result (granted or the refusal reason)',
      labelNames: ['op', 'result'],
    });
    this.holding = gaugeIn(options.registry, {
      name: 'silo_witness_leases_held',
      help: 'Workloads for which this witness holds an unexpired, unreleased lease',
      collect: () => {
        const now = this.options.now();
        this.holding.set(
          this.core.workloads().filter((w) => {
            const r = this.core.recordOf(w);
            return r !== undefined && r.holder !== null && !r.released && r.expiresAt > now;
          }).length,
        );
      },
    });
    this.quiet = gaugeIn(options.registry, {
      name: 'silo_witness_quiet_seconds',
      help: 'Seconds this witness still grants no lease after starting on an existing store (rule W6; 0 when it grants)',
      collect: () => this.quiet.set(this.quietRemainingMs() / 1000),
    });
  }

  /** How long this witness still grants nothing after its start (W6), ms; 0 when it grants. */
  quietRemainingMs(): number {
    return this.core.quietRemainingMs(this.options.now());
  }

  /** Answers a batch from node `from`; `null` entries failed validation (or the sender rule). */
  serve(from: string, requests: readonly (LeaseRequest | null)[]): LeaseReply[] {
    const config = this.options.config();
    this.core.setConfig(config);
    const now = this.options.now();
    const replies: LeaseReply[] = [];
    const persist = [];
    for (const request of requests) {
      if (request === null) {
        replies.push(this.invalidReply());
        this.logger.debug(
          { from: from || '(not an active enrolled node)' },
          'lease request refused: malformed, or asks for another node',
        );
        this.decisions.inc({ op: 'unknown', result: 'invalid' });
        continue;
      }
      const result = this.core.handle(request, now);
      replies.push(result.reply);
      if (result.persist) persist.push(result.persist);
      this.decisions.inc({
        op: request.op,
        result: result.reply.granted ? 'granted' : (result.reply.refusal ?? 'refused'),
      });
    }
    // W1: on disk before any reply leaves.
    this.options.store.putAll(persist);
    return replies;
  }

  /** For status output: what this witness records about `workload`. */
  record(
    workload: string,
  ): { holder: string | null; ballot: number; released: boolean; remainingMs: number } | null {
    const record = this.core.recordOf(workload);
    if (!record) return null;
    return {
      holder: record.holder,
      ballot: record.ballot,
      released: record.released,
      remainingMs: Math.max(0, Math.ceil(record.expiresAt - this.options.now())),
    };
  }

  configVersion(): number {
    this.core.setConfig(this.options.config());
    return this.core.configVersion();
  }

  /** The answer to a request that failed validation or the sender rule: it names no workload of the sender's. */
  private invalidReply(): LeaseReply {
    return {
      workload: 'invalid',
      witness: this.options.selfId,
      round: 0,
      granted: false,
      refusal: 'invalid',
      ballot: 0,
      holder: null,
      configVersion: this.core.configVersion(),
      remainingMs: null,
    };
  }
}
