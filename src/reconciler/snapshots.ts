import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { type BlobExchange, type BlobSource, DIGEST_PATTERN } from '../gossip/blob-exchange.js';
import type { SnapshotRef } from '../state/schemas.js';
import { WORKLOAD_NAME_PATTERN } from '../state/schemas.js';
import { counterIn } from '../util/metrics.js';
import { SiloError } from '../util/silo-error.js';
import { stateCipherDir } from './encrypted-scratch.js';
import { isInitialized } from './gocryptfs.js';
import { extractSafely } from './image-store.js';
import { fetchFromPeers, type PeerDirectory, shortDigest } from './peer-fetch.js';
import { serviceDirs } from './scratch.js';
import { writeTreeTar } from './tree-tar.js';

/**
 * Snapshots of a service's STATE_DIRECTORY: what follows a persistent
 * workload from node to node (docs/placement.md, M2 and T4).
 *
 * A snapshot is a reproducible tar of the directory (src/reconciler/tree-tar.ts),
 * stored content-addressed at `<data>/snapshots/sha256/<hex>` and served to
 * peers over `/silo/scratch/1` (BlobExchange, pull model). Restoring
 * verifies the digest while unpacking (image-store's safe extraction: no
 * absolute paths, `..`, links out of the tree, devices) into a fresh
 * directory next to STATE_DIRECTORY and then swaps it in, so a service
 * never starts on a half-restored directory.
 */

export const SCRATCH_PROTOCOL = '/silo/scratch/1';

/** What the reconcile loop needs from snapshots (the simulator supplies its own). */
export interface StateSnapshots {
  /** Repairs what an interrupted restore left behind; call once before anything runs. */
  init(): Promise<void>;
  /**
   * Snapshot `workload`'s STATE_DIRECTORY. `live`: the service may be
   * writing it right now (a checkpoint); files are then taken as they are
   * when opened.
   */
  capture(workload: string, options: { live: boolean; signal?: AbortSignal }): Promise<SnapshotRef>;
  has(digest: string): Promise<boolean>;
  /**
   * Makes `digest` available locally: already here, else from the first of
   * `fromNodes` that has it (then any connected peer when `anyPeer`).
   * Returns the node it came from, null when it was here already.
   */
  fetch(
    digest: string,
    fromNodes: readonly string[],
    options?: { anyPeer?: boolean; signal?: AbortSignal },
  ): Promise<string | null>;
  /** Replaces STATE_DIRECTORY by the snapshot's contents (the service must not run). */
  restore(workload: string, snapshot: SnapshotRef): Promise<void>;
  /** Replaces STATE_DIRECTORY by an empty directory (the service must not run). */
  restoreEmpty(workload: string): Promise<void>;
  /**
   * The workload was deleted: empties its STATE_DIRECTORY when this node
   * has one (the service must not run). True when there was one.
   */
  discardState(workload: string): Promise<boolean>;
  /** Deletes stored snapshots whose digest is not in `keep`; returns how many. */
  gc(keep: ReadonlySet<string>): Promise<number>;
  /** True once every digest has been served to a peer (a replica pulled it); false after the timeout. */
  waitServed(digests: readonly string[], timeoutMs: number): Promise<boolean>;
}

export class SnapshotIntegrityError extends SiloError<'integrity'> {
  constructor(message: string, options?: ErrorOptions) {
    super('integrity', message, options);
  }
}

export interface SnapshotStoreOptions {
  dataDir: string;
  logger: Logger;
  registry: Registry;
  /** Clock for `SnapshotRef.at` (the reconcile loop's). */
  now?: () => number;
  /** Snapshots younger than this are never collected (they may not be announced yet). */
  gcGraceMs?: number;
}

/** The local, disk side: capture, restore, collect, serve. */
export class SnapshotStore {
  readonly root: string;
  private readonly dataDir: string;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly gcGraceMs: number;
  private readonly bytes: Counter<'op'>;
  private readonly collected: Counter;
  /** digest → times served completely to a peer. */
  private readonly served = new Map<string, number>();
  private readonly servedWaiters = new Set<() => void>();

