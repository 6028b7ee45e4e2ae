import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, rename, rm, stat, symlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import tar from 'tar-stream';
import type { PublicKeyInput } from '../identity/ed25519.js';
import { verifyImageDigest } from '../identity/image-signing.js';
import { Listeners } from '../util/listeners.js';
import { counterIn } from '../util/metrics.js';
import { SiloError } from '../util/silo-error.js';
import { checkSymlinkTarget, DIGEST_PATTERN, digestFile, type ImageBuildError } from './image.js';

/**
 * Content-addressed image store under `<dataDir>/images/`:
 *   sha256/<hex>           the image tar, named by the sha256 of its bytes
 *   unpacked/<hex>/        its root filesystem, unpacked once, read-only use
 * Nothing runs from an image until `verify` has recomputed the digest of the
 * stored tar and checked the org CA's signature over it.
 */

/** Checks the CA signature over a digest; `caImageVerifier` is the real one. */
export type ImageSignatureVerifier = (digest: string, signature: string) => boolean;

/** The org CA's image attestation check (src/identity/image-signing.ts) bound to its public key. */
export function caImageVerifier(caPublicKey: PublicKeyInput): ImageSignatureVerifier {
  return (digest, signature) => verifyImageDigest(caPublicKey, digest, signature) === null;
}

export type VerifyResult =
  | { ok: true }
  | {
      ok: false;
      code: 'invalid-digest' | 'missing' | 'tampered' | 'unsigned' | 'bad-signature';
      reason: string;
    };

export interface ImageStoreOptions {
  dataDir: string;
  /** The org CA public key images must be signed by... */
  caPublicKey?: PublicKeyInput;
  /** ...or a verifier of its own (takes precedence). One of the two is required. */
  verifySignature?: ImageSignatureVerifier;
  logger: Logger;
  registry: Registry;
}

export class ImageUnpackError extends SiloError<'image_invalid'> {
  constructor(message: string, options?: ErrorOptions) {
    super('image_invalid', message, options);
  }
}

export class ImageStore {
  readonly root: string;
  private readonly logger: Logger;
  private readonly verifications: Counter<'result'>;
  private readonly unpacking = new Map<string, Promise<string>>();
  private readonly verifySignature: ImageSignatureVerifier;
  private readonly changeListeners = new Listeners<[]>((err) =>
    this.logger.warn({ err: (err as Error).message }, 'an image store listener threw'),
  );

  constructor(options: ImageStoreOptions) {
    if (options.verifySignature !== undefined) this.verifySignature = options.verifySignature;
    else if (options.caPublicKey !== undefined) this.verifySignature = caImageVerifier(options.caPublicKey);
    else throw new Error('ImageStore needs caPublicKey or verifySignature: unsigned images are never run');
    this.root = join(options.dataDir, 'images');
    this.logger = options.logger.child({ component: 'image-store' });
    this.verifications = counterIn(options.registry, {
      name: 'silo_image_verifications_total',
      help: 'Image verifications (digest recomputed + CA signature checked) by result',
      labelNames: ['result'],
    });
  }

  tarPath(digest: string): string {
    return join(this.root, 'sha256', hexOf(digest));
  }

  rootfsPath(digest: string): string {
    return join(this.root, 'unpacked', hexOf(digest));
  }

  /** Digests of the image tars in the store, oldest first. */
  async list(): Promise<string[]> {
    const dir = join(this.root, 'sha256');
    const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const found: { digest: string; mtimeMs: number }[] = [];
    for (const name of names) {
      if (!/^[0-9a-f]{64}$/.test(name)) continue;
      const info = await stat(join(dir, name)).catch(() => null);
      if (info?.isFile()) found.push({ digest: `sha256:${name}`, mtimeMs: info.mtimeMs });
    }
    return found.sort((a, b) => a.mtimeMs - b.mtimeMs).map((entry) => entry.digest);
  }

  /** Called after an image was stored or removed (the holder registry, docs/protocol.md `images`). */
  onChange(listener: () => void): () => void {
    return this.changeListeners.add(listener);
  }

  /** Tells the listeners that the store changed (also called by whoever wrote a tar into it directly). */
  noteChanged(): void {
    this.changeListeners.emit();
  }

  async has(digest: string): Promise<boolean> {
    return (await stat(this.tarPath(digest)).catch(() => null))?.isFile() === true;
  }

  /** Copy an image tar into the store; the digest is computed from the bytes, never trusted from a name. */
  async importFile(file: string, expectedDigest?: string): Promise<{ digest: string; size: number }> {
    return this.importStream(createReadStream(file), expectedDigest);
  }

