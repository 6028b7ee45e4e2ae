import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import * as Y from 'yjs';
import type { z } from 'zod';
import { counterIn } from '../util/metrics.js';
import { SiloError } from '../util/silo-error.js';
import type { ClusterState } from './cluster-state.js';
import { type DocName, Origin } from './names.js';

/**
 * Shared by the typed views: checks what a Y.Map holds against a zod schema
 * and reports what does not fit. The maps are written by every enrolled
 * node, so a reader must expect anything in them (a number, a nested Y.Map,
 * a record from a newer version) and skip it without throwing.
 */

export interface InvalidRecord {
  doc: DocName;
  map: string;
  key: string;
  reason: string;
  /** `invalid`: fails the schema. `unverified`: schema-valid but rejected by a verify hook. */
  kind: 'invalid' | 'unverified';
}

export type InvalidRecordHandler = (record: InvalidRecord) => void;

/** What every view takes. */
export interface ViewOptions {
  state: ClusterState;
  logger: Logger;
  registry: Registry;
  /** Called once per distinct bad value (after logging and counting). */
  onInvalid?: InvalidRecordHandler;
}

/** A writer was handed a record that does not match its schema; nothing was written. */
export class InvalidRecordError extends SiloError<'invalid_record'> {
  constructor(
    readonly doc: DocName,
    readonly map: string,
    readonly key: string,
    readonly reason: string,
  ) {
    super('invalid_record', `invalid ${doc}/${map} record ${JSON.stringify(key)}: ${reason}`);
  }
}

export function describeZodError(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(record)'}: ${issue.message}`)
    .join('; ');
}

/** Code-point order, the same on every node (Y.Map iteration order is not). */
export function byKey<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/** How far ahead of this node's clock a record's stamp may be before it is reported (clock skew, not a bug). */
export const FUTURE_STAMP_MS = 5 * 60_000;

export class RecordChecker {
  private readonly logger: Logger;
  private readonly invalidTotal: Counter<'doc' | 'map'>;
  private readonly unverifiedTotal: Counter<'doc' | 'map'>;
  private readonly aheadTotal: Counter<'doc' | 'map'>;
  /** Slots already reported as stamped ahead of our clock, with the stamp time reported. */
  private readonly reportedAhead = new Map<string, number>();
  private readonly onInvalid: InvalidRecordHandler | undefined;
  /**
   * Last bad value reported per map/key. Level-triggered readers list the
   * maps on every change; without this a single bad value would be logged
   * and counted on every read. A changed value under the key is reported
   * anew.
   */
  private readonly reported = new Map<string, unknown>();
  /**
   * Verify verdicts per map, by stored value. A winner is verified when it is
   * chosen (SlottedMap `accepts`) and again by every read of it, and an
   * Ed25519 check costs far more than the rest of a read. Sound because a
   * view's hooks are fixed at construction (the org's CA key) and a stored
   * value is never mutated in place (Yjs replaces it; parse hands out
   * copies); weak, so a value replaced in the document takes its verdict with it.
   */
  private readonly verdicts = new Map<string, WeakMap<object, string | null>>();

  constructor(
    readonly doc: DocName,
    options: ViewOptions,
  ) {
    this.logger = options.logger.child({ component: `${doc}-view` });
    this.onInvalid = options.onInvalid;
    this.invalidTotal = counterIn(options.registry, {
      name: 'silo_state_invalid_records_total',
      help: 'Distinct values in a document map that failed schema validation and were skipped by readers',
      labelNames: ['doc', 'map'],
    });
    this.unverifiedTotal = counterIn(options.registry, {
      name: 'silo_state_unverified_records_total',
      help: 'Distinct schema-valid records rejected by a verify hook (e.g. a bad CA signature) and skipped',
      labelNames: ['doc', 'map'],
    });
    this.aheadTotal = counterIn(options.registry, {
      name: 'silo_state_future_stamps_total',
      help: "Distinct records whose stamp is more than FUTURE_STAMP_MS ahead of this node's clock (a writer with a wrong clock)",
      labelNames: ['doc', 'map'],
    });
  }

  /**
   * Notes a record stamped well ahead of this node's clock: kept (the stamp
   * order is what every node agrees on), but its writer's clock is wrong and
   * it wins every concurrent write of its key until real time catches up
   * (docs/epochs.md, "Clock skew"). Counted and logged once per slot and stamp.
   */
  stampAhead(map: string, slot: string, writer: string, at: number, now: number): void {
    if (at - now <= FUTURE_STAMP_MS) return;
    const id = `${map}\u0000${slot}`;
    if (this.reportedAhead.get(id) === at) return;
    this.reportedAhead.set(id, at);
    this.aheadTotal.inc({ doc: this.doc, map });
    this.logger.warn(
      { doc: this.doc, map, slot, writer, aheadMs: at - now },
      "record stamped ahead of this clock: its writer's clock is wrong",
    );
  }

