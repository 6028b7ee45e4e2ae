import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import {
  chmod,
  chown,
  cp,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import tar from 'tar-stream';
import { generateEd25519KeyPair } from '../../src/identity/ed25519.js';
import { signImageDigest } from '../../src/identity/image-signing.js';
import { buildImage, digestFile, ImageBuildError } from '../../src/reconciler/image.js';
import { ImageHolderRecord } from '../../src/reconciler/image-holders.js';
import { extractSafely, ImageStore } from '../../src/reconciler/image-store.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { ObservedView } from '../../src/state/observed-view.js';
import { silentLogger } from '../../src/util/logger.js';
import { makeHarness, TOOLBOX_DIR } from './helpers.js';

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'silo-image-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

type TarHeader = Parameters<tar.Pack['entry']>[0];

async function tarHeaders(file: string): Promise<TarHeader[]> {
  const headers: TarHeader[] = [];
  const extract = tar.extract();
  const done = (async () => {
    for await (const entry of extract) {
      headers.push(entry.header);
      entry.resume();
    }
  })();
  createReadStream(file).pipe(extract);
  await done;
  return headers;
}

/** A tar with arbitrary (possibly hostile) entries. */
async function craftTar(file: string, entries: { header: TarHeader; body?: string }[]): Promise<void> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  for (const { header, body } of entries) {
    await new Promise<void>((resolve, reject) =>
      pack.entry({ mode: 0o644, ...header }, body ?? '', (err) => (err ? reject(err) : resolve())),
    );
  }
  pack.finalize();
  await ended;
  await writeFile(file, Buffer.concat(chunks));
}

