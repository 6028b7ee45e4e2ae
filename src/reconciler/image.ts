import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { InputError } from '../util/input-error.js';
import { symlinkProblem, writeTreeTar } from './tree-tar.js';

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
 * and sockets, fifos and devices. The packing itself is shared with state
 * snapshots (src/reconciler/tree-tar.ts).
 */

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

export class ImageBuildError extends InputError {
  override name = 'ImageBuildError';
}

export interface BuiltImage {
  digest: string;
  size: number;
  entries: number;
}

/** Build `sourceDir` into a tar at `outFile` (written to a temp name, renamed when complete). */
export async function buildImage(sourceDir: string, outFile: string): Promise<BuiltImage> {
  const built = await writeTreeTar(sourceDir, outFile, {
    mode: 'strict',
    noun: 'image',
    fail: (message) => new ImageBuildError(message),
  });
  return { digest: built.digest, size: built.size, entries: built.entries };
}

/** sha256 digest of a file, as `sha256:<hex>`. */
export async function digestFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/** Throws unless `linkname` is relative and, resolved from the link's directory, stays inside the image. */
export function checkSymlinkTarget(path: string, linkname: string): void {
  const problem = symlinkProblem(path, linkname, 'image');
  if (problem !== null) throw new ImageBuildError(problem);
}
