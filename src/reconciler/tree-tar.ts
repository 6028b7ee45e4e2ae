import { createHash } from 'node:crypto';
import { createWriteStream, constants as fsConstants } from 'node:fs';
import { type FileHandle, lstat, open, readdir, readlink, realpath, rename, rm } from 'node:fs/promises';
import { dirname, join, posix, relative, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';

/**
 * Reproducible tar of a directory tree, shared by image builds
 * (src/reconciler/image.ts) and STATE_DIRECTORY snapshots
 * (src/reconciler/snapshots.ts): the bytes depend only on the tree's paths,
 * contents, exec bits and symlink targets, so the same tree always yields
 * the same sha256 digest.
 *
 * Normalized: entries sorted bytewise by path, directories before their
 * contents; mtime 0; uid/gid 0; uname/gname empty; modes 0755 for
 * directories and files with any exec bit, 0644 for other files, 0777 for
 * symlinks. Symlinks must be relative and stay inside the tree.
 *
 * Two modes:
 * - `strict` (images): a symlink that is absolute or leaves the tree, a
 *   socket, fifo or device, or a file that changes while it is packed is an
 *   error;
 * - `tolerant` (a service's directory, possibly while the service writes
 *   it): such entries are skipped and listed in `skipped`, files that vanish
 *   are skipped, and a file that grows or shrinks is cut or zero-padded to
 *   the size it had when it was opened (a checkpoint is crash-consistent per
 *   file at best; services that write by rename give whole files).
 *
 * Every file is opened without following a final symlink and, where /proc
 * exists, the opened file's real path is checked to lie inside the tree: a
 * service that swaps a directory for a symlink to /etc while it is being
 * packed gets its own files packed, never the host's.
 */

export type TreeTarMode = 'strict' | 'tolerant';

export interface TreeTarOptions {
  mode: TreeTarMode;
  /** Builds the error thrown for a refused tree (images throw ImageBuildError). */
  fail?: (message: string) => Error;
  /** What the tree is called in messages ("image"); "tree" by default. */
  noun?: string;
  /** Checked between entries: an aborted pack stops with the signal's reason. */
  signal?: AbortSignal;
}

export interface TreeTarResult {
  digest: string;
  size: number;
  entries: number;
  /** Tolerant mode: entries left out and why ("run/sock: socket"). */
  skipped: string[];
}

type TarHeader = Parameters<tar.Pack['entry']>[0];

interface TreeEntry {
  /** Path inside the tree, "/"-separated, no leading "./". */
  path: string;
  type: 'directory' | 'file' | 'symlink';
  mode: number;
  absolute: string;
  linkname?: string;
}

const CHUNK_BYTES = 64 * 1024;

/** Null when `linkname` is relative and, resolved from the link's directory, stays inside the tree; else why not. */
export function symlinkProblem(path: string, linkname: string, noun = 'tree'): string | null {
  if (linkname.length === 0) return `${path}: empty symlink target`;
  if (posix.isAbsolute(linkname)) {
    return `${path}: absolute symlink target "${linkname}" (use a relative target inside the ${noun})`;
  }
  const target = posix.normalize(posix.join(posix.dirname(path), linkname));
  if (target === '..' || target.startsWith('../'))
    return `${path}: symlink target "${linkname}" leaves the ${noun}`;
  return null;
}

/** Write `sourceDir` as a reproducible tar to `outFile` (a temp name, renamed when complete). */
export async function writeTreeTar(
  sourceDir: string,
  outFile: string,
  options: TreeTarOptions,
): Promise<TreeTarResult> {
  const fail = options.fail ?? ((message: string) => new Error(message));
  const root = resolve(sourceDir);
  const rootStat = await lstat(root).catch(() => null);
  if (rootStat === null || !rootStat.isDirectory()) throw fail(`${sourceDir}: not a directory`);
  const rootReal = await realpath(root);
  const skipped: string[] = [];
  const context: PackContext = { options, fail, root, rootReal, skipped };
  const entries = await collectTree(context);
  const temp = join(dirname(resolve(outFile)), `.${process.pid}.${Date.now()}.${randomSuffix()}.tar.tmp`);
  const hash = createHash('sha256');
  let size = 0;
  let packed = 0;
  const pack = tar.pack();
  const out = createWriteStream(temp, { mode: 0o644 });
  pack.on('data', (chunk: unknown) => {
    if (!(chunk instanceof Uint8Array)) return;
    hash.update(chunk);
    size += chunk.length;
  });
  const written = pipeline(pack, out);
  try {
    for (const entry of entries) {
      options.signal?.throwIfAborted();
      if (await addEntry(pack, entry, context)) packed++;
    }
    pack.finalize();
    await written;
    await rename(temp, outFile);
  } catch (err) {
    pack.destroy();
    await written.catch(() => undefined);
    await rm(temp, { force: true });
    throw err;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size, entries: packed, skipped };
}

interface PackContext {
  options: TreeTarOptions;
  fail: (message: string) => Error;
  root: string;
  rootReal: string;
  skipped: string[];
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

async function collectTree(context: PackContext): Promise<TreeEntry[]> {
  const { root, options, fail, skipped } = context;
  const tolerant = options.mode === 'tolerant';
  const entries: TreeEntry[] = [];
  const walk = async (dir: string): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(dir)).sort(compareBytes);
    } catch (err) {
      if (tolerant && isGone(err)) return;
      throw err;
    }
    for (const name of names) {
      options.signal?.throwIfAborted();
      const absolute = join(dir, name);
      const path = relative(root, absolute).split(sep).join('/');
      const stat = await lstat(absolute).catch((err: unknown) => {
        if (tolerant && isGone(err)) return null;
        throw err;
      });
      if (stat === null) continue;
      if (stat.isDirectory()) {
        entries.push({ path, type: 'directory', mode: 0o755, absolute });
        await walk(absolute);
      } else if (stat.isFile()) {
        entries.push({ path, type: 'file', mode: 0o644, absolute });
      } else if (stat.isSymbolicLink()) {
        const linkname = await readlink(absolute).catch((err: unknown) => {
          if (tolerant && isGone(err)) return null;
          throw err;
        });
        if (linkname === null) continue;
        const problem = symlinkProblem(path, linkname, options.noun);
        if (problem !== null) {
          if (!tolerant) throw fail(problem);
          skipped.push(problem);
          continue;
        }
        entries.push({ path, type: 'symlink', mode: 0o777, absolute, linkname });
      } else {
        const problem = `${path}: unsupported file type (only files, directories and symlinks)`;
        if (!tolerant) throw fail(problem);
        skipped.push(problem);
      }
    }
  };
  await walk(root);
  // Sort on full paths so the order is independent of how readdir nests them.
  return entries.sort((a, b) => compareBytes(a.path, b.path));
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Adds one entry; false when a tolerant pack skipped it (it vanished or moved). */
async function addEntry(pack: tar.Pack, entry: TreeEntry, context: PackContext): Promise<boolean> {
  const header: TarHeader = {
    name: entry.type === 'directory' ? `${entry.path}/` : entry.path,
    mode: entry.mode,
    mtime: new Date(0),
    uid: 0,
    gid: 0,
    uname: '',
    gname: '',
    type: entry.type,
  };
  if (entry.type === 'symlink') {
    header.linkname = entry.linkname ?? '';
    header.size = 0;
  }
  if (entry.type !== 'file') {
    await new Promise<void>((res, rej) => pack.entry(header, (err) => (err ? rej(err) : res())));
    return true;
  }
  const handle = await openInside(entry, context);
  if (handle === null) return false;
  try {
    const info = await handle.stat();
    header.size = info.size;
    header.mode = (info.mode & 0o111) !== 0 ? 0o755 : 0o644;
    const sink = pack.entry(header);
    await pipeline(Readable.from(fileChunks(handle, info.size, entry.path, context)), sink);
  } finally {
    await handle.close().catch(() => undefined);
  }
  return true;
}

