import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import * as Y from 'yjs';
import { Listeners } from '../util/listeners.js';
import { SiloError } from '../util/silo-error.js';
import { type DiffSlice, diffSlices, type SliceLimits } from './diff-slices.js';
import { readDocSlots, writeDocSlot } from './epochs/doc-slots.js';
import { carryOver, compareEpochs, type EpochInfo, GENESIS_EPOCH, startEpoch } from './epochs/epoch.js';
import { slottedMapsOf } from './epochs/layout.js';
import type { LwwRecord, Slots } from './epochs/records.js';
import { HybridClock } from './epochs/stamp.js';
import { DOC_NAMES, type DocName, Origin } from './names.js';
import type { UpdateLog } from './update-log.js';

/** An update that failed validation; the live document was not touched. */
export class InvalidUpdateError extends SiloError<'invalid_update'> {
  constructor(
    readonly doc: DocName,
    readonly reason: string,
  ) {
    super('invalid_update', `invalid update for document "${doc}": ${reason}`);
  }
}

export interface ClusterStateOptions {
  logger: Logger;
  /**
   * This node's id: the owner of the slots it writes and the writer in its
   * stamps (docs/epochs.md). Memory-only states in tests and benchmarks may
   * leave it out ('local').
   */
  nodeId?: string;
  /** Durable log. Without one the state is memory-only (documented for ephemeral sim nodes). */
  log?: UpdateLog;
  /**
   * Compact a document's log into a snapshot once its tail holds this many
   * entries, or once the tail's bytes exceed both the snapshot's and
   * COMPACT_MIN_TAIL_BYTES (whichever comes first).
   */
  compactEvery?: number;
  /** Largest update accepted from a peer by gossip, in bytes (also the largest sync frame). */
  maxUpdateBytes?: number;
  /**
   * Largest update accepted from one sync session for one document, in bytes (sent in parts
   * of at most maxUpdateBytes). What a node that lacks a whole document needs: it bounds the
   * size of the documents a new node can join.
   */
  maxSyncUpdateBytes?: number;
}

export type UpdateListener = (doc: DocName, update: Uint8Array, origin: unknown) => void;

/**
 * Called around every transaction on a document (`tr`), and with null after
 * the document was replaced by another epoch's (docs/epochs.md): everything
 * in it may have changed, and Y.Map objects taken from the old one are dead.
 */
export type TransactionListener = (tr: Y.Transaction | null) => void;

export const DEFAULT_MAX_UPDATE_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_SYNC_UPDATE_BYTES = 64 * 1024 * 1024;
/**
 * A tail smaller than this is never compacted for its size alone: the store's
 * fixed overhead per document (docs/protocol.md, "Durable storage"). Above it,
 * a tail is compacted once it outweighs the snapshot, so a document's log
 * stays within twice its encoded size plus this, and the cost of compacting
 * (re-encoding the document) is paid at most once per snapshot-size written.
 */
export const COMPACT_MIN_TAIL_BYTES = 64 * 1024;

/**
 * The org's three Yjs documents with their durable log.
 *
 * Every update, whatever its origin, is appended to the log inside the
 * document's `update` event, which Yjs fires before `transact` returns: a
 * local write has therefore reached the disk before the writer gets control
 * back (acknowledgement) and before the replicator, which is notified after
 * the log, publishes it.
 */
export class ClusterState {
  private readonly docs: Record<DocName, Y.Doc>;
  private readonly listeners = new Listeners<Parameters<UpdateListener>>((err) =>
    this.logger.error({ err }, 'update listener failed'),
  );
  private readonly digests = new Map<DocName, string>();
  /** Each document's current epoch (docs/epochs.md); the genesis epoch until one is started or adopted. */
  private readonly epochs = {} as Record<DocName, EpochInfo>;
  /** See acceptSlots; by `<doc>/<map>`. */
  private readonly slotFilters = new Map<string, (key: string, record: LwwRecord<unknown>) => boolean>();
  private readonly epochListeners = new Listeners<[DocName, EpochInfo]>((err) =>
    this.logger.error({ err }, 'epoch listener failed'),
  );
  private readonly logger: Logger;
  private readonly log: UpdateLog | undefined;
  private readonly compactEvery: number;
  readonly maxUpdateBytes: number;
  readonly maxSyncUpdateBytes: number;
  readonly nodeId: string;
  /** Stamps this node's writes of slotted records (docs/epochs.md). */
  readonly clock: HybridClock;
  private readonly transactionListeners = {
    before: new Map<DocName, Listeners<[Y.Transaction | null]>>(),
    after: new Map<DocName, Listeners<[Y.Transaction | null]>>(),
  };

