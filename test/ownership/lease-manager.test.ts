import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Registry } from 'prom-client';
import { GrantStore, GrantStoreError } from '../../src/ownership/grant-store.js';
import { LeaseManager } from '../../src/ownership/lease-manager.js';
import type { LeaseReply, LeaseRequest } from '../../src/ownership/lease-messages.js';
import type { WitnessConfig } from '../../src/ownership/witness-config.js';
import { WitnessService } from '../../src/ownership/witness-service.js';
import { silentLogger } from '../../src/util/logger.js';

/**
 * The LeaseManager with real WitnessServices on real lmdb grant stores. The
 * transport calls the witness's `serve` directly: what is tested is the
 * lease logic and its durability, not libp2p (gossip/lease-exchange has its
 * own tests through the agents).
 */
const root = mkdtempSync(join(tmpdir(), 'silo-lease-'));
after(() => rmSync(root, { recursive: true, force: true }));
const CONFIG: WitnessConfig = { version: 1, witnesses: ['w1', 'w2', 'w3'] };
const WANT = { durationMs: 1500, stopBudgetMs: 500 };
let dirs = 0;

function witnesses(): Map<string, { store: GrantStore; service: WitnessService; path: string }> {
  const out = new Map<string, { store: GrantStore; service: WitnessService; path: string }>();
  for (const id of CONFIG.witnesses) out.set(id, openWitness(id, join(root, `${id}-${++dirs}`)));
  return out;
}

function openWitness(id: string, path: string) {
  const store = new GrantStore({ path, durability: 'nosync' });
  const service = new WitnessService({
    selfId: id,
    store,
    config: () => CONFIG,
    clockDriftPpm: 1000,
    maxLeaseMs: 60_000,
    now: () => performance.now(),
    logger: silentLogger(),
    registry: new Registry(),
  });
  return { store, service, path };
}

function manager(
  selfId: string,
  ws: Map<string, { service: WitnessService }>,
  options: { now?: () => number; down?: Set<string> } = {},
): LeaseManager {
  return new LeaseManager({
    selfId,
    config: () => CONFIG,
    stallMarginMs: 400,
    retryMs: 50,
    ...(options.now ? { now: options.now } : {}),
    local: (requests: LeaseRequest[]) => ws.get(selfId)?.service.serve(selfId, requests) ?? [],
    transport: {
      ask: async (nodeId: string, requests: LeaseRequest[]): Promise<LeaseReply[]> => {
        if (options.down?.has(nodeId)) throw new Error(`${nodeId} unreachable`);
        const witness = ws.get(nodeId);
        if (!witness) throw new Error(`no witness ${nodeId}`);
        return witness.service.serve(selfId, requests);
      },
    },
    logger: silentLogger(),
    registry: new Registry(),
  });
}

async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('a claimant holds a lease once a quorum granted it; a second claimant is refused while it lasts', async () => {
  const ws = witnesses();
  const a = manager('c1', ws);
  const b = manager('c2', ws);
  a.start();
  b.start();
  try {
    a.want('db', WANT);
    await until('c1 may run db', () => a.mayRun('db'));
    assert.deepEqual(a.status('db').grantedBy, ['w1', 'w2', 'w3']);
    b.want('db', WANT);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const status = b.status('db');
    assert.equal(status.held, false);
    assert.match(status.missing.map((m) => m.said).join('; '), /held by c1/);
    // c1 keeps renewing past its first lease length.
    await new Promise((resolve) => setTimeout(resolve, WANT.durationMs + 200));
    assert.equal(a.mayRun('db'), true);
    assert.equal(b.mayRun('db'), false);
  } finally {
    a.stop();
    b.stop();
  }
});