/**
 * Opens a file of the tree for reading, never through a final symlink, and
 * checks (via /proc/self/fd) that what was opened really is that path inside
 * the tree. Null when a tolerant pack skips it.
 */
async function openInside(entry: TreeEntry, context: PackContext): Promise<FileHandle | null> {
  const tolerant = context.options.mode === 'tolerant';
  let handle: FileHandle;
  try {
    handle = await open(entry.absolute, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ELOOP: the file was replaced by a symlink after the walk saw it.
    if (tolerant && (isGone(err) || code === 'ELOOP')) {
      if (code === 'ELOOP') context.skipped.push(`${entry.path}: replaced by a symlink while packing`);
      return null;
    }
    if (code === 'ELOOP') throw context.fail(`${entry.path}: replaced by a symlink while packing`);
    throw err;
  }
  const problem = await checkOpenedPath(handle, join(context.rootReal, ...entry.path.split('/')));
  const info = problem === null ? await handle.stat() : null;
  const notFile = info !== null && !info.isFile() ? `${entry.path}: no longer a regular file` : null;
  const refusal = problem === null ? notFile : `${entry.path}: ${problem}`;
  if (refusal === null) return handle;
  await handle.close().catch(() => undefined);
  if (!tolerant) throw context.fail(refusal);
  context.skipped.push(refusal);
  return null;
}

async function checkOpenedPath(handle: FileHandle, expected: string): Promise<string | null> {
  let actual: string;
  try {
    actual = await readlink(`/proc/self/fd/${handle.fd}`);
  } catch {
    return null; // no /proc (not Linux): the O_NOFOLLOW open is all we have
  }
  if (actual === expected || actual === `${expected} (deleted)`) return null;
  return 'resolves outside the tree (a parent directory was swapped for a symlink)';
}

async function* fileChunks(
  handle: FileHandle,
  size: number,
  path: string,
  context: PackContext,
): AsyncGenerator<Buffer> {
  const tolerant = context.options.mode === 'tolerant';
  let offset = 0;
  while (offset < size) {
    const want = Math.min(CHUNK_BYTES, size - offset);
    const buffer = Buffer.allocUnsafe(want);
    const { bytesRead } = await handle.read(buffer, 0, want, offset);
    if (bytesRead === 0) {
      if (!tolerant) throw context.fail(`${path}: file shrank while packing`);
      // Keep the announced size: the tar header is already written.
      for (let rest = size - offset; rest > 0; rest -= CHUNK_BYTES)
        yield Buffer.alloc(Math.min(rest, CHUNK_BYTES));
      return;
    }
    offset += bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
  if (!tolerant) {
    const probe = Buffer.allocUnsafe(1);
    const { bytesRead } = await handle.read(probe, 0, 1, size);
    if (bytesRead > 0) throw context.fail(`${path}: file grew while packing`);
  }
}

function randomSuffix(): string {
  return Math.random().toString(36).slice(2, 10);
}