  constructor(options: ClusterStateOptions) {
    this.logger = options.logger;
    this.nodeId = options.nodeId ?? 'local';
    this.clock = new HybridClock(this.nodeId);
    this.log = options.log;
    this.compactEvery = options.compactEvery ?? 1000;
    this.maxUpdateBytes = options.maxUpdateBytes ?? DEFAULT_MAX_UPDATE_BYTES;
    this.maxSyncUpdateBytes = Math.max(
      this.maxUpdateBytes,
      options.maxSyncUpdateBytes ?? DEFAULT_MAX_SYNC_UPDATE_BYTES,
    );
    const docs = {} as Record<DocName, Y.Doc>;
    for (const name of DOC_NAMES) {
      const doc = new Y.Doc({ gc: true });
      docs[name] = doc;
      this.epochs[name] = this.log?.epoch(name) ?? GENESIS_EPOCH;
      this.restore(name, doc);
      this.bind(name, doc);
    }
    this.docs = docs;
  }

  /** Attaches this state's handlers to `doc`, the current document of `name`. */
  private bind(name: DocName, doc: Y.Doc): void {
    // Defined up front: a root type that a remote update creates first is a plain AbstractType,
    // and a later getMap replaces it by another object, so the transaction that created it would
    // name a type no reader knows (Transaction.changed is keyed by type object).
    for (const map of slottedMapsOf(name) ?? []) doc.getMap(map);
    doc.on('update', (update: Uint8Array, origin: unknown) => this.onUpdate(name, update, origin));
    doc.on('beforeTransaction', (tr: Y.Transaction) => this.transactionListeners.before.get(name)?.emit(tr));
    doc.on('afterTransaction', (tr: Y.Transaction) => this.transactionListeners.after.get(name)?.emit(tr));
  }

  /**
   * Subscribes to the start ('before') or end ('after') of every transaction
   * on `name`, whichever Y.Doc holds it: unlike `doc(name).on(...)`, the
   * subscription survives an epoch switch, after which 'after' listeners are
   * called with null.
   */
  onTransaction(name: DocName, phase: 'before' | 'after', listener: TransactionListener): () => void {
    let listeners = this.transactionListeners[phase].get(name);
    if (listeners === undefined) {
      listeners = new Listeners<[Y.Transaction | null]>((err) =>
        this.logger.error({ err, doc: name }, 'transaction listener failed'),
      );
      this.transactionListeners[phase].set(name, listeners);
    }
    return listeners.add(listener);
  }

  doc(name: DocName): Y.Doc {
    return this.docs[name];
  }

  /** Runs `fn` as one local transaction on `name`; returns once it is durable. */
  transactLocal<T>(name: DocName, fn: (doc: Y.Doc) => T): T {
    let result!: T;
    this.docs[name].transact((tr) => {
      result = fn(tr.doc);
    }, Origin.local);
    return result;
  }

  /** Subscribes to every update applied to any document (after it is durable). */
  onChange(listener: UpdateListener): () => void {
    return this.listeners.add(listener);
  }

  /**
   * Checks that `update` is a well-formed Yjs update without touching the
   * live document. Yjs has no integrity check of its own: a truncated update
   * can apply partly before throwing, so it is fully decoded first; and a
   * damaged one can decode and then fail while it is integrated ("Unexpected
   * case"), again after part of it went in. So it is also applied to an empty
   * scratch document first: what depends on state we hold is parked there as
   * pending, everything else integrates, and a failure is found before the
   * live document is touched. Cost: one more pass over the update (large
   * catch-ups arrive in slices, docs/protocol.md).
   */
  validateUpdate(name: DocName, update: Uint8Array, maxBytes = this.maxUpdateBytes): void {
    if (!(update instanceof Uint8Array)) throw new InvalidUpdateError(name, 'update is not bytes');
    if (update.byteLength === 0) throw new InvalidUpdateError(name, 'update is empty');
    if (update.byteLength > maxBytes) {
      throw new InvalidUpdateError(name, `update is ${update.byteLength} bytes, limit ${maxBytes}`);
    }
    try {
      Y.decodeUpdate(update);
      Y.applyUpdate(new Y.Doc({ gc: true }), update);
    } catch (err) {
      throw new InvalidUpdateError(name, `malformed Yjs update (${(err as Error).message})`);
    }
  }

  /** Validates, then applies an update received from a peer. */
  applyRemote(
    name: DocName,
    update: Uint8Array,
    origin: string = Origin.remote,
    maxBytes = this.maxUpdateBytes,
  ): void {
    this.validateUpdate(name, update, maxBytes);
    Y.applyUpdate(this.docs[name], update, origin);
  }

  encodeStateVector(name: DocName): Uint8Array {
    return Y.encodeStateVector(this.docs[name]);
  }

