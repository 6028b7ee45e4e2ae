import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, type TestContext, test } from 'node:test';
import { EncryptedScratch } from '../../src/reconciler/encrypted-scratch.js';
import {
  cleanStaleMounts,
  encryptedScratchProblem,
  initCipherDir,
  isMountpoint,
  mountCipherDir,
  unmount,
} from '../../src/reconciler/gocryptfs.js';
import {
  deriveScratchKey,
  newScratchSecret,
  ScratchKeyring,
  scratchPassword,
} from '../../src/reconciler/scratch-keys.js';
import { ServiceRuntime } from '../../src/reconciler/service-runtime.js';
import { SnapshotStore } from '../../src/reconciler/snapshots.js';
import { silentLogger } from '../../src/util/logger.js';
import { filesContaining } from '../helpers/files.js';
import { requireOrSkip } from '../overlay/tools.js';
import { type Harness, makeHarness, waitForFile, waitForStatus } from './helpers.js';

/** Pids whose command line contains `needle`. */
async function pidsWithArg(needle: string): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) out.push(Number(entry));
  }
  return out;
}

const requirements = { root: true, tools: ['gocryptfs', 'fusermount3'] };

describe('gocryptfs scratch driver (real gocryptfs, FUSE)', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) {
      await cleanStaleMounts(dir).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    }
  });

  async function fresh(): Promise<{ cipher: string; plain: string; root: string }> {
    const root = await mkdtemp(join(tmpdir(), 'silo-enc-'));
    dirs.push(root);
    const cipher = join(root, 'state.enc');
    const plain = join(root, 'state');
    await mkdir(cipher);
    await mkdir(plain);
    return { cipher, plain, root };
  }

  test('what a service writes rests as ciphertext; the key is never on a command line', async (t) => {
    if (!(await requireOrSkip(t, requirements))) return;
    assert.equal(await encryptedScratchProblem(), null);
    const { cipher, plain, root } = await fresh();
    const password = scratchPassword(deriveScratchKey(newScratchSecret(), 'db', 1));
    await initCipherDir(cipher, password);
    await mountCipherDir(cipher, plain, password, { allowOther: true, logFile: join(root, 'gocryptfs.log') });
    assert.equal(await isMountpoint(plain), true);
    const hex = password.toString('utf8').trim();
    assert.deepEqual(await pidsWithArg(hex), [], 'the key appears on a command line');
    const marker = Buffer.from(`MARKER-${Date.now()}-plaintext`);
    await writeFile(join(plain, `named-${marker.toString()}`), marker);
    await writeFile(join(plain, 'big'), Buffer.concat(Array.from({ length: 1000 }, () => marker)));
    assert.deepEqual(await readFile(join(plain, `named-${marker.toString()}`)), marker);
    await unmount(plain);
    assert.equal(await isMountpoint(plain), false);
    assert.deepEqual(await readdir(plain), []);
    assert.deepEqual(await filesContaining(root, marker), []);
    // The same key opens it again.
    await mountCipherDir(cipher, plain, password, { allowOther: true, logFile: join(root, 'gocryptfs.log') });
    assert.deepEqual(await readFile(join(plain, `named-${marker.toString()}`)), marker);
    await unmount(plain);
  });

  test('a wrong key or a missing ciphertext directory fails with a clear error', async (t) => {
    if (!(await requireOrSkip(t, requirements))) return;
    const { cipher, plain, root } = await fresh();
    const secret = newScratchSecret();
    await initCipherDir(cipher, scratchPassword(deriveScratchKey(secret, 'db', 1)));
    await assert.rejects(
      mountCipherDir(cipher, plain, scratchPassword(deriveScratchKey(secret, 'db', 2)), {
        allowOther: false,
        logFile: join(root, 'gocryptfs.log'),
      }),
      /cannot be opened: wrong key/,
    );
    await assert.rejects(
      mountCipherDir(cipher, plain, scratchPassword(deriveScratchKey(secret, 'other', 1)), {
        allowOther: false,
        logFile: join(root, 'gocryptfs.log'),
      }),
      /wrong key/,
    );
    const empty = await fresh();
    await assert.rejects(
      mountCipherDir(empty.cipher, empty.plain, scratchPassword(deriveScratchKey(secret, 'db', 1)), {
        allowOther: false,
        logFile: join(empty.root, 'gocryptfs.log'),
      }),
      /is not initialized \(no gocryptfs.conf\)/,
    );
    assert.equal(await isMountpoint(plain), false);
  });

  test('a killed gocryptfs leaves a dead mount that cleanStaleMounts removes, and the next mount works', async (t) => {
    if (!(await requireOrSkip(t, requirements))) return;
    const { cipher, plain, root } = await fresh();
    const password = scratchPassword(deriveScratchKey(newScratchSecret(), 'db', 1));
    await initCipherDir(cipher, password);
    await mountCipherDir(cipher, plain, password, { allowOther: true, logFile: join(root, 'gocryptfs.log') });
    await writeFile(join(plain, 'kept'), 'still here');
    const pids = (await pidsWithArg(plain)).filter((pid) => pid !== process.pid);
    assert.ok(pids.length > 0, 'gocryptfs process found');
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await new Promise((done) => setTimeout(done, 200));
    await assert.rejects(readdir(plain), /ENOTCONN|Transport endpoint/);
    assert.deepEqual(await cleanStaleMounts(root), [plain]);
    assert.equal(await isMountpoint(plain), false);
    await mountCipherDir(cipher, plain, password, { allowOther: true, logFile: join(root, 'gocryptfs.log') });
    assert.equal(await readFile(join(plain, 'kept'), 'utf8'), 'still here');
    await unmount(plain);
  });
});

