import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  cleanStaleMounts,
  encryptedScratchProblem,
  initCipherDir,
  isMountpoint,
  mountCipherDir,
  unmount,
} from '../../src/reconciler/gocryptfs.js';
import { deriveScratchKey, newScratchSecret, scratchPassword } from '../../src/reconciler/scratch-keys.js';
import { requireOrSkip } from '../overlay/tools.js';

/** Every file's bytes under `dir`, recursively (what a stolen disk shows). */
export async function filesContaining(dir: string, needle: Buffer): Promise<string[]> {
  const hits: string[] = [];
  const walk = async (path: string): Promise<void> => {
    const info = await stat(path).catch(() => null);
    if (info === null) return;
    if (info.isDirectory()) {
      for (const name of await readdir(path)) {
        if (name.includes(needle.toString('utf8'))) hits.push(join(path, name));
        await walk(join(path, name));
      }
    } else if (info.isFile() && (await readFile(path)).includes(needle)) hits.push(path);
  };
  await walk(dir);
  return hits;
}

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
