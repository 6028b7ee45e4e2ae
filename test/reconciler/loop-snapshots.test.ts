import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { FailureDetector } from '../../src/gossip/failure-detector.js';
import { DetectorLeaseSource } from '../../src/reconciler/lease.js';
import { FenceTracker } from '../../src/reconciler/placement/index.js';
import { SnapshotIntegrityError, SnapshotStore } from '../../src/reconciler/snapshots.js';
import { silentLogger } from '../../src/util/logger.js';

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'silo-snapshots-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function store(dataDir: string, now = () => 1_700_000_000_000): SnapshotStore {
  return new SnapshotStore({ dataDir, logger: silentLogger(), registry: new Registry(), now, gcGraceMs: 0 });
}

const stateOf = (dataDir: string, name: string) => join(dataDir, 'services', name, 'state');

describe('state snapshots', () => {
  test('a snapshot is a reproducible tar stored under its digest; restore swaps it in whole', async (t) => {
    const dataDir = await tempDir(t);
    const snapshots = store(dataDir);
    const state = stateOf(dataDir, 'svc');
    await mkdir(join(state, 'sub'), { recursive: true });
    await writeFile(join(state, 'count'), '41\n');
    await writeFile(join(state, 'sub', 'data'), 'x'.repeat(100_000));
    await symlink('sub/data', join(state, 'alias'));
    const first = await snapshots.capture('svc', { live: false });
    assert.match(first.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(first.at, 1_700_000_000_000);
    assert.ok(await snapshots.has(first.digest));
    assert.deepEqual(await readdir(join(dataDir, 'snapshots', 'sha256')), [first.digest.slice(7)]);
    // Same tree, same bytes (a second node snapshotting the same state gets the same digest).
    assert.equal((await snapshots.capture('svc', { live: true })).digest, first.digest);

    await writeFile(join(state, 'count'), '42\n');
    await writeFile(join(state, 'later'), 'only after the snapshot');
    const second = await snapshots.capture('svc', { live: false });
    assert.notEqual(second.digest, first.digest);

    await snapshots.restore('svc', first);
    assert.equal(await readFile(join(state, 'count'), 'utf8'), '41\n');
    assert.equal((await readFile(join(state, 'alias'), 'utf8')).length, 100_000);
    assert.deepEqual((await readdir(state)).sort(), ['alias', 'count', 'sub']);
    // Nothing of the swap is left beside STATE_DIRECTORY.
    assert.deepEqual((await readdir(join(dataDir, 'services', 'svc'))).sort(), ['state']);

    await snapshots.restoreEmpty('svc');
    assert.deepEqual(await readdir(state), []);
  });

  test('what cannot be restored safely is left out, not fatal: sockets, fifos, links leaving the tree', async (t) => {
    const dataDir = await tempDir(t);
    const snapshots = store(dataDir);
    const state = stateOf(dataDir, 'svc');
    await mkdir(state, { recursive: true });
    await writeFile(join(state, 'keep'), 'kept');
    await symlink('/etc', join(state, 'absolute'));
    await symlink('../../../..', join(state, 'escaping'));
    execFileSync('mkfifo', [join(state, 'fifo')]);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(state, 'sock'), resolve));
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const ref = await snapshots.capture('svc', { live: true });
    const other = stateOf(dataDir, 'copy');
    await snapshots.restore('copy', ref);
    assert.deepEqual(await readdir(other), ['keep']);
  });

  test('a stored snapshot whose bytes do not match its digest is refused and removed; STATE is untouched', async (t) => {
    const dataDir = await tempDir(t);
    const snapshots = store(dataDir);
    const state = stateOf(dataDir, 'svc');
    await mkdir(state, { recursive: true });
    await writeFile(join(state, 'count'), '7\n');
    const ref = await snapshots.capture('svc', { live: false });
    await writeFile(join(state, 'count'), '8\n');
    const file = snapshots.path(ref.digest);
    const bytes = await readFile(file);
    bytes[600] = (bytes[600] ?? 0) ^ 0xff;
    await writeFile(file, bytes);
    await assert.rejects(snapshots.restore('svc', ref), (err: Error) => {
      assert.ok(err instanceof SnapshotIntegrityError);
      assert.match(err.message, /refused: stored bytes hash to .* \(corrupt; removed\)/);
      return true;
    });
    assert.equal(await snapshots.has(ref.digest), false);
    assert.equal(await readFile(join(state, 'count'), 'utf8'), '8\n');
    await assert.rejects(snapshots.restore('svc', ref), /is not stored here/);
  });

  test('init puts back a STATE_DIRECTORY an interrupted swap left aside, and drops half-restored ones', async (t) => {
    const dataDir = await tempDir(t);
    const root = join(dataDir, 'services', 'svc');
    await mkdir(join(root, '.state-old-1-abcd'), { recursive: true });
    await writeFile(join(root, '.state-old-1-abcd', 'count'), '5\n');
    await mkdir(join(root, '.state-restore-0123'), { recursive: true });
    await store(dataDir).init();
    assert.deepEqual((await readdir(root)).sort(), ['state']);
    assert.equal(await readFile(join(root, 'state', 'count'), 'utf8'), '5\n');
  });

  test('garbage collection keeps what is referenced; serving counts for the hand-over wait', async (t) => {
    const dataDir = await tempDir(t);
    const snapshots = store(dataDir);
    const refs = [];
    for (const value of ['1', '2', '3']) {
      await mkdir(stateOf(dataDir, 'svc'), { recursive: true });
      await writeFile(join(stateOf(dataDir, 'svc'), 'count'), value);
      refs.push(await snapshots.capture('svc', { live: false }));
    }
    assert.equal(await snapshots.gc(new Set([refs[2]!.digest])), 2);
    assert.equal(await snapshots.has(refs[2]!.digest), true);
    assert.equal(await snapshots.has(refs[0]!.digest), false);

    assert.equal(await snapshots.waitServed([refs[2]!.digest], 50), false);
    const waiting = snapshots.waitServed([refs[2]!.digest], 10_000);
    const blob = await snapshots.blobSource()(refs[2]!.digest);
    assert.ok(blob);
    let size = 0;
    for await (const chunk of blob.read()) size += chunk.byteLength;
    assert.equal(size, refs[2]!.size);
    assert.equal(await waiting, true);
    assert.equal(await snapshots.blobSource()(refs[0]!.digest), null);
  });
});

