import { type Database, open, type RootDatabase } from 'lmdb';
import type { Logger } from 'pino';
import type { Counter, Histogram, Registry } from 'prom-client';
import { counterIn, histogramIn } from '../util/metrics.js';
import { type EpochInfo, GENESIS_EPOCH } from './epochs/epoch.js';
import { storePathProblem } from './lmdb-preflight.js';
import {
  decodeFrame,
  docRange,
  encodeFrame,
  encodeQuarantined,
  parseTailSeq,
  type QuarantineKind,
  quarantineKey,
  snapshotKey,
  tailKey,
} from './log-frame.js';
import { DOC_NAMES, type DocName, isDocName } from './names.js';
import { messageOf, StoreOpenError, StoreWriteError, UpdateLogUsageError } from './store-errors.js';
import type { UpdateLog } from './update-log.js';

export { StoreOpenError, StoreWriteError, UpdateLogUsageError } from './store-errors.js';

/** Version of the byte layout in docs/protocol.md, "Durable storage (lmdb)". Bump on any change. */
export const STORE_FORMAT_VERSION = 1;

/**
 * - `sync` (default): every commit is fdatasync'ed before `append` returns;
 *   survives SIGKILL, kernel crash and power loss.
 * - `nosync`: lmdb's MDB_NOSYNC. Commits still reach the OS page cache before
 *   `append` returns, so a killed process loses nothing, but a kernel crash
 *   or power loss may lose recent commits. For the simulator and benchmarks
 *   that run many agents on one disk.
 */
export type Durability = 'sync' | 'nosync';

export interface LmdbUpdateLogOptions {
  /** Directory of the store (holds data.mdb and lock.mdb); created if missing. */
  path: string;
  logger: Logger;
  registry: Registry;
  durability?: Durability;
}

type Bytes = Uint8Array;
type BinaryDb = Database<Bytes, Bytes>;

const DB_NAMES = ['meta', 'snapshots', 'tail', 'quarantine'] as const;
const FORMAT_KEY = new TextEncoder().encode('format');

/** `meta` key of a document's epoch (docs/protocol.md, "Durable storage"); absent: the genesis epoch. */
function epochKey(doc: DocName): Uint8Array {
  return new TextEncoder().encode(`epoch:${doc}`);
}

function encodeEpoch(epoch: EpochInfo): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ number: epoch.number, id: epoch.id }));
}

/** The stored epoch, or the reason it is unreadable. */
function decodeEpoch(bytes: Uint8Array): EpochInfo | string {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    return `not JSON (${messageOf(err)})`;
  }
  if (value === null || typeof value !== 'object') return 'not an object';
  const { number, id } = value as Record<string, unknown>;
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 0) return 'bad number';
  if (typeof id !== 'string' || id.length > 64) return 'bad id';
  return { number, id };
}

interface DocCursor {
  /** Seq the next appended entry gets; strictly above every seq in the tail and the snapshot's. */
  nextSeq: number;
  /** Tail entries since the last snapshot. */
  tailCount: number;
  /** Their payload bytes. */
  tailBytes: number;
  /** Payload bytes of the snapshot (0 without one). */
  snapshotBytes: number;
}

interface BadEntry {
  db: BinaryDb;
  key: Bytes;
  value: Bytes;
  kind: QuarantineKind;
  seq: number;
  reason: string;
}

interface LogMetrics {
  appends: Counter<'doc'>;
  appendBytes: Counter<'doc'>;
  appendSeconds: Histogram<'durability'>;
  compactions: Counter<'doc'>;
  corrupt: Counter<'doc' | 'kind'>;
  loadSeconds: Histogram<'doc'>;
}

/**
 * The durable update log of one node, in one lmdb environment.
 *
 * Every write is its own synchronous lmdb transaction (`transactionSync`,
 * which commits with fdatasync unless `durability` is `nosync`). lmdb-js's
 * `putSync` outside a transaction and its async `put` do NOT wait for the
 * flush when `overlappingSync` is on (its default on Linux), so the store
 * opens with `overlappingSync: false` and only ever writes through
 * `transactionSync`.
 */