  /** Everything this node has that a peer with state vector `remoteSv` lacks. */
  encodeDiff(name: DocName, remoteSv?: Uint8Array): Uint8Array {
    return Y.encodeStateAsUpdate(this.docs[name], remoteSv);
  }

  /**
   * `encodeDiff` as several self-contained updates when it is large (src/state/diff-slices.ts);
   * the caller may yield to the event loop between slices.
   */
  encodeDiffSlices(
    name: DocName,
    remoteSv: Uint8Array,
    limits?: SliceLimits,
  ): Generator<DiffSlice, void, void> {
    return diffSlices(this.docs[name], remoteSv, limits);
  }

  /**
   * A short digest of the document's state: state vector plus delete set.
   * The state vector alone misses deletions (a Y.Map delete adds no clock),
   * so two documents with equal digests hold the same content.
   */
  digest(name: DocName): string {
    const cached = this.digests.get(name);
    if (cached) return cached;
    const snapshot = Y.encodeSnapshot(Y.snapshot(this.docs[name]));
    const { number, id } = this.epochs[name];
    // The epoch is part of what two nodes compare: equal content in two epochs still needs a sync.
    // Genesis adds nothing, so digests stay those of agents before epochs.
    const hash = createHash('sha256');
    if (number > 0) hash.update(`${number}\0${id}\0`);
    const value = hash.update(snapshot).digest('hex').slice(0, 16);
    this.digests.set(name, value);
    return value;
  }

  digestsAll(): Record<DocName, string> {
    const out = {} as Record<DocName, string>;
    for (const name of DOC_NAMES) out[name] = this.digest(name);
    return out;
  }

  /** The epoch `name` is in (docs/epochs.md). */
  epoch(name: DocName): EpochInfo {
    return this.epochs[name];
  }

  /** Whether `name` moves between epochs (it has slotted maps). */
  hasEpochs(name: DocName): boolean {
    return slottedMapsOf(name) !== undefined;
  }

  /** Called after a document moved to another epoch (started here or adopted). */
  onEpoch(listener: (doc: DocName, epoch: EpochInfo) => void): () => void {
    return this.epochListeners.add(listener);
  }

  /**
   * The encoded size of `name` now, and of the same content as a fresh
   * epoch would hold it: what an epoch start would save (docs/epochs.md,
   * "When to start"). Costs two encodings of the document.
   */
  epochSavings(name: DocName): { currentBytes: number; freshBytes: number } {
    const maps = this.requireSlotted(name);
    const started = startEpoch(this.epochs[name], this.slotsOf(name, this.docs[name], maps), {
      starter: this.nodeId,
      stamp: { at: 0, seq: 0, writer: this.nodeId },
    });
    return {
      currentBytes: Y.encodeStateAsUpdate(this.docs[name]).byteLength,
      freshBytes: Y.encodeStateAsUpdate(this.freshDoc(started.slots)).byteLength,
    };
  }

  /**
   * Starts the next epoch of `name` from this node's view: a document without
   * history holding each record's winner (docs/epochs.md). Durable on return;
   * peers learn of it from digests and sync, and adopt it.
   */
  startEpoch(name: DocName): EpochInfo {
    const maps = this.requireSlotted(name);
    const started = startEpoch(this.epochs[name], this.slotsOf(name, this.docs[name], maps), {
      starter: this.nodeId,
      stamp: this.clock.next(Date.now()),
    });
    const doc = this.freshDoc(started.slots);
    this.switchTo(name, started.epoch, doc);
    this.logger.info(
      { doc: name, epoch: started.epoch, bytes: Y.encodeStateAsUpdate(doc).byteLength },
      'started a new epoch',
    );
    return started.epoch;
  }

  /**
   * Moves `name` to the later epoch `epoch`, whose state (all of it, or the
   * first part of a sync) is `update`, and writes into it, in this node's
   * slots, every record of the old epoch the new one lacks or holds older
   * (`carryOver`): nothing acknowledged here is lost by the switch. The
   * switch and the carried records are durable together; the carried
   * records are then published like any local write.
   */
  adoptEpoch(name: DocName, epoch: EpochInfo, update: Uint8Array, origin: string = Origin.sync): void {
    const maps = this.requireSlotted(name);
    if (compareEpochs(epoch, this.epochs[name]) <= 0) {
      throw new InvalidUpdateError(name, `epoch ${epoch.number}/${epoch.id} is not after the current one`);
    }
    this.validateUpdate(name, update, this.maxSyncUpdateBytes);
    const doc = new Y.Doc({ gc: true });
    Y.applyUpdate(doc, update, origin);
    const carried = carryOver(this.slotsOf(name, this.docs[name], maps), this.slotsOf(name, doc, maps));
    let carriedUpdate: Uint8Array | undefined;
    if (carried.length > 0) {
      const capture = (bytes: Uint8Array): void => {
        carriedUpdate = bytes;
      };
      doc.on('update', capture);
      doc.transact(() => {
        for (const { key, record } of carried) writeDocSlot(doc, key, this.nodeId, record);
      }, Origin.local);
      doc.off('update', capture);
    }
    this.switchTo(name, epoch, doc);
    this.logger.info({ doc: name, epoch, carried: carried.length }, 'adopted a later epoch');
    if (carriedUpdate !== undefined) this.listeners.emit(name, carriedUpdate, Origin.local);
  }