  /** Store a tar from a stream (a peer transfer, later); refuses it when `expectedDigest` does not match. */
  async importStream(source: Readable, expectedDigest?: string): Promise<{ digest: string; size: number }> {
    if (expectedDigest !== undefined) hexOf(expectedDigest);
    const dir = join(this.root, 'sha256');
    await mkdir(dir, { recursive: true });
    const temp = join(dir, `.tmp-${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let size = 0;
    source.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      size += chunk.length;
    });
    try {
      await pipeline(source, createWriteStream(temp, { mode: 0o644 }));
      const digest = `sha256:${hash.digest('hex')}`;
      if (expectedDigest !== undefined && digest !== expectedDigest) {
        throw new SiloError(
          'digest_mismatch',
          `image digest mismatch: expected ${expectedDigest}, got ${digest}`,
        );
      }
      await rename(temp, this.tarPath(digest));
      this.logger.info({ digest, size }, 'image stored');
      this.noteChanged();
      return { digest, size };
    } finally {
      await rm(temp, { force: true });
    }
  }

  /**
   * Recompute the digest of the stored tar and check the CA signature over it.
   * A tar whose bytes no longer match its name is deleted, so the next pull
   * fetches a good copy instead of failing forever.
   */
  async verify(
    digest: string,
    signature: string | undefined,
    options: { hashedJustNow?: boolean } = {},
  ): Promise<VerifyResult> {
    const result = await this.check(digest, signature, options.hashedJustNow === true);
    this.verifications.inc({ result: result.ok ? 'ok' : result.code });
    if (!result.ok) this.logger.warn({ digest, code: result.code }, result.reason);
    return result;
  }

  /**
   * `hashedJustNow`: the tar was written by a blob fetch that hashed every byte against `digest` as it
   * arrived (blob-exchange.ts), so hashing it again here would only repeat that; the signature is still
   * checked. Every other caller (a start, an image that was already here) recomputes the digest.
   */
  private async check(
    digest: string,
    signature: string | undefined,
    hashedJustNow: boolean,
  ): Promise<VerifyResult> {
    if (!DIGEST_PATTERN.test(digest)) {
      return { ok: false, code: 'invalid-digest', reason: `invalid image digest ${JSON.stringify(digest)}` };
    }
    if (!(await this.has(digest))) {
      return { ok: false, code: 'missing', reason: `image ${digest} is not in the local store` };
    }
    const actual = hashedJustNow ? digest : await digestFile(this.tarPath(digest));
    if (actual !== digest) {
      await rm(this.tarPath(digest), { force: true });
      await rm(this.rootfsPath(digest), { recursive: true, force: true });
      this.noteChanged();
      return {
        ok: false,
        code: 'tampered',
        reason: `image ${digest} refused: stored tar hashes to ${actual} (tampered or corrupt; removed)`,
      };
    }
    if (signature === undefined || signature.length === 0) {
      return { ok: false, code: 'unsigned', reason: `image ${digest} refused: no CA signature` };
    }
    let valid = false;
    try {
      valid = this.verifySignature(digest, signature);
    } catch {
      valid = false;
    }
    if (!valid) {
      return {
        ok: false,
        code: 'bad-signature',
        reason: `image ${digest} refused: the signature is not the org CA's signature over this digest`,
      };
    }
    return { ok: true };
  }

  /**
   * The image's root filesystem, unpacked once. Callers verify first; the
   * unpack hashes the bytes it reads again so a tar swapped in between is
   * caught too.
   */
  async unpack(digest: string): Promise<string> {
    const target = this.rootfsPath(digest);
    if ((await stat(target).catch(() => null))?.isDirectory()) return target;
    let pending = this.unpacking.get(digest);
    if (pending === undefined) {
      pending = this.unpackOnce(digest, target).finally(() => this.unpacking.delete(digest));
      this.unpacking.set(digest, pending);
    }
    return pending;
  }

  /** Remove an image (tar and rootfs). */
  async remove(digest: string): Promise<void> {
    await rm(this.rootfsPath(digest), { recursive: true, force: true });
    await rm(this.tarPath(digest), { force: true });
    this.noteChanged();
  }

  private async unpackOnce(digest: string, target: string): Promise<string> {
    const parent = join(this.root, 'unpacked');
    await mkdir(parent, { recursive: true });
    const temp = join(parent, `.tmp-${hexOf(digest).slice(0, 12)}-${randomBytes(6).toString('hex')}`);
    await mkdirWorldReadable(temp);
    try {
      const actual = await extractSafely(this.tarPath(digest), temp);
      if (actual !== digest)
        throw new ImageUnpackError(`image ${digest}: tar changed while unpacking (${actual})`);
      await rename(temp, target).catch(async (err: NodeJS.ErrnoException) => {
        // Another unpack (another runtime on this data dir) won the race: keep its copy.
        if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
      });
      this.logger.info({ digest, rootfs: target }, 'image unpacked');
      return target;
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
  }
}

