import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { type Database, open, type RootDatabase } from 'lmdb';
import { Registry } from 'prom-client';
import * as Y from 'yjs';
import {
  LmdbUpdateLog,
  STORE_FORMAT_VERSION,
  StoreOpenError,
  UpdateLogUsageError,
} from '../../src/state/lmdb-log.js';
import {
  decodeFrame,
  decodeQuarantined,
  docRange,
  encodeFrame,
  parseTailSeq,
} from '../../src/state/log-frame.js';
import { DOC_NAMES, type DocName } from '../../src/state/names.js';
import { drainFlag, enrollmentRecord, observedStatus, workloadSpec } from '../fixtures/state-records.js';
import { metricValue, openState, quietLogger, tempDir } from '../fixtures/state-store.js';

type Bytes = Uint8Array;
type RawDb = Database<Bytes, Bytes>;

/** Opens the store's lmdb environment directly, bypassing LmdbUpdateLog (to damage it). */
async function withRawStore<T>(
  path: string,
  fn: (dbs: { root: RootDatabase<Bytes, Bytes>; db: (name: string) => RawDb }) => T,
): Promise<T> {
  const root = open<Bytes, Bytes>(path, {
    keyEncoding: 'binary',
    encoding: 'binary',
    overlappingSync: false,
  });
  try {
    return fn({
      root,
      db: (name) => root.openDB<Bytes, Bytes>(name, { keyEncoding: 'binary', encoding: 'binary' }),
    });
  } finally {
    await root.close();
  }
}

function tailEntries(db: RawDb, doc: DocName): { key: Bytes; value: Bytes; seq: number }[] {
  return Array.from(db.getRange(docRange(doc)), ({ key, value }) => ({
    key: new Uint8Array(key),
    value: new Uint8Array(value),
    seq: parseTailSeq(doc, key) ?? -1,
  }));
}

/** A copy of an lmdb data file with its meta pages' data version changed (offset 28, host order). */
function withVersion(data: Buffer, version: number): Buffer {
  const copy = Buffer.from(data);
  copy.writeUInt32LE(version, 28);
  return copy;
}

describe('log frames', () => {
  test('round-trip and detect any flipped byte', () => {
    const payload = new Uint8Array([1, 2, 3, 4, 5, 6, 7]);
    const frame = encodeFrame(42, payload);
    const decoded = decodeFrame(frame);
    assert.ok(decoded.ok);
    assert.equal(decoded.seq, 42);
    assert.deepEqual(decoded.payload, payload);
    for (let i = 0; i < frame.byteLength; i++) {
      for (const bit of [0x01, 0x80]) {
        const damaged = new Uint8Array(frame);
        damaged[i] = (damaged[i] ?? 0) ^ bit;
        assert.equal(decodeFrame(damaged).ok, false, `flip of bit ${bit} in byte ${i} went unnoticed`);
      }
    }
    assert.equal(decodeFrame(frame.subarray(0, 10)).ok, false);
    assert.equal(decodeFrame(frame.subarray(0, frame.byteLength - 1)).ok, false);
  });
});