test('releaseAll gives the leases back at once: another claimant holds long before the hold would end', async () => {
  const ws = witnesses();
  const a = manager('c1', ws);
  const b = manager('c2', ws);
  a.start();
  b.start();
  try {
    a.want('db', { durationMs: 20_000, stopBudgetMs: 1000 });
    await until('c1 may run db', () => a.mayRun('db'));
    await a.releaseAll(1000);
    assert.equal(a.mayRun('db'), false);
    for (const [, w] of ws) assert.equal(w.service.record('db')?.released, true);
    b.want('db', WANT);
    // Well within the 20 s hold c1 had.
    await until('c2 may run db', () => b.mayRun('db'), 3000);
    assert.ok(b.status('db').ballot > 1, 'the new holder has a higher ballot (fencing token)');
  } finally {
    a.stop();
    b.stop();
  }
});

test('a minority of reachable witnesses grants nothing: the lease is never held', async () => {
  const ws = witnesses();
  const a = manager('c1', ws, { down: new Set(['w2', 'w3']) });
  a.start();
  try {
    a.want('db', WANT);
    await new Promise((resolve) => setTimeout(resolve, 400));
    const status = a.status('db');
    assert.equal(status.held, false);
    assert.deepEqual(status.grantedBy, ['w1']);
    assert.equal(status.quorum, 2);
  } finally {
    a.stop();
  }
});

test('an event-loop stall past the margin drops every grant (the workload fences)', async () => {
  const ws = witnesses();
  let skew = 0;
  const a = manager('c1', ws, { now: () => performance.now() + skew });
  a.start();
  try {
    a.want('db', { durationMs: 60_000, stopBudgetMs: 1000 });
    await until('c1 may run db', () => a.mayRun('db'));
    // The clock jumps as it does after a stall: the watchdog sees the gap.
    skew += 2000;
    assert.equal(a.mayRun('db'), false);
  } finally {
    a.stop();
  }
});

test('a restarted witness restores its grants from disk and grants nothing during its quiet period (W6)', async () => {
  const ws = witnesses();
  const a = manager('c1', ws);
  a.start();
  try {
    a.want('db', { durationMs: 20_000, stopBudgetMs: 1000 });
    await until('c1 may run db', () => a.mayRun('db'));
  } finally {
    a.stop();
  }
  // Every witness restarts: a new service on the same store.
  const restarted = new Map<string, { service: WitnessService; store: GrantStore; path: string }>();
  for (const [id, w] of ws) {
    await w.store.close();
    restarted.set(id, openWitness(id, w.path));
  }
  const b = manager('c2', restarted);
  b.start();
  try {
    b.want('db', WANT);
    await new Promise((resolve) => setTimeout(resolve, 400));
    const status = b.status('db');
    assert.equal(status.held, false);
    assert.match(status.missing.map((m) => m.said).join('; '), /restarted: grants nothing/);
    assert.equal(restarted.get('w1')?.service.record('db')?.holder, 'c1');
    const quiet = restarted.get('w1')?.service.quietRemainingMs() ?? 0;
    assert.ok(quiet > 55_000 && quiet <= 60_200, `quiet for about one maximal hold, got ${quiet} ms`);
  } finally {
    b.stop();
  }
});

test('a damaged grant store is refused with an error naming it, never guessed', async () => {
  const path = join(root, 'damaged');
  const store = new GrantStore({ path, durability: 'nosync' });
  store.putAll([
    { workload: 'db', ballot: 3, holder: 'c1', incarnation: 7, released: false, durationMs: 1000 },
  ]);
  await store.close();
  const raw = new GrantStore({ path, durability: 'nosync' });
  // A value that is not a record (what a bad disk or another program leaves).
  (raw as unknown as { root: { putSync(k: string, v: string): void } }).root.putSync('db', '{"ballot":"x"}');
  assert.throws(
    () => raw.load(),
    (err: Error) => err instanceof GrantStoreError && err.message.includes(path),
  );
  await raw.close();
  const notLmdb = join(root, 'not-lmdb');
  writeFileSync(notLmdb, 'garbage');
  assert.throws(() => new GrantStore({ path: notLmdb }), GrantStoreError);
});