  constructor(options: SnapshotStoreOptions) {
    this.dataDir = options.dataDir;
    this.root = join(options.dataDir, 'snapshots');
    this.logger = options.logger.child({ component: 'snapshots' });
    this.now = options.now ?? Date.now;
    this.gcGraceMs = options.gcGraceMs ?? 10 * 60_000;
    this.bytes = counterIn(options.registry, {
      name: 'silo_snapshot_bytes_total',
      help: 'State snapshot bytes by operation (capture-live = checkpoint, capture-stopped, restore, serve)',
      labelNames: ['op'],
    });
    this.collected = counterIn(options.registry, {
      name: 'silo_snapshots_collected_total',
      help: 'Stored state snapshots deleted by garbage collection',
    });
  }

  path(digest: string): string {
    if (!DIGEST_PATTERN.test(digest)) throw new Error(`invalid snapshot digest ${JSON.stringify(digest)}`);
    return join(this.root, 'sha256', digest.slice('sha256:'.length));
  }

  stateDir(workload: string): string {
    return serviceDirs(this.dataDir, workload).state;
  }

  async has(digest: string): Promise<boolean> {
    return (await stat(this.path(digest)).catch(() => null))?.isFile() === true;
  }

  /** Snapshot STATE_DIRECTORY (an empty one when the workload never ran here). */
  async capture(workload: string, options: { live: boolean; signal?: AbortSignal }): Promise<SnapshotRef> {
    // Dated when the capture begins: a write made during it may be missing.
    const at = Math.max(0, Math.floor(this.now()));
    // Encrypted scratch: the ciphertext is what is captured, never the
    // plaintext view mounted over STATE (docs/security.md, "Encrypted scratch").
    const cipher = stateCipherDir(serviceDirs(this.dataDir, workload));
    const state = (await isInitialized(cipher)) ? cipher : this.stateDir(workload);
    await mkdir(state, { recursive: true, mode: 0o755 });
    const tmp = join(this.root, 'tmp');
    await mkdir(tmp, { recursive: true, mode: 0o700 });
    await mkdir(join(this.root, 'sha256'), { recursive: true, mode: 0o700 });
    const temp = join(tmp, `${workload}-${randomBytes(6).toString('hex')}.tar`);
    try {
      // Tolerant even for a stopped service: a unix socket or an absolute
      // symlink left in STATE must not make the workload impossible to move.
      const packed = await writeTreeTar(state, temp, { mode: 'tolerant', signal: options.signal });
      if (packed.skipped.length > 0) {
        this.logger.warn(
          { workload, skipped: packed.skipped.slice(0, 20) },
          'entries left out of the snapshot',
        );
      }
      const dest = this.path(packed.digest);
      if (await this.has(packed.digest)) await rm(temp, { force: true });
      else await rename(temp, dest);
      this.bytes.inc({ op: options.live ? 'capture-live' : 'capture-stopped' }, packed.size);
      const ref: SnapshotRef = { digest: packed.digest, size: packed.size, at };
      this.logger.debug({ workload, ...ref, live: options.live }, 'state snapshot taken');
      return ref;
    } finally {
      await rm(temp, { force: true });
    }
  }

  async restore(workload: string, snapshot: SnapshotRef): Promise<void> {
    const file = this.path(snapshot.digest);
    if (!(await this.has(snapshot.digest))) {
      throw new SnapshotIntegrityError(`snapshot ${shortDigest(snapshot.digest)} is not stored here`);
    }
    const fresh = await this.freshDir(workload);
    try {
      const actual = await extractSafely(file, fresh);
      if (actual !== snapshot.digest) {
        await rm(file, { force: true });
        throw new SnapshotIntegrityError(
          `snapshot ${shortDigest(snapshot.digest)} refused: stored bytes hash to ${shortDigest(actual)} (corrupt; removed)`,
        );
      }
      if (await isInitialized(fresh)) {
        // A ciphertext snapshot: it becomes state.enc, mounted at the next start; STATE is left empty.
        await this.swapIn(workload, fresh, 'state.enc');
        await this.restoreEmpty(workload, { keepCipher: true });
      } else {
        await this.swapIn(workload, fresh);
        await rm(stateCipherDir(serviceDirs(this.dataDir, workload)), { recursive: true, force: true });
      }
      this.bytes.inc({ op: 'restore' }, snapshot.size);
      this.logger.info({ workload, digest: snapshot.digest }, 'state restored from snapshot');
    } finally {
      await rm(fresh, { recursive: true, force: true });
    }
  }

  async discardState(workload: string): Promise<boolean> {
    const state = this.stateDir(workload);
    const entries = await readdir(state).catch(() => null);
    const cipher = await readdir(stateCipherDir(serviceDirs(this.dataDir, workload))).catch(() => null);
    if ((entries === null || entries.length === 0) && (cipher === null || cipher.length === 0)) return false;
    await this.restoreEmpty(workload);
    return true;
  }

