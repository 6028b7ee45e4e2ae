import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InputError } from '../util/input-error.js';

/**
 * Files holding keys and identity: written atomically (temp file in the same
 * directory, fsync, rename, fsync of the directory) so a crash leaves either
 * the old file or the new one, never a truncated key; secrets are created
 * 0600 from the start rather than chmod-ed after being written.
 */

export class KeyFileError extends InputError {
  constructor(
    readonly path: string,
    problem: string,
  ) {
    super(`${path}: ${problem}`);
    this.name = 'KeyFileError';
  }
}

export const SECRET_FILE_MODE = 0o600;
export const PUBLIC_FILE_MODE = 0o644;

export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode: number = SECRET_FILE_MODE,
): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', mode);
  try {
    await handle.writeFile(data);
    // The umask may have narrowed the mode; secrets must not end up wider than asked, nor public files narrower.
    await handle.chmod(mode);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await unlink(temp).catch(() => {});
    throw err;
  }
  await handle.close();
  try {
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw err;
  }
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

/** Read a key/identity file; missing, unreadable and empty files fail with the path in the message. */
export async function readKeyFile(path: string, what: string): Promise<Buffer> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new KeyFileError(path, `${what} is missing`);
    if (code === 'EACCES') throw new KeyFileError(path, `${what} is not readable (permission denied)`);
    if (code === 'EISDIR') throw new KeyFileError(path, `${what} is a directory`);
    throw new KeyFileError(path, `cannot read ${what}: ${(err as Error).message}`);
  }
  if (data.length === 0) throw new KeyFileError(path, `${what} is empty (truncated?)`);
  return data;
}

export async function readKeyText(path: string, what: string): Promise<string> {
  const data = await readKeyFile(path, what);
  const text = data.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(data))
    throw new KeyFileError(path, `${what} is not UTF-8 text (garbage?)`);
  return text;
}

/** Read and JSON-parse an identity file; garbage fails with the path in the message. */
export async function readJsonFile(path: string, what: string): Promise<unknown> {
  const text = await readKeyText(path, what);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new KeyFileError(
      path,
      `${what} is not valid JSON (truncated or garbage?): ${(err as Error).message}`,
    );
  }
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