describe('LmdbUpdateLog', () => {
  test('a compacted snapshot larger than max_update_bytes restores in full (the wire limit is not the store limit)', async (t) => {
    const { dir, cleanup } = await tempDir('big-snapshot');
    t.after(cleanup);
    const path = join(dir, 'store');
    const first = openState(path, { compactEvery: 5, maxUpdateBytes: 2048 });
    for (let i = 0; i < 40; i++) first.workloads.put(workloadSpec(`svc-${i}`));
    assert.ok(first.state.encodeDiff('workloads').byteLength > 2048, 'the document outgrew the wire limit');
    assert.ok((await metricValue(first.registry, 'silo_state_log_compactions_total')) >= 1);
    const digests = first.state.digestsAll();
    await first.state.close();
    const second = openState(path, { compactEvery: 5, maxUpdateBytes: 2048 });
    t.after(() => second.state.close());
    assert.equal(second.workloads.list().length, 40);
    assert.deepEqual(second.state.digestsAll(), digests);
  });

  test('restart from disk keeps every acknowledged write, across compactions', async (t) => {
    const { dir, cleanup } = await tempDir('restart');
    t.after(cleanup);
    const path = join(dir, 'store');
    const first = openState(path, { nodeId: 'node-a', compactEvery: 25 });
    const written = {
      specs: [] as string[],
      statuses: [] as string[],
      drains: [] as string[],
      nodes: [] as string[],
    };
    for (let i = 0; i < 1000; i++) {
      const key = `k-${i}`;
      switch (i % 4) {
        case 0:
          first.workloads.put(workloadSpec(key, { cpus: (i % 7) + 1 }));
          written.specs.push(key);
          break;
        case 1:
          first.observed.setStatus('node-a', key, observedStatus(i));
          written.statuses.push(key);
          break;
        case 2:
          first.enrollment.setDraining(key, drainFlag(i, i % 8 === 2));
          written.drains.push(key);
          break;
        default:
          first.enrollment.put(enrollmentRecord(key, i));
          written.nodes.push(key);
      }
    }
    // Updates and deletes after the last compaction, to be replayed from the tail.
    first.workloads.put(workloadSpec('k-0', { cpus: 3 }));
    assert.equal(first.workloads.delete('k-4'), true);
    written.specs = written.specs.filter((k) => k !== 'k-4');
    assert.ok((await metricValue(first.registry, 'silo_state_log_compactions_total')) >= 3 * 4);
    assert.equal(await metricValue(first.registry, 'silo_state_log_appends_total'), 1002);
    const digests = first.state.digestsAll();
    const spec0 = first.workloads.get('k-0');
    await first.state.close();

    const second = openState(path, { nodeId: 'node-a', compactEvery: 25 });
    t.after(() => second.state.close());
    assert.deepEqual(second.state.digestsAll(), digests);
    for (const doc of DOC_NAMES) assert.ok(second.log.tailLength(doc) < 25, `${doc} tail was compacted`);
    assert.deepEqual(
      second.workloads.list().map((s) => s.name),
      [...written.specs].sort(),
    );
    assert.deepEqual(second.workloads.get('k-0'), spec0);
    assert.equal(second.workloads.get('k-0')?.revision, 2);
    assert.equal(second.workloads.get('k-4'), undefined);
    assert.deepEqual([...second.observed.listForNode('node-a').keys()], [...written.statuses].sort());
    assert.equal(second.observed.get('node-a', 'k-1')?.since, 1);
    assert.deepEqual([...second.enrollment.drainFlags().keys()], [...written.drains].sort());
    assert.deepEqual(
      second.enrollment.list().map((r) => r.nodeId),
      [...written.nodes].sort(),
    );
    assert.equal(await metricValue(second.registry, 'silo_state_log_corrupt_entries_total'), 0);
    // The reopened store keeps appending after the old sequence numbers.
    second.workloads.put(workloadSpec('after-restart'));
    assert.equal(second.workloads.get('after-restart')?.revision, 1);
  });

  test('the log stays within twice its document plus 64 KiB however many updates it took', async (t) => {
    const { dir, cleanup } = await tempDir('log-bytes');
    t.after(cleanup);
    const path = join(dir, 'store');
    // No compaction by count: only the size rule can keep the log small.
    const first = openState(path, { nodeId: 'node-a', compactEvery: 1_000_000, durability: 'nosync' });
    let largestLog = 0;
    for (let i = 0; i < 3000; i++) {
      first.observed.setStatus('node-a', `w${i % 20}`, observedStatus(i, { reason: `pass ${i}` }));
      const logBytes = first.log.snapshotBytes('observed') + first.log.tailBytes('observed');
      largestLog = Math.max(largestLog, logBytes);
    }
    const docBytes = first.state.encodeDiff('observed').byteLength;
    assert.ok(
      largestLog <= 2 * docBytes + 64 * 1024 + 4096,
      `log reached ${largestLog} bytes for a ${docBytes}-byte document`,
    );
    assert.ok(
      (await metricValue(first.registry, 'silo_state_log_compactions_total', { doc: 'observed' })) > 0,
    );
    const statuses = first.observed.listForNode('node-a');
    await first.state.close();

    const second = openState(path, { nodeId: 'node-a' });
    t.after(() => second.state.close());
    assert.deepEqual(second.observed.listForNode('node-a'), statuses);
    assert.equal(second.log.tailBytes('observed') < 64 * 1024 + 4096, true);
  });

  test('nosync durability still persists across a clean close', async (t) => {
    const { dir, cleanup } = await tempDir('nosync');
    t.after(cleanup);
    const path = join(dir, 'store');
    const first = openState(path, { durability: 'nosync', compactEvery: 10 });
    for (let i = 0; i < 50; i++) first.workloads.put(workloadSpec(`n-${i}`));
    await first.state.close();
    const second = openState(path, { durability: 'nosync' });
    t.after(() => second.state.close());
    assert.equal(second.workloads.list().length, 50);
  });

  test('bad options and use after close give clear errors', async (t) => {
    const { dir, cleanup } = await tempDir('opts');
    t.after(cleanup);
    assert.throws(
      () =>
        new LmdbUpdateLog({
          path: join(dir, 's'),
          logger: quietLogger,
          registry: new Registry(),
          durability: 'fast' as 'sync',
        }),
      (err: unknown) =>
        err instanceof UpdateLogUsageError && /durability must be "sync" or "nosync"/.test(err.message),
    );
    const log = new LmdbUpdateLog({ path: join(dir, 's'), logger: quietLogger, registry: new Registry() });
    const usage = (message: RegExp) => (err: unknown) =>
      err instanceof UpdateLogUsageError && err.code === 'internal' && message.test(err.message);
    assert.throws(
      () => log.append('workloads', 'text' as unknown as Uint8Array),
      usage(/append to workloads: update must be a non-empty Uint8Array/),
    );
    assert.throws(() => log.load('nodes' as DocName), usage(/no document "nodes" \(documents: enrollment, /));
    await log.close();
    assert.throws(() => log.append('workloads', new Uint8Array([0, 0])), usage(/is closed/));
  });

  describe('corruption', () => {
    /** Writes 10 specs in one session (one Yjs client, so each update depends on the previous). */
    async function seeded(t: { after: (fn: () => Promise<void>) => void }) {
      const { dir, cleanup } = await tempDir('corrupt');
      t.after(cleanup);
      const path = join(dir, 'store');
      const s = openState(path, { compactEvery: 1000 });
      for (let i = 0; i < 10; i++) s.workloads.put(workloadSpec(`w-${i}`));
      s.enrollment.put(enrollmentRecord('node-a'));
      s.observed.setStatus('node-a', 'w-0', observedStatus(5));
      // A peer that holds everything, to re-supply what is lost.
      const peer = new Y.Doc();
      Y.applyUpdate(peer, s.state.encodeDiff('workloads'));
      await s.state.close();
      return { path, peer };
    }

    async function flip(path: string, doc: DocName, pick: (n: number) => number, at: 'payload' | 'header') {
      return withRawStore(path, ({ db }) => {
        const tail = db('tail');
        const entries = tailEntries(tail, doc);
        const victim = entries[pick(entries.length)];
        assert.ok(victim);
        const damaged = new Uint8Array(victim.value);
        const index = at === 'payload' ? damaged.byteLength - 3 : 6;
        damaged[index] = (damaged[index] ?? 0) ^ 0x10;
        tail.transactionSync(() => {
          tail.putSync(victim.key, damaged);
        });
        return victim.seq;
      });
    }

    test('a flipped tail entry is quarantined and counted; the store opens and peers re-supply it', async (t) => {
      const { path, peer } = await seeded(t);
      const seq = await flip(path, 'workloads', (n) => n - 1, 'payload');
      const s = openState(path);
      t.after(() => s.state.close());
      assert.equal(
        await metricValue(s.registry, 'silo_state_log_corrupt_entries_total', { doc: 'workloads' }),
        1,
      );
      assert.equal(s.log.quarantined('workloads').length, 1);
      const [entry] = s.log.quarantined('workloads');
      assert.match(decodeQuarantined(entry?.value ?? new Uint8Array(2)).reason, /checksum mismatch/);
      assert.equal(seq, 10);
      assert.deepEqual(
        s.workloads.list().map((w) => w.name),
        Array.from({ length: 9 }, (_, i) => `w-${i}`),
      );
      // Other documents are untouched.
      assert.equal(s.enrollment.get('node-a')?.nodeId, 'node-a');
      assert.equal(s.observed.get('node-a', 'w-0')?.since, 5);
      // Anti-entropy with a peer brings the lost update back.
      s.state.applyRemote('workloads', Y.encodeStateAsUpdate(peer, s.state.encodeStateVector('workloads')));
      assert.equal(s.workloads.list().length, 10);
      assert.equal(s.log.tailLength('workloads'), 10);
    });

    test('a flipped middle entry holds back its successors until sync; a damaged header is caught too', async (t) => {
      const { path, peer } = await seeded(t);
      await flip(path, 'workloads', () => 4, 'header');
      const s = openState(path);
      t.after(() => s.state.close());
      assert.equal(await metricValue(s.registry, 'silo_state_log_corrupt_entries_total'), 1);
      // Yjs keeps the later updates of the same client pending (they depend on the lost one).
      assert.deepEqual(
        s.workloads.list().map((w) => w.name),
        ['w-0', 'w-1', 'w-2', 'w-3'],
      );
      s.state.applyRemote('workloads', Y.encodeStateAsUpdate(peer, s.state.encodeStateVector('workloads')));
      assert.equal(s.workloads.list().length, 10);
    });

    test('a flipped snapshot is quarantined; the tail still loads', async (t) => {
      const { dir, cleanup } = await tempDir('snap');
      t.after(cleanup);
      const path = join(dir, 'store');
      const a = openState(path, { compactEvery: 5 });
      for (let i = 0; i < 7; i++) a.workloads.put(workloadSpec(`w-${i}`));
      await a.state.close();
      await withRawStore(path, ({ db }) => {
        const snapshots = db('snapshots');
        const key = new TextEncoder().encode('workloads');
        const value = new Uint8Array(snapshots.get(key) ?? new Uint8Array());
        assert.ok(value.byteLength > 16);
        value[20] = (value[20] ?? 0) ^ 0xff;
        snapshots.transactionSync(() => {
          snapshots.putSync(key, value);
        });
      });
      const b = openState(path, { compactEvery: 5 });
      t.after(() => b.state.close());
      assert.equal(
        await metricValue(b.registry, 'silo_state_log_corrupt_entries_total', {
          doc: 'workloads',
          kind: 'snapshot',
        }),
        1,
      );
      // The two tail updates depend on the lost snapshot: pending, not applied, not thrown.
      assert.equal(b.workloads.list().length, 0);
      assert.equal(b.log.tailLength('workloads'), 2);
      // Writing on keeps working.
      b.workloads.put(workloadSpec('fresh'));
      assert.deepEqual(
        b.workloads.list().map((w) => w.name),
        ['fresh'],
      );
    });

    test('a garbage file at the store path gives a clear error naming the path', async (t) => {
      const { dir, cleanup } = await tempDir('garbage');
      t.after(cleanup);
      const file = join(dir, 'store');
      await writeFile(file, Buffer.from('this is not an lmdb store at all'.repeat(200)));
      assert.throws(
        () => new LmdbUpdateLog({ path: file, logger: quietLogger, registry: new Registry() }),
        (err: unknown) =>
          err instanceof StoreOpenError &&
          err.path === file &&
          err.message.includes(file) &&
          /not a store/.test(err.message),
      );
    });

    test('a garbage or cut-short data.mdb gives a clear error naming the path (lmdb-js would crash)', async (t) => {
      const { dir, cleanup } = await tempDir('garbage-mdb');
      t.after(cleanup);
      const real = join(dir, 'real');
      const s = openState(real);
      // Enough records for many pages, so that cutting it anywhere past the meta pages leaves pages in use out.
      for (let i = 0; i < 300; i++) s.workloads.put(workloadSpec(`w${i}`));
      await s.state.close();
      const realBytes = await readFile(join(real, 'data.mdb'));
      const page = realBytes.readUInt32LE(48);
      assert.ok(realBytes.byteLength >= 8 * page, `the store has many pages (${realBytes.byteLength} bytes)`);
      const variants: [string, Buffer, RegExp][] = [
        ['zeros', Buffer.alloc(64 * 1024), /not an lmdb file/],
        ['random', randomBytes(64 * 1024), /not an lmdb file/],
        ['text', Buffer.from('hello'), /too short/],
        ['cut', realBytes.subarray(0, 4096), /cut short/],
        // Outside testing: a data.mdb truncated to half its size killed the agent with SIGBUS.
        [
          'half',
          realBytes.subarray(0, Math.floor(realBytes.byteLength / 2 / page) * page),
          /pages in use end at/,
        ],
        ['three-pages', realBytes.subarray(0, 3 * page), /pages in use end at/],
        ['data-v1', withVersion(realBytes, 1), /lmdb data format 1/],
      ];
      for (const [name, bytes, reason] of variants) {
        const store = join(dir, name);
        await mkdir(store);
        await writeFile(join(store, 'data.mdb'), bytes);
        assert.throws(
          () => new LmdbUpdateLog({ path: store, logger: quietLogger, registry: new Registry() }),
          (err: unknown) =>
            err instanceof StoreOpenError && err.message.includes(store) && reason.test(err.message),
          name,
        );
      }
    });

    test('a non-empty directory without data.mdb is refused, not turned into a store', async (t) => {
      const { dir, cleanup } = await tempDir('notstore');
      t.after(cleanup);
      await writeFile(join(dir, 'notes.txt'), 'hello');
      assert.throws(
        () => new LmdbUpdateLog({ path: dir, logger: quietLogger, registry: new Registry() }),
        (err: unknown) =>
          err instanceof StoreOpenError && err.message.includes(dir) && /no data.mdb/.test(err.message),
      );
    });

    test('a store of another format version or another program is refused with the reason', async (t) => {
      const { dir, cleanup } = await tempDir('version');
      t.after(cleanup);
      const path = join(dir, 'store');
      const log = new LmdbUpdateLog({ path, logger: quietLogger, registry: new Registry() });
      await log.close();
      await withRawStore(path, ({ db }) => {
        const meta = db('meta');
        const value = new Uint8Array(4);
        new DataView(value.buffer).setUint32(0, STORE_FORMAT_VERSION + 1);
        meta.transactionSync(() => {
          meta.putSync(new TextEncoder().encode('format'), value);
        });
      });
      assert.throws(
        () => new LmdbUpdateLog({ path, logger: quietLogger, registry: new Registry() }),
        (err: unknown) =>
          err instanceof StoreOpenError &&
          err.message.includes(path) &&
          err.message.includes(`format version ${STORE_FORMAT_VERSION + 1}`),
      );

      const foreign = join(dir, 'foreign');
      const other = open(foreign, {});
      await other.put('users', { name: 'x' });
      await other.close();
      assert.throws(
        () => new LmdbUpdateLog({ path: foreign, logger: quietLogger, registry: new Registry() }),
        (err: unknown) => err instanceof StoreOpenError && /another program/.test(err.message),
      );
    });
  });
});