  /**
   * `value` parsed by `schema` (a fresh copy: callers may not mutate the
   * document through it), or undefined after reporting why not.
   * `keyCheck` ties the key to the record (e.g. a node's record under
   * another node's id is invalid); it returns a reason or null.
   */
  parse<T>(
    map: string,
    key: string,
    value: unknown,
    schema: z.ZodType<T>,
    keyCheck?: (record: T) => string | null,
  ): T | undefined {
    if (value instanceof Y.AbstractType) {
      this.report(map, key, value, 'a nested Yjs type where a plain record belongs', 'invalid');
      return undefined;
    }
    const result = schema.safeParse(value);
    if (!result.success) {
      this.report(map, key, value, describeZodError(result.error), 'invalid');
      return undefined;
    }
    const keyProblem = keyCheck?.(result.data) ?? null;
    if (keyProblem !== null) {
      this.report(map, key, value, keyProblem, 'invalid');
      return undefined;
    }
    // Forget a bad value once the key holds another one. The same value may
    // still be pending a verify rejection, which must not be re-reported.
    const id = slot(map, key);
    if (this.reported.has(id) && !Object.is(this.reported.get(id), value)) this.reported.delete(id);
    return result.data;
  }

  /**
   * Checks a map key on its own (e.g. a node id), reporting a bad one.
   * `subject` is the part checked when `key` is a path (`node/workload`).
   */
  key(map: string, key: string, value: unknown, schema: z.ZodType<string>, subject: string = key): boolean {
    const result = schema.safeParse(subject);
    if (result.success) return true;
    this.report(map, key, value, `bad key: ${describeZodError(result.error)}`, 'invalid');
    return false;
  }

  /** Applies a verify hook; reports and returns false on rejection. */
  verified<T>(
    map: string,
    key: string,
    value: unknown,
    record: T,
    verify?: (record: T) => string | null,
  ): boolean {
    if (!verify) return true;
    const reason = this.verdictOf(map, value, () => {
      try {
        return verify(record);
      } catch (err) {
        return `verifier threw: ${err instanceof Error ? err.message : String(err)}`;
      }
    });
    if (reason === null) return true;
    this.report(map, key, value, reason, 'unverified');
    return false;
  }

  /** The verdict on `value` in `map`, computed once per stored object (see `verdicts`). */
  private verdictOf(map: string, value: unknown, compute: () => string | null): string | null {
    if (typeof value !== 'object' || value === null) return compute();
    let byValue = this.verdicts.get(map);
    if (byValue === undefined) {
      byValue = new WeakMap();
      this.verdicts.set(map, byValue);
    }
    const known = byValue.get(value);
    if (known !== undefined) return known;
    const verdict = compute();
    byValue.set(value, verdict);
    return verdict;
  }

  report(map: string, key: string, value: unknown, reason: string, kind: InvalidRecord['kind']): void {
    const id = slot(map, key);
    if (this.reported.has(id) && Object.is(this.reported.get(id), value)) return;
    this.reported.set(id, value);
    (kind === 'invalid' ? this.invalidTotal : this.unverifiedTotal).inc({ doc: this.doc, map });
    this.logger.warn({ doc: this.doc, map, key, reason, kind }, 'skipping bad record in replicated document');
    try {
      this.onInvalid?.({ doc: this.doc, map, key, reason, kind });
    } catch (err) {
      this.logger.error({ err }, 'onInvalid handler failed');
    }
  }

  /** Validates a record for a writer; throws InvalidRecordError instead of reporting. */
  require<T>(map: string, key: string, value: unknown, schema: z.ZodType<T>): T {
    const result = schema.safeParse(value);
    if (!result.success) throw new InvalidRecordError(this.doc, map, key, describeZodError(result.error));
    return result.data;
  }
}

/**
 * Calls `listener` once after every transaction on `doc` that changed one of
 * the maps named `maps` (deep changes included), with the transaction origin,
 * and with `Origin.epoch` after the document moved to another epoch (anything
 * may have changed). Listener errors are logged, not thrown: Yjs would
 * otherwise raise them out of the writer's `transact` after the write was
 * already durable.
 */
export function onMapsChange(
  state: ClusterState,
  doc: DocName,
  maps: readonly string[],
  logger: Logger,
  listener: (origin: unknown) => void,
): () => void {
  // Defined now, before any remote update can create them as untyped roots (see ClusterState.bind).
  for (const name of maps) state.doc(doc).getMap(name);
  return state.onTransaction(doc, 'after', (tr) => {
    if (tr !== null) {
      const current = state.doc(doc);
      const watched = new Set<unknown>(maps.map((name) => current.getMap(name)));
      // changedParentTypes holds every changed type and all its ancestors, so
      // a change inside a nested map shows up under its top-level map.
      if (![...tr.changedParentTypes.keys()].some((type) => watched.has(type))) return;
    }
    try {
      listener(tr === null ? Origin.epoch : tr.origin);
    } catch (err) {
      logger.error({ err }, 'view change listener failed');
    }
  });
}

function slot(map: string, key: string): string {
  return `${map}\u0000${key}`;
}