describe('reproducible image build', () => {
  test('the same tree yields the same digest whatever its mtimes, owners, modes and creation order', async (t) => {
    const work = await tempDir(t);
    const first = await buildImage(TOOLBOX_DIR, join(work, 'a.tar'));
    const second = await buildImage(TOOLBOX_DIR, join(work, 'b.tar'));
    assert.match(first.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(second.digest, first.digest);
    assert.equal(await digestFile(join(work, 'a.tar')), first.digest);

    // The same content, created in another order, with other times, owners and permission bits.
    const copy = join(work, 'copy');
    await mkdir(join(copy, 'bin'), { recursive: true });
    const names = (await readdir(join(TOOLBOX_DIR, 'bin'))).reverse();
    for (const name of names) {
      const target = join(copy, 'bin', name);
      await cp(join(TOOLBOX_DIR, 'bin', name), target);
      await chmod(target, 0o700); // exec bit set, other bits differ: still 0755 in the image
      await utimes(target, 12345, 67890);
      if (process.getuid?.() === 0) await chown(target, 1234, 5678);
    }
    await cp(join(TOOLBOX_DIR, 'README'), join(copy, 'README'));
    await chmod(join(copy, 'README'), 0o600);
    await chmod(join(copy, 'bin'), 0o700);
    const third = await buildImage(copy, join(work, 'c.tar'));
    assert.equal(third.digest, first.digest);

    // Content and exec bits do count.
    await writeFile(join(copy, 'README'), 'changed');
    assert.notEqual((await buildImage(copy, join(work, 'd.tar'))).digest, first.digest);
    await cp(join(TOOLBOX_DIR, 'README'), join(copy, 'README'));
    await chmod(join(copy, 'README'), 0o755);
    assert.notEqual((await buildImage(copy, join(work, 'e.tar'))).digest, first.digest);
  });

  test('entries are sorted and normalized: mtime 0, uid/gid 0, no user names, 0755/0644 modes', async (t) => {
    const work = await tempDir(t);
    await buildImage(TOOLBOX_DIR, join(work, 'a.tar'));
    const headers = await tarHeaders(join(work, 'a.tar'));
    const names = headers.map((h) => h.name);
    assert.deepEqual(names, [...names].sort());
    assert.equal(names[0], 'README');
    assert.ok(names.includes('bin/'));
    for (const header of headers) {
      assert.equal(header.mtime?.getTime(), 0);
      assert.equal(header.uid, 0);
      assert.equal(header.gid, 0);
      assert.equal(header.uname, '');
      assert.equal(header.gname, '');
      const expected = header.type === 'directory' || header.name.endsWith('.sh') ? 0o755 : 0o644;
      assert.equal(header.mode, expected, header.name);
    }
    // Stock tar reads it.
    const listing = execFileSync('tar', ['-tf', join(work, 'a.tar')], { encoding: 'utf8' });
    assert.match(listing, /^bin\/crash\.sh$/m);
  });

  test('symlinks inside the tree are kept; absolute or escaping ones and special files are refused', async (t) => {
    const work = await tempDir(t);
    const tree = join(work, 'tree');
    await mkdir(join(tree, 'bin'), { recursive: true });
    await writeFile(join(tree, 'bin', 'real'), 'x');
    await symlink('real', join(tree, 'bin', 'alias'));
    await symlink('../bin/real', join(tree, 'bin', 'up-and-back'));
    const built = await buildImage(tree, join(work, 'ok.tar'));
    assert.equal(built.entries, 4);

    await symlink('/etc/passwd', join(tree, 'abs'));
    await assert.rejects(buildImage(tree, join(work, 'abs.tar')), (err: Error) => {
      assert.ok(err instanceof ImageBuildError);
      assert.match(err.message, /abs: absolute symlink target "\/etc\/passwd"/);
      return true;
    });
    await rm(join(tree, 'abs'));
    await symlink('../../outside', join(tree, 'bin', 'escape'));
    await assert.rejects(
      buildImage(tree, join(work, 'esc.tar')),
      /bin\/escape: symlink target "..\/..\/outside" leaves the image/,
    );
    await rm(join(tree, 'bin', 'escape'));
    execFileSync('mkfifo', [join(tree, 'fifo')]);
    await assert.rejects(buildImage(tree, join(work, 'fifo.tar')), /fifo: unsupported file type/);
    await assert.rejects(buildImage(join(work, 'missing'), join(work, 'x.tar')), /not a directory/);
    // A failed build leaves no partial output behind.
    assert.deepEqual((await readdir(work)).sort(), ['ok.tar', 'tree']);
  });
});

describe('image store', () => {
  async function store(t: { after(fn: () => Promise<void>): void }) {
    const dataDir = await tempDir(t);
    const ca = generateEd25519KeyPair();
    const images = new ImageStore({
      dataDir,
      caPublicKey: ca.publicKey,
      logger: silentLogger(),
      registry: new Registry(),
    });
    const tarFile = join(dataDir, 'toolbox.tar');
    const built = await buildImage(TOOLBOX_DIR, tarFile);
    return { dataDir, ca, images, tarFile, digest: built.digest };
  }

  test('import, verify (digest + CA signature) and unpack a signed image', async (t) => {
    const { dataDir, ca, images, tarFile, digest } = await store(t);
    const imported = await images.importFile(tarFile);
    assert.equal(imported.digest, digest);
    const hex = digest.slice('sha256:'.length);
    assert.equal(images.tarPath(digest), join(dataDir, 'images', 'sha256', hex));
    assert.equal(await digestFile(images.tarPath(digest)), digest);
    assert.deepEqual(await images.verify(digest, signImageDigest(ca.privateKey, digest)), { ok: true });
    const rootfs = await images.unpack(digest);
    assert.equal(rootfs, join(dataDir, 'images', 'unpacked', hex));
    assert.equal((await stat(join(rootfs, 'bin', 'crash.sh'))).mode & 0o777, 0o755);
    assert.equal((await stat(join(rootfs, 'README'))).mode & 0o777, 0o644);
    assert.equal(
      await readFile(join(rootfs, 'README'), 'utf8'),
      await readFile(join(TOOLBOX_DIR, 'README'), 'utf8'),
    );
    // Unpacking again reuses the tree.
    assert.equal(await images.unpack(digest), rootfs);
    // The registry counts verifications.
    assert.ok(await images.has(digest));
  });

  test('the holder record follows the store: import, a tampered copy removed, remove', async (t) => {
    const { dataDir, ca, images, tarFile, digest } = await store(t);
    const state = new ClusterState({ logger: silentLogger() });
    const observed = new ObservedView({
      state,
      logger: silentLogger(),
      registry: new Registry(),
      nodeId: 'node-a',
    });
    const record = new ImageHolderRecord({
      nodeId: 'node-a',
      store: images,
      observed,
      logger: silentLogger(),
    });
    t.after(() => record.stop());
    assert.deepEqual(await images.list(), []);
    await record.start();
    assert.deepEqual(observed.imagesOf('node-a')?.digests, []);
    await images.importFile(tarFile);
    await record.publish();
    assert.deepEqual(await images.list(), [digest]);
    assert.deepEqual(observed.holdersOf(digest), ['node-a']);
    // Stray files in the store directory are not images.
    await writeFile(join(dataDir, 'images', 'sha256', '.tmp-partial'), 'x');
    await writeFile(join(dataDir, 'images', 'sha256', 'notes.txt'), 'x');
    assert.deepEqual(await images.list(), [digest]);
    // A copy whose bytes changed is deleted by verify, and the record follows.
    await writeFile(images.tarPath(digest), 'not the image any more');
    const verified = await images.verify(digest, signImageDigest(ca.privateKey, digest));
    assert.equal(verified.ok, false);
    await record.publish();
    assert.deepEqual(observed.holdersOf(digest), []);
    await images.importFile(tarFile);
    await record.publish();
    assert.deepEqual(observed.holdersOf(digest), ['node-a']);
    await images.remove(digest);
    await record.publish();
    assert.deepEqual(observed.holdersOf(digest), []);
  });

  test('unsigned, wrongly signed and tampered images are refused with a reason', async (t) => {
    const { ca, images, tarFile, digest } = await store(t);
    await images.importFile(tarFile);
    const unsigned = await images.verify(digest, '');
    assert.equal(unsigned.ok, false);
    assert.equal(!unsigned.ok && unsigned.code, 'unsigned');
    assert.match(!unsigned.ok ? unsigned.reason : '', /no CA signature/);

    const otherCa = generateEd25519KeyPair();
    const foreign = await images.verify(digest, signImageDigest(otherCa.privateKey, digest));
    assert.equal(!foreign.ok && foreign.code, 'bad-signature');
    const otherDigest = `sha256:${'0'.repeat(64)}`;
    const mismatched = await images.verify(digest, signImageDigest(ca.privateKey, otherDigest));
    assert.equal(!mismatched.ok && mismatched.code, 'bad-signature');
    assert.match(!mismatched.ok ? mismatched.reason : '', /not the org CA's signature over this digest/);

    // Flip one byte of the stored tar: its name no longer matches its content.
    const handle = await open(images.tarPath(digest), 'r+');
    await handle.write(Buffer.from('X'), 0, 1, 600);
    await handle.close();
    const tampered = await images.verify(digest, signImageDigest(ca.privateKey, digest));
    assert.equal(!tampered.ok && tampered.code, 'tampered');
    assert.match(
      !tampered.ok ? tampered.reason : '',
      /stored tar hashes to sha256:[0-9a-f]{64} \(tampered or corrupt; removed\)/,
    );
    assert.equal(await images.has(digest), false);
    const missing = await images.verify(digest, signImageDigest(ca.privateKey, digest));
    assert.equal(!missing.ok && missing.code, 'missing');
    const invalid = await images.verify('sha256:nothex', 'x');
    assert.equal(!invalid.ok && invalid.code, 'invalid-digest');
  });

  test('importStream refuses bytes that do not match the expected digest', async (t) => {
    const { images, tarFile, digest } = await store(t);
    await assert.rejects(
      images.importStream(Readable.from([Buffer.from('not the image')]), digest),
      /image digest mismatch: expected sha256:/,
    );
    assert.equal(await images.has(digest), false);
    assert.deepEqual(await images.importFile(tarFile, digest), { digest, size: (await stat(tarFile)).size });
  });

  test('the runtime runs nothing from a tampered, unsigned or wrongly signed image', async (t) => {
    const h = await makeHarness(t);
    const otherCa = generateEd25519KeyPair();
    await h.runtime.ensureRunning(
      h.spec({
        name: 'forged',
        command: 'bin/crash.sh',
        imageSignature: signImageDigest(otherCa.privateKey, h.digest),
      }),
    );
    const forged = h.runtime.status('forged');
    assert.equal(forged?.phase, 'failed');
    assert.match(forged?.reason ?? '', /not the org CA's signature/);

    const handle = await open(h.store.tarPath(h.digest), 'r+');
    await handle.write(Buffer.from('evil'), 0, 4, 700);
    await handle.close();
    await h.runtime.ensureRunning(h.spec({ name: 'tampered', command: 'bin/crash.sh' }));
    const tampered = h.runtime.status('tampered');
    // The corrupt tar is dropped; the service waits for a good copy (pulling).
    assert.equal(tampered?.phase, 'pulling');
    assert.match(tampered?.reason ?? '', /tampered or corrupt/);
    await h.runtime.ensureRunning(h.spec({ name: 'tampered', command: 'bin/crash.sh' }));
    assert.match(h.runtime.status('tampered')?.reason ?? '', /not in the local store/);
    // Nothing ran: no service directories were even created.
    await assert.rejects(stat(h.serviceDir('forged', 'state')), { code: 'ENOENT' });
    await assert.rejects(stat(h.serviceDir('tampered', 'state')), { code: 'ENOENT' });
  });

  test('a store needs a CA key or a verifier', () => {
    assert.throws(
      () => new ImageStore({ dataDir: '/nonexistent', logger: silentLogger(), registry: new Registry() }),
      /needs caPublicKey or verifySignature/,
    );
  });
});

describe('safe unpack', () => {
  const hostile: [string, { header: TarHeader; body?: string }[], RegExp][] = [
    ['parent traversal', [{ header: { name: '../evil', type: 'file' }, body: 'x' }], /"\.\." in image path/],
    [
      'nested traversal',
      [{ header: { name: 'a/../../evil', type: 'file' }, body: 'x' }],
      /"\.\." in image path/,
    ],
    ['absolute path', [{ header: { name: '/tmp/evil', type: 'file' }, body: 'x' }], /absolute path in image/],
    [
      'write through a symlink',
      [
        { header: { name: 'link', type: 'symlink', linkname: '.' } },
        { header: { name: 'link/evil', type: 'file' }, body: 'x' },
      ],
      /parent link is not a directory/,
    ],
    [
      'escaping symlink',
      [{ header: { name: 'link', type: 'symlink', linkname: '../../etc' } }],
      /leaves the image/,
    ],
    [
      'absolute symlink',
      [{ header: { name: 'link', type: 'symlink', linkname: '/etc' } }],
      /absolute symlink target/,
    ],
    [
      'hard link',
      [{ header: { name: 'hard', type: 'link', linkname: '/etc/passwd' } }],
      /unsupported entry type link/,
    ],
    [
      'device',
      [{ header: { name: 'dev', type: 'character-device', devmajor: 1, devminor: 3 } }],
      /unsupported entry type/,
    ],
    [
      'duplicate file over a symlink',
      [
        { header: { name: 'f', type: 'symlink', linkname: 'g' } },
        { header: { name: 'f', type: 'file' }, body: 'x' },
      ],
      /f: duplicate entry/,
    ],
  ];

  for (const [what, entries, expected] of hostile) {
    test(`refuses ${what}`, async (t) => {
      const work = await tempDir(t);
      const dest = join(work, 'dest');
      await mkdir(dest);
      await craftTar(join(work, 'evil.tar'), entries);
      await assert.rejects(extractSafely(join(work, 'evil.tar'), dest), expected);
      // Nothing escaped next to the destination.
      assert.deepEqual((await readdir(work)).sort(), ['dest', 'evil.tar']);
    });
  }

  test('setuid and world-writable bits never survive unpacking', async (t) => {
    const work = await tempDir(t);
    const dest = join(work, 'dest');
    await mkdir(dest);
    await craftTar(join(work, 'modes.tar'), [
      { header: { name: 'suid', type: 'file', mode: 0o4777 }, body: 'x' },
      { header: { name: 'plain', type: 'file', mode: 0o666 }, body: 'y' },
    ]);
    await extractSafely(join(work, 'modes.tar'), dest);
    assert.equal((await stat(join(dest, 'suid'))).mode & 0o7777, 0o755);
    assert.equal((await stat(join(dest, 'plain'))).mode & 0o7777, 0o644);
  });
});
