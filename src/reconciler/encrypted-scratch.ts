import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  cleanStaleMounts,
  EncryptedScratchError,
  encryptedScratchProblem,
  initCipherDir,
  isEmptyDir,
  isInitialized,
  isMountpoint,
  mountCipherDir,
  unmount,
} from './gocryptfs.js';
import type { ServiceDirs } from './scratch.js';
import { type ScratchKeyring, scratchPassword } from './scratch-keys.js';

/**
 * Encrypted STATE_DIRECTORY (docs/security.md, "Encrypted scratch"): the
 * bytes on disk live in `<service>/state.enc/` (a gocryptfs ciphertext
 * directory); the plaintext view is mounted at `<service>/state/`, the path
 * the sandbox binds, only while the service runs. Snapshots and checkpoints
 * are taken of `state.enc/` (src/reconciler/snapshots.ts), so they travel
 * and rest as ciphertext and replicas store what they cannot read.
 *
 * Which key generation a ciphertext directory was created under is written
 * beside gocryptfs.conf (`silo.generation`, not secret) so it travels with
 * the snapshot: the node that mounts it derives that generation's key.
 */

export const GENERATION_FILE = 'silo.generation';

export function stateCipherDir(dirs: ServiceDirs): string {
  return join(dirs.root, 'state.enc');
}

/** What encrypted scratch needs from the keyring. */
export type ScratchKeys = Pick<ScratchKeyring, 'current' | 'keyFor'>;

export interface EncryptedScratchOptions {
  keys: ScratchKeys;
  /** Let other uids (the sandbox's 65534) into the mount: needs root. */
  allowOther: boolean;
}

export class EncryptedScratch {
  private problem: Promise<string | null> | null = null;

  constructor(private readonly options: EncryptedScratchOptions) {}

  /** Why encrypted scratch cannot be used here (no FUSE, no gocryptfs), or null (checked once). */
  unavailable(): Promise<string | null> {
    this.problem ??= encryptedScratchProblem();
    return this.problem;
  }

  /**
   * Mounts `workload`'s STATE: creates the ciphertext directory under the
   * current key generation the first time; refuses a STATE that holds
   * plaintext (from a run without encryption) rather than hide it.
   */
  async mount(workload: string, dirs: ServiceDirs, logFile: string): Promise<void> {
    const problem = await this.unavailable();
    if (problem !== null) throw new EncryptedScratchError(`encrypted scratch unavailable: ${problem}`);
    if (await isMountpoint(dirs.state)) return;
    const cipher = stateCipherDir(dirs);
    await mkdir(cipher, { recursive: true, mode: 0o700 });
    await mkdir(dirs.state, { recursive: true, mode: 0o755 });
    if (!(await isEmptyDir(dirs.state))) {
      throw new EncryptedScratchError(
        `STATE_DIRECTORY ${dirs.state} holds unencrypted files (from a run without encryption): move them away or set encrypted = false`,
      );
    }
    let generation: number;
    if (await isInitialized(cipher)) {
      generation = await readGeneration(cipher);
    } else {
      const current = this.options.keys.current();
      if (current === null)
        throw new EncryptedScratchError(
          'no scratch key on this node (its bundle carries none: re-sign it with `silo ca sign`, docs/operations.md "Scratch key generations"; or set encrypted = false)',
        );
      if (!(await isEmptyDir(cipher))) {
        throw new EncryptedScratchError(`${cipher} holds files but no gocryptfs.conf: refusing to overwrite`);
      }
      generation = current;
      const key = this.options.keys.keyFor(workload, generation);
      const password = scratchPassword(key);
      try {
        await initCipherDir(cipher, password);
      } finally {
        key.fill(0);
        password.fill(0);
      }
      await writeFile(join(cipher, GENERATION_FILE), `${generation}\n`, { mode: 0o644 });
    }
    const key = this.options.keys.keyFor(workload, generation);
    const password = scratchPassword(key);
    try {
      await mountCipherDir(cipher, dirs.state, password, { allowOther: this.options.allowOther, logFile });
    } finally {
      key.fill(0);
      password.fill(0);
    }
  }

  async unmount(dirs: ServiceDirs): Promise<void> {
    if (await isMountpoint(dirs.state)) await unmount(dirs.state);
  }

  /** At agent start: removes the mounts a killed agent left under `dataDir`. */
  cleanStale(dataDir: string): Promise<string[]> {
    return cleanStaleMounts(dataDir);
  }
}

async function readGeneration(cipher: string): Promise<number> {
  const text = await readFile(join(cipher, GENERATION_FILE), 'utf8').catch(() => null);
  const generation = text === null ? Number.NaN : Number(text.trim());
  if (!Number.isSafeInteger(generation) || generation < 1) {
    throw new EncryptedScratchError(`${cipher}: missing or invalid ${GENERATION_FILE}`);
  }
  return generation;
}