describe('encrypted STATE in the service runtime (real services, real gocryptfs)', () => {
  const marker = Buffer.from(`SILO-MARKER-${process.pid}-${Date.now()}`);
  const half = marker.length >> 1;
  const env = {
    MARKER_A: marker.subarray(0, half).toString(),
    MARKER_B: marker.subarray(half).toString(),
  };
  const markerHash = createHash('sha256').update(marker).digest('hex');

  function keyring(secret: Buffer): ScratchKeyring {
    const ring = new ScratchKeyring();
    ring.add(1, secret);
    return ring;
  }

  async function node(
    t: TestContext,
    keys: ScratchKeyring,
    encryptedScratch = new EncryptedScratch({ keys, allowOther: true }),
  ) {
    const h = await makeHarness(t, { sandbox: 'auto', encryptedScratch });
    t.after(() => cleanStaleMounts(h.dataDir).then(() => undefined));
    const snapshots = new SnapshotStore({ dataDir: h.dataDir, logger: silentLogger(), registry: h.registry });
    await snapshots.init();
    return { h, snapshots };
  }

  const spec = (h: Harness) =>
    h.spec({ name: 'vault', command: 'bin/marker.sh', args: ['5'], notificationFd: 5, env });

  async function runAndReadBack(h: Harness): Promise<void> {
    await rm(h.serviceDir('vault', 'logs/readback'), { force: true });
    await h.runtime.ensureRunning(spec(h));
    await waitForStatus(h.runtime, 'vault', (s) => s.phase === 'running', 'running');
    assert.equal((await waitForFile(h.serviceDir('vault', 'logs/readback'))).trim(), markerHash);
  }

  test('the marker never rests or travels in plaintext; a new holder reads it back; a wrong or missing key is refused', async (t) => {
    if (!(await requireOrSkip(t, requirements))) return;
    const secret = newScratchSecret();
    const a = await node(t, keyring(secret));
    await runAndReadBack(a.h);
    if ((await a.h.runtime.sandboxChoice()).kind === 'bubblewrap') {
      assert.equal((await readFile(a.h.serviceDir('vault', 'logs/uid'), 'utf8')).trim(), '65534');
    }
    // A checkpoint taken while the service runs is ciphertext.
    const live = await a.snapshots.capture('vault', { live: true });
    assert.deepEqual(await filesContaining(a.snapshots.root, marker), []);
    // Drain: stop, final snapshot, unmounted.
    await a.h.runtime.stop('vault', 'draining');
    assert.equal(await isMountpoint(a.h.serviceDir('vault', 'state')), false);
    const final = await a.snapshots.capture('vault', { live: false });
    assert.notEqual(live.digest, '');
    assert.deepEqual(await filesContaining(a.h.dataDir, marker), [], 'plaintext on the holder disk');

    // The transfer: exactly the bytes /silo/scratch/1 serves.
    const served = await a.snapshots.blobSource()(final.digest);
    assert.ok(served !== null);
    const chunks: Buffer[] = [];
    for await (const chunk of served.read()) chunks.push(Buffer.from(chunk));
    const wire = Buffer.concat(chunks);
    assert.equal(wire.includes(marker), false, 'plaintext on the wire');

    // The new holder, same org secret: restores the ciphertext and reads the marker back.
    const b = await node(t, keyring(secret));
    await mkdir(join(b.snapshots.root, 'sha256'), { recursive: true });
    await writeFile(b.snapshots.path(final.digest), wire);
    await b.snapshots.restore('vault', final);
    await runAndReadBack(b.h);
    await b.h.runtime.stop('vault');
    assert.deepEqual(await filesContaining(b.h.dataDir, marker), [], 'plaintext on the new holder disk');

    // Takeover from the checkpoint a replica kept (taken while the service ran): read back too.
    const taker = await node(t, keyring(secret));
    const liveServed = await a.snapshots.blobSource()(live.digest);
    assert.ok(liveServed !== null);
    const liveChunks: Buffer[] = [];
    for await (const chunk of liveServed.read()) liveChunks.push(Buffer.from(chunk));
    const liveWire = Buffer.concat(liveChunks);
    assert.equal(liveWire.includes(marker), false, 'plaintext in the checkpoint on the wire');
    await mkdir(join(taker.snapshots.root, 'sha256'), { recursive: true });
    await writeFile(taker.snapshots.path(live.digest), liveWire);
    assert.deepEqual(await filesContaining(taker.h.dataDir, marker), [], 'plaintext on the replica disk');
    await taker.snapshots.restore('vault', live);
    await runAndReadBack(taker.h);
    await taker.h.runtime.stop('vault');

    // A node with another secret (a revoked node after a rotation): clear refusal, nothing runs.
    const c = await node(t, keyring(newScratchSecret()));
    await mkdir(join(c.snapshots.root, 'sha256'), { recursive: true });
    await writeFile(c.snapshots.path(final.digest), wire);
    await c.snapshots.restore('vault', final);
    await c.h.runtime.ensureRunning(spec(c.h));
    const refused = await waitForStatus(c.h.runtime, 'vault', (s) => s.phase === 'failed', 'failed');
    assert.match(refused.reason ?? '', /cannot be opened: wrong key/);

    // A node without encrypted scratch at all: the ciphertext is not silently replaced by an empty STATE.
    const plainNode = await makeHarness(t, { sandbox: 'auto' });
    const plainStore = new SnapshotStore({
      dataDir: plainNode.dataDir,
      logger: silentLogger(),
      registry: plainNode.registry,
    });
    await mkdir(join(plainStore.root, 'sha256'), { recursive: true });
    await writeFile(plainStore.path(final.digest), wire);
    await plainStore.restore('vault', final);
    await plainNode.runtime.ensureRunning(spec(plainNode));
    const unkeyed = await waitForStatus(plainNode.runtime, 'vault', (s) => s.phase === 'failed', 'failed');
    assert.match(unkeyed.reason ?? '', /STATE is encrypted .* but this node holds no scratch keys/);

    // A node without any scratch key: not started, with the reason.
    const d = await node(t, new ScratchKeyring());
    await d.h.runtime.ensureRunning(spec(d.h));
    const keyless = await waitForStatus(d.h.runtime, 'vault', (s) => s.phase === 'failed', 'failed');
    assert.match(keyless.reason ?? '', /no scratch key on this node/);
  });

  test('encrypted = false (and volatile scratch) keep STATE a plain directory', async (t) => {
    if (!(await requireOrSkip(t, requirements))) return;
    const a = await node(t, keyring(newScratchSecret()));
    for (const override of [{ encrypted: false }, { scratchClass: 'volatile' as const }]) {
      await a.h.runtime.ensureRunning({ ...spec(a.h), ...override });
      await waitForStatus(a.h.runtime, 'vault', (s) => s.phase === 'running', 'running');
      assert.equal((await waitForFile(a.h.serviceDir('vault', 'logs/readback'))).trim(), markerHash);
      assert.equal(await isMountpoint(a.h.serviceDir('vault', 'state')), false);
      assert.deepEqual(await readFile(a.h.serviceDir('vault', 'state/marker')), marker);
      await a.h.runtime.stop('vault');
      await rm(a.h.serviceDir('vault'), { recursive: true, force: true });
    }
  });

  test('a killed agent leaves a mount that the next runtime removes before starting', async (t) => {
    if (!(await requireOrSkip(t, requirements))) return;
    const secret = newScratchSecret();
    const a = await node(t, keyring(secret));
    await runAndReadBack(a.h);
    // What a SIGKILLed agent leaves: the mount (its gocryptfs killed too, so it is dead).
    const state = a.h.serviceDir('vault', 'state');
    for (const pid of (await pidsWithArg(state)).filter((pid) => pid !== process.pid))
      process.kill(pid, 'SIGKILL');
    await a.h.runtime.stopAll('simulated crash');
    const next = new ServiceRuntime({
      dataDir: a.h.dataDir,
      imageStore: a.h.store,
      logger: silentLogger(),
      registry: a.h.registry,
      sandbox: 'auto',
      encryptedScratch: new EncryptedScratch({ keys: keyring(secret), allowOther: true }),
    });
    t.after(() => next.stopAll());
    await next.init();
    assert.equal(await isMountpoint(state), false);
    await next.ensureRunning(spec(a.h));
    await waitForStatus(next, 'vault', (s) => s.phase === 'running', 'running');
    await next.stop('vault');
  });
});