  /** `keepCipher`: leave an encrypted STATE's ciphertext (state.enc) in place. */
  async restoreEmpty(workload: string, options: { keepCipher?: boolean } = {}): Promise<void> {
    const fresh = await this.freshDir(workload);
    try {
      await this.swapIn(workload, fresh);
      if (options.keepCipher !== true) {
        await rm(stateCipherDir(serviceDirs(this.dataDir, workload)), { recursive: true, force: true });
      }
    } finally {
      await rm(fresh, { recursive: true, force: true });
    }
  }

  /**
   * After a crash between the two renames of a swap, STATE_DIRECTORY is
   * missing and the previous one waits under `.state-old-*`: put it back.
   * Half-unpacked `.state-restore-*` directories are removed.
   */
  async init(): Promise<void> {
    const services = join(this.dataDir, 'services');
    for (const name of await readdir(services).catch(() => [] as string[])) {
      if (!WORKLOAD_NAME_PATTERN.test(name)) continue;
      const root = serviceDirs(this.dataDir, name).root;
      const entries = await readdir(root).catch(() => [] as string[]);
      for (const entry of entries) {
        if (entry.startsWith('.state-restore-'))
          await rm(join(root, entry), { recursive: true, force: true });
      }
      const dirs = serviceDirs(this.dataDir, name);
      for (const [prefix, target] of [
        ['.state-old-', dirs.state],
        ['.stateenc-old-', stateCipherDir(dirs)],
      ] as const) {
        const olds = entries.filter((entry) => entry.startsWith(prefix)).sort();
        const hasState = (await lstat(target).catch(() => null)) !== null;
        for (const [index, old] of olds.entries()) {
          if (!hasState && index === olds.length - 1) {
            await rename(join(root, old), target);
            this.logger.warn({ workload: name }, 'recovered STATE_DIRECTORY after an interrupted restore');
          } else {
            await rm(join(root, old), { recursive: true, force: true });
          }
        }
      }
    }
  }

  /** Deletes stored snapshots not in `keep` and older than the grace; returns how many. */
  async gc(keep: ReadonlySet<string>): Promise<number> {
    const cutoff = Date.now() - this.gcGraceMs;
    let removed = 0;
    const dir = join(this.root, 'sha256');
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const digest = `sha256:${name}`;
      if (keep.has(digest)) continue;
      const info = await stat(join(dir, name)).catch(() => null);
      if (info === null || info.mtimeMs > cutoff) continue;
      await rm(join(dir, name), { force: true });
      this.served.delete(digest);
      removed++;
    }
    const tmp = join(this.root, 'tmp');
    for (const name of await readdir(tmp).catch(() => [] as string[])) {
      const info = await stat(join(tmp, name)).catch(() => null);
      if (info !== null && info.mtimeMs <= cutoff) await rm(join(tmp, name), { force: true });
    }
    if (removed > 0) {
      this.collected.inc(removed);
      this.logger.info({ removed }, 'old state snapshots collected');
    }
    return removed;
  }

  /** What `/silo/scratch/1` serves: stored snapshots; a complete transfer counts as served. */
  blobSource(): BlobSource {
    return async (digest) => {
      const file = this.path(digest);
      const info = await stat(file).catch(() => null);
      if (info === null || !info.isFile()) return null;
      const markServed = () => this.markServed(digest, info.size);
      return {
        size: info.size,
        read: async function* () {
          for await (const chunk of createReadStream(file, { highWaterMark: 64 * 1024 })) {
            yield chunk as Buffer;
          }
          markServed();
        },
      };
    };
  }

  async waitServed(digests: readonly string[], timeoutMs: number): Promise<boolean> {
    const done = () => digests.every((digest) => (this.served.get(digest) ?? 0) > 0);
    if (done()) return true;
    return new Promise<boolean>((resolve) => {
      const check = () => {
        if (!done()) return;
        finish(true);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      const finish = (result: boolean) => {
        clearTimeout(timer);
        this.servedWaiters.delete(check);
        resolve(result);
      };
      this.servedWaiters.add(check);
    });
  }

  private markServed(digest: string, size: number): void {
    this.served.set(digest, (this.served.get(digest) ?? 0) + 1);
    this.bytes.inc({ op: 'serve' }, size);
    for (const waiter of [...this.servedWaiters]) waiter();
  }

  /** An empty directory beside STATE_DIRECTORY (same filesystem, so the swap is a rename). */
  private async freshDir(workload: string): Promise<string> {
    const root = serviceDirs(this.dataDir, workload).root;
    await mkdir(root, { recursive: true, mode: 0o755 });
    const fresh = join(root, `.state-restore-${randomBytes(6).toString('hex')}`);
    await mkdir(fresh, { mode: 0o755 });
    return fresh;
  }

  /**
   * Puts `fresh` in place of STATE_DIRECTORY: the old one is renamed aside,
   * the new one renamed in, the old one removed. A crash in between leaves
   * `.state-old-*`, which `init` puts back.
   */
  private async swapIn(
    workload: string,
    fresh: string,
    into: 'state' | 'state.enc' = 'state',
  ): Promise<void> {
    const dirs = serviceDirs(this.dataDir, workload);
    const target = into === 'state' ? dirs.state : stateCipherDir(dirs);
    // The crash-recovery name says which directory it was (init puts it back there).
    const prefix = into === 'state' ? '.state-old-' : '.stateenc-old-';
    const old = join(dirs.root, `${prefix}${Date.now()}-${randomBytes(4).toString('hex')}`);
    const hadState = (await lstat(target).catch(() => null)) !== null;
    if (hadState) await rename(target, old);
    await rename(fresh, target);
    if (hadState) await rm(old, { recursive: true, force: true });
  }
}