describe('the single-view lease source (DetectorLeaseSource)', () => {
  function setup(active = ['a', 'b', 'c']) {
    let now = 1000;
    const clock = () => now;
    const detector = new FailureDetector({ now: clock, suspectAfterMs: 300, deadAfterMs: 1000 });
    const source = new DetectorLeaseSource({
      selfId: 'a',
      detector,
      activeNodeIds: () => active,
      now: clock,
    });
    return { detector, source, advance: (ms: number) => (now += ms), now: () => now };
  }

  test('quorum = this node + peers not dead; proven as of the quorum-th freshest heartbeat heard', () => {
    const { detector, source, advance, now } = setup();
    assert.deepEqual(source.evidence(now()), { quorumVisible: false, provenAt: null });
    detector.observe('b', 1, 1);
    const heardB = now();
    advance(200);
    assert.deepEqual(source.evidence(now()), { quorumVisible: true, provenAt: heardB });
    // A holder that stops hearing its quorum fences fence_after after the last heartbeat heard.
    const fence = new FenceTracker({ fenceAfterMs: 500 });
    let evidence = source.evidence(now());
    assert.equal(fence.observe(now(), evidence.quorumVisible, evidence.provenAt ?? now()).held, true);
    advance(400);
    detector.tick();
    evidence = source.evidence(now());
    assert.equal(fence.observe(now(), evidence.quorumVisible, evidence.provenAt ?? now()).held, false);
    assert.equal(source.liveness(now()).get('b'), 'suspect');
    assert.equal(source.liveness(now()).get('a'), 'alive');
    assert.equal(source.liveness(now()).has('c'), false);
  });

  test('attested dead: dead in the local detector, or never heard for dead_after of listening', () => {
    const { detector, source, advance, now } = setup();
    detector.observe('b', 1, 1);
    advance(500);
    assert.equal(source.attestedDeadSince(now()).size, 0);
    advance(600);
    detector.tick();
    const dead = source.attestedDeadSince(now());
    assert.equal(dead.get('b'), now());
    assert.equal(dead.get('c'), 1000 + 1000);
    assert.equal(source.lastHeard().get('b'), 1000);
    assert.equal(source.listeningSince(), 1000);
  });

  test('a node that is not an active enrolled node holds no lease', () => {
    const { detector, source, now } = setup(['b', 'c']);
    detector.observe('b', 1, 1);
    detector.observe('c', 1, 1);
    assert.deepEqual(source.evidence(now()), { quorumVisible: false, provenAt: null });
  });
});