  /**
   * Only records `accepts` takes count in `map` of `name` when an epoch is
   * started or adopted (SlottedMap's rule for maps of signed records): a
   * refused record is not carried into a new epoch, and it does not stop a
   * valid one from being carried over. The rule must be the same on every node.
   */
  acceptSlots(
    name: DocName,
    map: string,
    accepts: (key: string, record: LwwRecord<unknown>) => boolean,
  ): void {
    this.slotFilters.set(`${name}/${map}`, accepts);
  }

  private slotsOf(name: DocName, doc: Y.Doc, maps: readonly string[]): Slots<unknown> {
    return readDocSlots(
      doc,
      maps,
      (map, key, record) => this.slotFilters.get(`${name}/${map}`)?.(key, record) ?? true,
    );
  }

  private requireSlotted(name: DocName): readonly string[] {
    const maps = slottedMapsOf(name);
    if (maps === undefined) throw new InvalidUpdateError(name, 'this document has no epochs');
    return maps;
  }

  private freshDoc(slots: Slots<unknown>): Y.Doc {
    const doc = new Y.Doc({ gc: true });
    doc.transact(() => {
      for (const [key, owners] of slots) {
        for (const [owner, record] of owners) writeDocSlot(doc, key, owner, record);
      }
    }, Origin.local);
    return doc;
  }

  /** Persists `doc` as epoch `epoch` of `name` (one transaction), then makes it the live document. */
  private switchTo(name: DocName, epoch: EpochInfo, doc: Y.Doc): void {
    this.log?.switchEpoch(name, epoch, Y.encodeStateAsUpdate(doc));
    const old = this.docs[name];
    this.docs[name] = doc;
    this.epochs[name] = epoch;
    this.digests.delete(name);
    this.bind(name, doc);
    old.destroy();
    this.transactionListeners.after.get(name)?.emit(null);
    this.epochListeners.emit(name, epoch);
  }

  async close(): Promise<void> {
    for (const name of DOC_NAMES) this.docs[name].destroy();
    await this.log?.close();
  }

  private restore(name: DocName, doc: Y.Doc): void {
    if (!this.log) return;
    const updates = this.log.load(name);
    if (updates.length === 0) return;
    let skipped = 0;
    const valid: Uint8Array[] = [];
    for (const update of updates) {
      // A checksummed entry that is still no valid Yjs update (a bug, not
      // bit rot) is skipped rather than failing the start: peers re-supply
      // its content through sync. No size limit: the wire's (max_update_bytes)
      // is not the store's, and a compacted snapshot of a large document is
      // one entry of any size.
      try {
        this.validateUpdate(name, update, Number.POSITIVE_INFINITY);
      } catch (err) {
        skipped++;
        this.logger.error({ err, doc: name }, 'skipping an undecodable entry of the durable log');
        continue;
      }
      valid.push(update);
    }
    // One merged update, applied once: the log holds updates in the order
    // they arrived, not always in causal order, and Yjs re-merges its pending
    // structs with every update applied after a gap, which made a restart
    // quadratic in the entries (100,000 workload specs: 18-45 s).
    if (valid.length > 0) {
      const merged = valid.length === 1 ? (valid[0] as Uint8Array) : Y.mergeUpdates(valid);
      Y.applyUpdate(doc, merged, Origin.load);
    }
    this.logger.debug({ doc: name, entries: updates.length, skipped }, 'restored document from disk');
  }

  private onUpdate(name: DocName, update: Uint8Array, origin: unknown): void {
    this.digests.delete(name);
    if (this.log && origin !== Origin.load) {
      this.log.append(name, update);
      const tailBytes = this.log.tailBytes(name);
      if (
        this.log.tailLength(name) >= this.compactEvery ||
        (tailBytes > COMPACT_MIN_TAIL_BYTES && tailBytes > this.log.snapshotBytes(name))
      ) {
        this.log.compact(name, Y.encodeStateAsUpdate(this.docs[name]));
      }
    }
    this.listeners.emit(name, update, origin);
  }
}