function hexOf(digest: string): string {
  if (!DIGEST_PATTERN.test(digest)) throw new Error(`invalid image digest ${JSON.stringify(digest)}`);
  return digest.slice('sha256:'.length);
}

/**
 * Extract into `dest` (an empty directory), refusing anything that could write
 * outside it: absolute names, ".." components, writing through a symlink,
 * symlinks leaving the tree, hard links, devices, fifos, duplicate names.
 * Returns the sha256 digest of the bytes read.
 */
export async function extractSafely(tarFile: string, dest: string): Promise<string> {
  const hash = createHash('sha256');
  const source = createReadStream(tarFile);
  source.on('data', (chunk: Buffer | string) => hash.update(chunk));
  const extract = tar.extract();
  const done = pipeline(source, extract);
  try {
    for await (const entry of extract) {
      await writeEntry(entry, dest);
    }
    await done;
  } catch (err) {
    source.destroy();
    await done.catch(() => undefined);
    throw err;
  }
  return `sha256:${hash.digest('hex')}`;
}

type TarEntry = tar.Extract extends AsyncIterable<infer T> ? T : never;

async function writeEntry(entry: TarEntry, dest: string): Promise<void> {
  const { header } = entry;
  const path = safeEntryPath(header.name);
  if (path === null) {
    entry.resume();
    return; // the root directory itself ("./")
  }
  const absolute = join(dest, ...path.split('/'));
  await ensureRealDirectories(dest, path);
  switch (header.type) {
    case 'directory': {
      const existing = await lstat(absolute).catch(() => null);
      if (existing === null) await mkdirWorldReadable(absolute);
      else if (!existing.isDirectory())
        throw new ImageUnpackError(`${path}: directory entry over a non-directory`);
      entry.resume();
      return;
    }
    case 'file':
    case 'contiguous-file': {
      const mode = ((header.mode ?? 0o644) & 0o111) !== 0 ? 0o755 : 0o644;
      // "wx" = O_CREAT|O_EXCL: never follows or overwrites an existing name (symlink included).
      const handle = await open(absolute, 'wx', mode).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') throw new ImageUnpackError(`${path}: duplicate entry`);
        throw err;
      });
      try {
        // Explicit chmod: the umask must not make the image unreadable to the sandbox user.
        await handle.chmod(mode);
        for await (const chunk of entry) {
          const bytes = chunk as Buffer;
          let offset = 0;
          while (offset < bytes.length) offset += (await handle.write(bytes, offset)).bytesWritten;
        }
      } finally {
        await handle.close().catch(() => undefined);
      }
      return;
    }
    case 'symlink': {
      const linkname = header.linkname ?? '';
      try {
        checkSymlinkTarget(path, linkname);
      } catch (err) {
        throw new ImageUnpackError((err as ImageBuildError).message);
      }
      await symlink(linkname, absolute).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') throw new ImageUnpackError(`${path}: duplicate entry`);
        throw err;
      });
      entry.resume();
      return;
    }
    default:
      throw new ImageUnpackError(`${path}: unsupported entry type ${header.type ?? 'unknown'}`);
  }
}

/** Normalized relative entry path, null for the root itself; throws on escaping names. */
export function safeEntryPath(name: string): string | null {
  if (name.includes('\0')) throw new ImageUnpackError(`entry name contains NUL`);
  if (name.startsWith('/')) throw new ImageUnpackError(`${name}: absolute path in image`);
  const parts = name.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw new ImageUnpackError(`${name}: ".." in image path`);
  if (parts.length === 0) return null;
  return posix.join(...parts);
}

/** Create missing parent directories of `path`, refusing any existing component that is not a real directory. */
async function ensureRealDirectories(dest: string, path: string): Promise<void> {
  const parts = path.split('/').slice(0, -1);
  let current = dest;
  for (const part of parts) {
    current = join(current, part);
    const existing = await lstat(current).catch(() => null);
    if (existing === null) {
      await mkdirWorldReadable(current);
    } else if (!existing.isDirectory()) {
      throw new ImageUnpackError(`${path}: parent ${part} is not a directory (symlink or file)`);
    }
  }
}

async function mkdirWorldReadable(dir: string): Promise<void> {
  await mkdir(dir);
  await chmod(dir, 0o755);
}