export class LmdbUpdateLog implements UpdateLog {
  readonly path: string;
  readonly durability: Durability;
  private readonly logger: Logger;
  private readonly metrics: LogMetrics;
  private readonly root: RootDatabase<Bytes, Bytes>;
  private readonly meta: BinaryDb;
  private readonly snapshots: BinaryDb;
  private readonly tail: BinaryDb;
  private readonly quarantine: BinaryDb;
  private readonly cursors = {} as Record<DocName, DocCursor>;
  private closed = false;

  /** Opens (or creates) the store synchronously; lmdb-js opens environments without awaiting. */
  static open(options: LmdbUpdateLogOptions): LmdbUpdateLog {
    return new LmdbUpdateLog(options);
  }

  constructor(options: LmdbUpdateLogOptions) {
    this.path = options.path;
    this.durability = options.durability ?? 'sync';
    if (this.durability !== 'sync' && this.durability !== 'nosync') {
      throw new UpdateLogUsageError(
        options.path,
        `durability must be "sync" or "nosync", got ${JSON.stringify(options.durability)}`,
      );
    }
    this.logger = options.logger.child({ component: 'lmdb-log' });
    this.metrics = createMetrics(options.registry);
    const problem = storePathProblem(this.path);
    if (problem !== null) throw new StoreOpenError(this.path, problem);
    try {
      this.root = open<Bytes, Bytes>(this.path, {
        keyEncoding: 'binary',
        encoding: 'binary',
        overlappingSync: false,
        noSync: this.durability === 'nosync',
      });
    } catch (err) {
      throw new StoreOpenError(this.path, `lmdb refused it (${messageOf(err)})`, { cause: err });
    }
    try {
      checkNoForeignDatabases(this.root, this.path);
      const dbOptions = { keyEncoding: 'binary', encoding: 'binary' } as const;
      this.meta = this.root.openDB<Bytes, Bytes>('meta', dbOptions);
      this.snapshots = this.root.openDB<Bytes, Bytes>('snapshots', dbOptions);
      this.tail = this.root.openDB<Bytes, Bytes>('tail', dbOptions);
      this.quarantine = this.root.openDB<Bytes, Bytes>('quarantine', dbOptions);
      this.checkFormatVersion();
      for (const doc of DOC_NAMES) this.cursors[doc] = this.scanCursor(doc);
    } catch (err) {
      void this.root.close().catch(() => {});
      if (err instanceof StoreOpenError) throw err;
      throw new StoreOpenError(this.path, messageOf(err), { cause: err });
    }
    this.logger.debug({ path: this.path, durability: this.durability }, 'opened store');
  }

  load(doc: DocName): Uint8Array[] {
    const cursor = this.cursorOf(doc);
    const end = this.metrics.loadSeconds.startTimer({ doc });
    const updates: Uint8Array[] = [];
    const bad: BadEntry[] = [];
    let covered = 0;
    const snapshot = this.snapshots.get(snapshotKey(doc));
    if (snapshot !== undefined) {
      const frame = decodeFrame(snapshot);
      if (frame.ok) {
        updates.push(frame.payload);
        covered = frame.seq;
        cursor.snapshotBytes = frame.payload.byteLength;
      } else {
        bad.push({
          db: this.snapshots,
          key: snapshotKey(doc),
          value: snapshot,
          kind: 'snapshot',
          seq: 0,
          reason: frame.reason,
        });
      }
    }
    let tailCount = 0;
    let tailBytes = 0;
    const stale: Bytes[] = [];
    for (const { key, value } of this.tail.getRange(docRange(doc))) {
      const keySeq = parseTailSeq(doc, key);
      const frame = decodeFrame(value);
      if (keySeq === null) {
        bad.push({ db: this.tail, key, value, kind: 'tail', seq: 0, reason: 'malformed key' });
      } else if (!frame.ok) {
        bad.push({ db: this.tail, key, value, kind: 'tail', seq: keySeq, reason: frame.reason });
      } else if (frame.seq !== keySeq) {
        bad.push({
          db: this.tail,
          key,
          value,
          kind: 'tail',
          seq: keySeq,
          reason: `entry says seq ${frame.seq}`,
        });
      } else if (frame.seq <= covered) {
        // Compaction removes the covered tail in the snapshot's own
        // transaction, so this needs a store edited by hand; harmless, as
        // the snapshot already holds the entry.
        stale.push(new Uint8Array(key));
      } else {
        updates.push(frame.payload);
        tailCount++;
        tailBytes += frame.payload.byteLength;
      }
    }
    cursor.tailCount = tailCount;
    cursor.tailBytes = tailBytes;
    if (bad.length > 0) this.quarantineEntries(doc, bad);
    if (stale.length > 0) this.dropStale(doc, stale);
    end();
    return updates;
  }