export interface PeerSnapshotsOptions {
  store: SnapshotStore;
  /** BlobExchange on SCRATCH_PROTOCOL serving `store.blobSource()`. */
  exchange: BlobExchange;
  directory: PeerDirectory;
  logger: Logger;
}

/** StateSnapshots over the local store and peers (BlobExchange on `/silo/scratch/1`). */
export class PeerSnapshots implements StateSnapshots {
  private readonly store: SnapshotStore;
  private readonly exchange: BlobExchange;
  private readonly directory: PeerDirectory;
  private readonly logger: Logger;
  private readonly inflight = new Map<string, Promise<string | null>>();

  constructor(options: PeerSnapshotsOptions) {
    this.store = options.store;
    this.exchange = options.exchange;
    this.directory = options.directory;
    this.logger = options.logger.child({ component: 'snapshots' });
  }

  init(): Promise<void> {
    return this.store.init();
  }

  capture(workload: string, options: { live: boolean; signal?: AbortSignal }): Promise<SnapshotRef> {
    return this.store.capture(workload, options);
  }

  has(digest: string): Promise<boolean> {
    return this.store.has(digest);
  }

  fetch(
    digest: string,
    fromNodes: readonly string[],
    options: { anyPeer?: boolean; signal?: AbortSignal } = {},
  ): Promise<string | null> {
    // Two claims (or a claim and a replica pull) of one digest share a transfer.
    let pending = this.inflight.get(digest);
    if (pending === undefined) {
      pending = this.fetchOnce(digest, fromNodes, options).finally(() => this.inflight.delete(digest));
      this.inflight.set(digest, pending);
    }
    return pending;
  }

  private async fetchOnce(
    digest: string,
    fromNodes: readonly string[],
    options: { anyPeer?: boolean; signal?: AbortSignal },
  ): Promise<string | null> {
    if (await this.store.has(digest)) return null;
    const got = await fetchFromPeers({
      exchange: this.exchange,
      directory: this.directory,
      digest,
      dest: this.store.path(digest),
      nodes: fromNodes,
      anyPeer: options.anyPeer ?? false,
      logger: this.logger,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    this.logger.info({ digest, from: got.nodeId ?? got.peerId, size: got.size }, 'state snapshot fetched');
    return got.nodeId ?? got.peerId;
  }

  restore(workload: string, snapshot: SnapshotRef): Promise<void> {
    return this.store.restore(workload, snapshot);
  }

  restoreEmpty(workload: string): Promise<void> {
    return this.store.restoreEmpty(workload);
  }

  discardState(workload: string): Promise<boolean> {
    return this.store.discardState(workload);
  }

  gc(keep: ReadonlySet<string>): Promise<number> {
    return this.store.gc(keep);
  }

  waitServed(digests: readonly string[], timeoutMs: number): Promise<boolean> {
    return this.store.waitServed(digests, timeoutMs);
  }
}
