import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, readdir, readlink, rename, rm } from 'node:fs/promises';
import { dirname, join, posix, relative, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';

/**
 * Reproducible image builds: a directory tree becomes a tar whose bytes
 * depend only on the tree's paths, contents, exec bits and symlink targets,
 * so the same tree always yields the same `sha256:<hex>` digest on any
 * machine (docs/services.md, "Images").
 *
 * Normalized: entries sorted bytewise by path, directories before their
 * contents; mtime 0; uid/gid 0; uname/gname empty; modes 0755 for
 * directories and files with any exec bit, 0644 for other files, 0777 for
 * symlinks. Refused: symlinks that are absolute or leave the tree (inside a
 * sandbox the image is mounted elsewhere, so they would point at the host),
 * and sockets, fifos and devices.
 */

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

export class ImageBuildError extends Error {
  override name = 'ImageBuildError';
}

type TarHeader = Parameters<tar.Pack['entry']>[0];

interface TreeEntry {
  /** Path inside the image, "/"-separated, no leading "./"; directories end without "/". */
  path: string;
  type: 'directory' | 'file' | 'symlink';
  mode: number;
  absolute: string;
  size: number;
  linkname?: string;
}

export interface BuiltImage {
  digest: string;
  size: number;
  entries: number;
}

/** Build `sourceDir` into a tar at `outFile` (written to a temp name, renamed when complete). */
export async function buildImage(sourceDir: string, outFile: string): Promise<BuiltImage> {
  const root = resolve(sourceDir);
  const rootStat = await lstat(root).catch(() => null);
  if (rootStat === null || !rootStat.isDirectory())
    throw new ImageBuildError(`${sourceDir}: not a directory`);
  const entries = await collectTree(root);
  const temp = join(dirname(resolve(outFile)), `.${process.pid}.${Date.now()}.image.tmp`);
  const hash = createHash('sha256');
  let size = 0;
  const pack = tar.pack();
  const out = createWriteStream(temp, { mode: 0o644 });
  pack.on('data', (chunk: unknown) => {
    if (!(chunk instanceof Uint8Array)) return;
    hash.update(chunk);
    size += chunk.length;
  });
  const written = pipeline(pack, out);
  try {
    for (const entry of entries) await addEntry(pack, entry);
    pack.finalize();
    await written;
    await rename(temp, outFile);
  } catch (err) {
    pack.destroy();
    await written.catch(() => undefined);
    await rm(temp, { force: true });
    throw err;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size, entries: entries.length };
}

/** sha256 digest of a file, as `sha256:<hex>`. */
export async function digestFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

async function collectTree(root: string): Promise<TreeEntry[]> {
  const entries: TreeEntry[] = [];
  const walk = async (dir: string): Promise<void> => {
    const names = (await readdir(dir)).sort(compareBytes);
    for (const name of names) {
      const absolute = join(dir, name);
      const path = relative(root, absolute).split(sep).join('/');
      const stat = await lstat(absolute);
      if (stat.isDirectory()) {
        entries.push({ path, type: 'directory', mode: 0o755, absolute, size: 0 });
        await walk(absolute);
      } else if (stat.isFile()) {
        const mode = (stat.mode & 0o111) !== 0 ? 0o755 : 0o644;
        entries.push({ path, type: 'file', mode, absolute, size: stat.size });
      } else if (stat.isSymbolicLink()) {
        const linkname = await readlink(absolute);
        checkSymlinkTarget(path, linkname);
        entries.push({ path, type: 'symlink', mode: 0o777, absolute, size: 0, linkname });
      } else {
        throw new ImageBuildError(`${path}: unsupported file type (only files, directories and symlinks)`);
      }
    }
  };
  await walk(root);
  // Sort on full paths so the order is independent of how readdir nests them.
  return entries.sort((a, b) => compareBytes(a.path, b.path));
}

/** Throws unless `linkname` is relative and, resolved from the link's directory, stays inside the image. */
export function checkSymlinkTarget(path: string, linkname: string): void {
  if (linkname.length === 0) throw new ImageBuildError(`${path}: empty symlink target`);
  if (posix.isAbsolute(linkname)) {
    throw new ImageBuildError(
      `${path}: absolute symlink target "${linkname}" (use a relative target inside the image)`,
    );
  }
  const target = posix.normalize(posix.join(posix.dirname(path), linkname));
  if (target === '..' || target.startsWith('../')) {
    throw new ImageBuildError(`${path}: symlink target "${linkname}" leaves the image`);
  }
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

async function addEntry(pack: tar.Pack, entry: TreeEntry): Promise<void> {
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
    return;
  }
  header.size = entry.size;
  const sink = pack.entry(header);
  // A file that changes size while being packed would corrupt the archive;
  // tar-stream reports that as an error on the entry stream.
  await pipeline(createReadStream(entry.absolute), sink);
}