  append(doc: DocName, update: Uint8Array): void {
    const cursor = this.cursorOf(doc);
    this.checkPayload(`append to ${doc}`, 'update', update);
    const frame = encodeFrame(cursor.nextSeq, update);
    const end = this.metrics.appendSeconds.startTimer({ durability: this.durability });
    try {
      this.tail.transactionSync(() => {
        this.tail.putSync(tailKey(doc, cursor.nextSeq), frame);
      });
    } catch (err) {
      throw new StoreWriteError(this.path, `append to ${doc}`, err);
    }
    end();
    cursor.nextSeq++;
    cursor.tailCount++;
    cursor.tailBytes += update.byteLength;
    this.metrics.appends.inc({ doc });
    this.metrics.appendBytes.inc({ doc }, update.byteLength);
  }

  tailLength(doc: DocName): number {
    return this.cursorOf(doc).tailCount;
  }

  tailBytes(doc: DocName): number {
    return this.cursorOf(doc).tailBytes;
  }

  snapshotBytes(doc: DocName): number {
    return this.cursorOf(doc).snapshotBytes;
  }

  /**
   * `snapshot` must hold every update appended so far (ClusterState passes
   * the full document state right after an append). The snapshot is written
   * and the whole tail removed in one transaction: a crash leaves either the
   * old snapshot with its tail or the new snapshot alone.
   */
  compact(doc: DocName, snapshot: Uint8Array): void {
    const cursor = this.cursorOf(doc);
    this.checkPayload(`compact ${doc}`, 'snapshot', snapshot);
    const covered = cursor.nextSeq - 1;
    const frame = encodeFrame(covered, snapshot);
    let removed = 0;
    try {
      this.tail.transactionSync(() => {
        this.snapshots.putSync(snapshotKey(doc), frame);
        const { start } = docRange(doc);
        const keys = Array.from(
          this.tail.getKeys({ start, end: tailKey(doc, covered + 1) }),
          (k) => new Uint8Array(k),
        );
        for (const key of keys) this.tail.removeSync(key);
        removed = keys.length;
      });
    } catch (err) {
      throw new StoreWriteError(this.path, `compaction of ${doc}`, err);
    }
    cursor.tailCount = 0;
    cursor.tailBytes = 0;
    cursor.snapshotBytes = snapshot.byteLength;
    this.metrics.compactions.inc({ doc });
    this.logger.debug({ doc, removed, snapshotBytes: snapshot.byteLength, covered }, 'compacted');
  }

  epoch(doc: DocName): EpochInfo {
    this.cursorOf(doc);
    const stored = this.meta.get(epochKey(doc));
    if (stored === undefined) return GENESIS_EPOCH;
    const epoch = decodeEpoch(stored);
    if (typeof epoch !== 'string') return epoch;
    // Taking the genesis epoch is safe: a node that believes itself behind adopts the cluster's
    // epoch and carries its whole state over (a join); believing itself ahead would not be.
    this.metrics.corrupt.inc({ doc, kind: 'epoch' });
    this.logger.error({ doc, reason: epoch }, 'unreadable epoch record; starting from the genesis epoch');
    return GENESIS_EPOCH;
  }

