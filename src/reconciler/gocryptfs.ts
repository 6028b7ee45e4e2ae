import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, open, readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { execa } from 'execa';
import { commandExists } from '../overlay/exec.js';
import { SiloError } from '../util/silo-error.js';

/**
 * Drives gocryptfs, the FUSE encrypted filesystem encrypted scratch uses
 * (docs/security.md, "Encrypted scratch"). The key is handed over as the
 * password on gocryptfs's stdin (a pipe): never on argv (readable in
 * /proc/<pid>/cmdline), never in a file. The password is a 256-bit key, not
 * something a person chose, so scrypt's cost buys nothing and is set to its
 * minimum.
 */

export class EncryptedScratchError extends SiloError<'encryption_failed'> {
  constructor(message: string, options?: ErrorOptions) {
    super('encryption_failed', message, options);
  }
}

/** gocryptfs's exit codes that mean something to the caller (its documented list). */
const EXIT_PASSWORD_INCORRECT = 12;

/** The marker of an initialized ciphertext directory. */
export const GOCRYPTFS_CONF = 'gocryptfs.conf';

/** Why encrypted scratch cannot work on this machine, or null when it can. */
export async function encryptedScratchProblem(): Promise<string | null> {
  if (!(await commandExists('gocryptfs'))) return 'gocryptfs is not installed (apt-get install gocryptfs)';
  if (!(await commandExists('fusermount3')) && !(await commandExists('fusermount'))) {
    return 'fusermount is not installed (apt-get install fuse3)';
  }
  try {
    await access('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    return 'FUSE is not available (/dev/fuse missing or not accessible)';
  }
  return null;
}

export async function isInitialized(cipherDir: string): Promise<boolean> {
  return (await stat(join(cipherDir, GOCRYPTFS_CONF)).catch(() => null))?.isFile() === true;
}

/** Makes `cipherDir` (existing, empty) a gocryptfs ciphertext directory for `password`. */
export async function initCipherDir(cipherDir: string, password: Uint8Array): Promise<void> {
  const result = await execa('gocryptfs', ['-init', '-q', '-nosyslog', '-scryptn', '10', cipherDir], {
    input: Buffer.from(password),
    reject: false,
  });
  if (result.exitCode !== 0) {
    throw new EncryptedScratchError(`gocryptfs -init ${cipherDir} failed: ${lastLine(result.stderr)}`);
  }
}

/**
 * Mounts `cipherDir` at `mountpoint` (gocryptfs daemonizes once the mount is
 * up). `allowOther`: the sandboxed service runs as another uid than the
 * agent, and FUSE lets only the mounting user in without it.
 */
export async function mountCipherDir(
  cipherDir: string,
  mountpoint: string,
  password: Uint8Array,
  options: { allowOther: boolean /** Where gocryptfs's messages go (appended). */; logFile: string },
): Promise<void> {
  const args = ['-q', '-nosyslog', ...(options.allowOther ? ['-allow_other'] : []), cipherDir, mountpoint];
  // Checked first: gocryptfs's exit code for this differs between versions.
  if (!(await isInitialized(cipherDir))) {
    throw new EncryptedScratchError(
      `encrypted scratch ${cipherDir} is not initialized (no ${GOCRYPTFS_CONF})`,
    );
  }
  const result = await runDaemonizing('gocryptfs', args, password, options.logFile);
  if (result.exitCode === 0) return;
  if (result.exitCode === EXIT_PASSWORD_INCORRECT) {
    throw new EncryptedScratchError(
      `encrypted scratch ${cipherDir} cannot be opened: wrong key (written under another key or key generation)`,
    );
  }
  throw new EncryptedScratchError(
    `mounting encrypted scratch ${cipherDir} failed (exit ${String(result.exitCode)}): ${lastLine(result.stderr)}`,
  );
}

/**
 * Unmounts a FUSE mount. Lazy (-z) so a process still holding a file open
 * (or a dead gocryptfs whose mount answers ENOTCONN) cannot keep it.
 */
export async function unmount(mountpoint: string): Promise<void> {
  const tool = (await commandExists('fusermount3')) ? 'fusermount3' : 'fusermount';
  const result = await execa(tool, ['-u', '-z', mountpoint], { reject: false });
  if (result.exitCode !== 0 && (await isMountpoint(mountpoint))) {
    throw new EncryptedScratchError(`cannot unmount ${mountpoint}: ${lastLine(result.stderr)}`);
  }
}

/** Mount points (decoded) of this mount namespace's gocryptfs mounts. */
export async function gocryptfsMounts(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    // mountinfo: "id parent major:minor root mountpoint options ... - fstype source superopts"
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    if (!right.startsWith('fuse.gocryptfs ')) continue;
    const mountpoint = left.split(' ')[4];
    if (mountpoint !== undefined) out.push(decodeMountinfo(mountpoint));
  }
  return out;
}

export async function isMountpoint(path: string): Promise<boolean> {
  return (await gocryptfsMounts()).includes(resolve(path));
}

/**
 * Unmounts every gocryptfs mount under `dir`: what an agent killed while
 * services ran leaves behind (a live gocryptfs, or a dead one whose mount
 * point now fails with ENOTCONN and would block the next start). Returns the
 * mount points it removed.
 */
export async function cleanStaleMounts(dir: string): Promise<string[]> {
  const root = resolve(dir) + sep;
  const stale = (await gocryptfsMounts()).filter((mountpoint) => mountpoint.startsWith(root));
  // Deepest first: a mount inside another must go before its parent.
  stale.sort((a, b) => b.length - a.length);
  for (const mountpoint of stale) await unmount(mountpoint);
  return stale;
}

/** True when `dir` is missing or has no entries (FUSE refuses to mount over a non-empty directory). */
export async function isEmptyDir(dir: string): Promise<boolean> {
  const entries = await readdir(dir).catch(() => null);
  return entries === null || entries.length === 0;
}

/**
 * Runs a command that forks a daemon and exits. The daemon inherits stderr:
 * a pipe would keep execa waiting until the unmount, and closing it early
 * kills a Go daemon with SIGPIPE at its next log line. So stderr goes to a
 * file (appended), and what was added to it up to the exit is the message.
 */
async function runDaemonizing(
  file: string,
  args: string[],
  input: Uint8Array,
  logFile: string,
): Promise<{ exitCode: number | null; stderr: string }> {
  const log = await open(logFile, 'a', 0o600);
  const from = (await log.stat()).size;
  try {
    const exitCode = await new Promise<number | null>((done, fail) => {
      const child = spawn(file, args, { stdio: ['pipe', 'ignore', log.fd] });
      child.on('error', fail);
      child.on('exit', (code) => done(code));
      // stdio[0] is 'pipe', so stdin exists; the guard satisfies the types.
      child.stdin?.on('error', () => {});
      child.stdin?.end(Buffer.from(input));
    });
    const added = await readFile(logFile).catch(() => Buffer.alloc(0));
    return { exitCode, stderr: added.subarray(from).toString('utf8') };
  } finally {
    await log.close();
  }
}

function decodeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

function lastLine(text: string): string {
  const lines = text
    .trim()
    .split('\n')
    .filter((line) => line.trim() !== '');
  return lines.at(-1) ?? '(no message)';
}