  /**
   * Writes `snapshot` as the whole document in epoch `epoch` and removes the
   * tail, in one transaction (see UpdateLog.switchEpoch).
   */
  switchEpoch(doc: DocName, epoch: EpochInfo, snapshot: Uint8Array): void {
    const cursor = this.cursorOf(doc);
    this.checkPayload(`switchEpoch ${doc}`, 'snapshot', snapshot);
    const covered = cursor.nextSeq - 1;
    const frame = encodeFrame(covered, snapshot);
    try {
      this.root.transactionSync(() => {
        this.meta.putSync(epochKey(doc), encodeEpoch(epoch));
        this.snapshots.putSync(snapshotKey(doc), frame);
        const keys = Array.from(this.tail.getKeys(docRange(doc)), (k) => new Uint8Array(k));
        for (const key of keys) this.tail.removeSync(key);
      });
    } catch (err) {
      throw new StoreWriteError(this.path, `epoch switch of ${doc}`, err);
    }
    cursor.tailCount = 0;
    cursor.tailBytes = 0;
    cursor.snapshotBytes = snapshot.byteLength;
    this.metrics.compactions.inc({ doc });
    this.logger.debug({ doc, epoch, snapshotBytes: snapshot.byteLength }, 'switched epoch');
  }

  /** Entries moved aside by `load` because they failed verification (for operators and tests). */
  quarantined(doc?: DocName): { key: Uint8Array; value: Uint8Array }[] {
    if (doc === undefined) this.ensureOpen();
    else this.cursorOf(doc);
    const range = doc ? docRange(doc) : {};
    return Array.from(this.quarantine.getRange(range), ({ key, value }) => ({
      key: new Uint8Array(key),
      value: new Uint8Array(value),
    }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.root.close();
  }

  private ensureOpen(): void {
    if (this.closed) throw new UpdateLogUsageError(this.path, 'it is closed');
  }

  /** The open store's cursor of `doc`; a clear error for a closed store or a name that is no document. */
  private cursorOf(doc: DocName): DocCursor {
    this.ensureOpen();
    if (!isDocName(doc)) {
      throw new UpdateLogUsageError(
        this.path,
        `no document ${JSON.stringify(doc)} (documents: ${DOC_NAMES.join(', ')})`,
      );
    }
    return this.cursors[doc];
  }

  /**
   * Updates and snapshots are Yjs updates, never empty (an empty document
   * still encodes to two bytes): zero bytes would only fail at the next load.
   */
  private checkPayload(what: string, name: string, value: unknown): asserts value is Uint8Array {
    if (!(value instanceof Uint8Array) || value.byteLength === 0) {
      throw new UpdateLogUsageError(this.path, `${what}: ${name} must be a non-empty Uint8Array`);
    }
  }

  private checkFormatVersion(): void {
    const stored = this.meta.get(FORMAT_KEY);
    if (stored === undefined) {
      const used = [this.snapshots, this.tail, this.quarantine].some(
        (db) => db.getKeysCount({ limit: 1 }) > 0,
      );
      if (used) throw new StoreOpenError(this.path, 'it holds entries but no format version');
      const value = new Uint8Array(4);
      new DataView(value.buffer).setUint32(0, STORE_FORMAT_VERSION);
      this.meta.transactionSync(() => {
        this.meta.putSync(FORMAT_KEY, value);
      });
      return;
    }
    const version =
      stored.byteLength === 4 ? new DataView(stored.buffer, stored.byteOffset, 4).getUint32(0) : undefined;
    if (version !== STORE_FORMAT_VERSION) {
      throw new StoreOpenError(
        this.path,
        `it was written in store format version ${version ?? `<${stored.byteLength} bytes>`}, ` +
          `this build reads version ${STORE_FORMAT_VERSION}`,
      );
    }
  }

  private scanCursor(doc: DocName): DocCursor {
    let last = 0;
    let count = 0;
    let bytes = 0;
    for (const { key, value } of this.tail.getRange(docRange(doc))) {
      const seq = parseTailSeq(doc, key);
      if (seq !== null && seq > last) last = seq;
      count++;
      bytes += value.byteLength;
    }
    const snapshot = this.snapshots.get(snapshotKey(doc));
    const frame = snapshot === undefined ? undefined : decodeFrame(snapshot);
    if (frame?.ok && frame.seq > last) last = frame.seq;
    return {
      nextSeq: last + 1,
      tailCount: count,
      tailBytes: bytes,
      snapshotBytes: frame?.ok ? frame.payload.byteLength : 0,
    };
  }

  /**
   * Moves entries that failed verification to the `quarantine` db. The
   * document loads without them (peers re-supply the content by sync), and
   * the store keeps opening: a failure here is logged, never thrown.
   */
  private quarantineEntries(doc: DocName, bad: BadEntry[]): void {
    const at = Date.now();
    for (const entry of bad) {
      this.metrics.corrupt.inc({ doc, kind: entry.kind });
      this.logger.error(
        { doc, kind: entry.kind, seq: entry.seq, bytes: entry.value.byteLength, reason: entry.reason },
        'corrupt store entry quarantined; its content will be re-supplied by peers through sync',
      );
    }
    try {
      this.root.transactionSync(() => {
        for (const entry of bad) {
          const value = encodeQuarantined(entry.reason, entry.value);
          this.quarantine.putSync(quarantineKey(doc, entry.kind, entry.seq, at), value);
          entry.db.removeSync(entry.key);
        }
      });
    } catch (err) {
      this.logger.error(
        { err, doc },
        'could not move corrupt entries to quarantine; they stay and are skipped',
      );
    }
  }

  private dropStale(doc: DocName, keys: Bytes[]): void {
    this.logger.warn({ doc, entries: keys.length }, 'removing tail entries already covered by the snapshot');
    try {
      this.tail.transactionSync(() => {
        for (const key of keys) this.tail.removeSync(key);
      });
    } catch (err) {
      this.logger.error({ err, doc }, 'could not remove stale tail entries; they are skipped');
    }
  }
}

function createMetrics(registry: Registry): LogMetrics {
  return {
    appends: counterIn(registry, {
      name: 'silo_state_log_appends_total',
      help: 'Updates appended to the durable log',
      labelNames: ['doc'],
    }),
    appendBytes: counterIn(registry, {
      name: 'silo_state_log_append_bytes_total',
      help: 'Bytes of updates appended to the durable log (payload, without frame header)',
      labelNames: ['doc'],
    }),
    appendSeconds: histogramIn(registry, {
      name: 'silo_state_log_append_seconds',
      help: 'Time for one durable append, commit and flush included',
      labelNames: ['durability'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    }),
    compactions: counterIn(registry, {
      name: 'silo_state_log_compactions_total',
      help: 'Snapshots written, each replacing the tail it covers',
      labelNames: ['doc'],
    }),
    corrupt: counterIn(registry, {
      name: 'silo_state_log_corrupt_entries_total',
      help: 'Store entries that failed verification at load and were quarantined',
      labelNames: ['doc', 'kind'],
    }),
    loadSeconds: histogramIn(registry, {
      name: 'silo_state_log_load_seconds',
      help: 'Time to read and verify one document (snapshot and tail) at start-up',
      labelNames: ['doc'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
    }),
  };
}

/** A valid lmdb environment written by another program has other databases or keys in its root. */
function checkNoForeignDatabases(root: RootDatabase<Bytes, Bytes>, path: string): void {
  const known = new Set<string>(DB_NAMES);
  for (const key of root.getKeys()) {
    const name = Buffer.from(key).toString('utf8').replace(/\0$/, '');
    if (!known.has(name)) {
      throw new StoreOpenError(
        path,
        `it is an lmdb store of another program (root key ${JSON.stringify(name)})`,
      );
    }
  }
}
