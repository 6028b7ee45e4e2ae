import { chown, lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { WORKLOAD_NAME_PATTERN } from '../state/schemas.js';

/**
 * A service's scratch directories, `<dataDir>/services/<name>/`:
 *   runtime/    RUNTIME_DIRECTORY: fresh for every run, removed at stop
 *   state/      STATE_DIRECTORY: persistent, follows the service on migration
 *   cache/      CACHE_DIRECTORY: kept best-effort, purged only while stopped
 *   logs/       LOGS_DIRECTORY: stdout/stderr (`current` + rotated files)
 *   supervise/  the supervisor's own files (pid file); never visible to the service
 */

export interface ServiceDirs {
  root: string;
  runtime: string;
  state: string;
  cache: string;
  logs: string;
  supervise: string;
}

export function serviceDirs(dataDir: string, name: string): ServiceDirs {
  // The name becomes a path component: re-check it even though specs are validated upstream.
  if (!WORKLOAD_NAME_PATTERN.test(name)) throw new Error(`invalid service name ${JSON.stringify(name)}`);
  const root = join(dataDir, 'services', name);
  return {
    root,
    runtime: join(root, 'runtime'),
    state: join(root, 'state'),
    cache: join(root, 'cache'),
    logs: join(root, 'logs'),
    supervise: join(root, 'supervise'),
  };
}

export interface Owner {
  uid: number;
  gid: number;
}

/** Before every start: RUNTIME recreated empty, the others created if missing, all owned by `owner` if given. */
export async function prepareDirs(dirs: ServiceDirs, owner?: Owner): Promise<void> {
  await rm(dirs.runtime, { recursive: true, force: true });
  for (const dir of [dirs.root, dirs.runtime, dirs.state, dirs.cache, dirs.logs, dirs.supervise]) {
    await mkdir(dir, { recursive: true, mode: 0o755 });
  }
  if (owner !== undefined) {
    // STATE may hold a snapshot restored by root or files from a run without
    // the sandbox: the service user must own everything it is meant to write.
    for (const dir of [dirs.runtime, dirs.state, dirs.cache, dirs.logs]) await chownTree(dir, owner);
  }
}

/** At stop: RUNTIME is volatile. */
export async function removeRuntime(dirs: ServiceDirs): Promise<void> {
  await rm(dirs.runtime, { recursive: true, force: true });
}

/** Empty CACHE (callers guarantee the service is stopped). */
export async function purgeCache(dirs: ServiceDirs): Promise<void> {
  await rm(dirs.cache, { recursive: true, force: true });
  await mkdir(dirs.cache, { recursive: true, mode: 0o755 });
}

async function chownTree(path: string, owner: Owner): Promise<void> {
  const stat = await lstat(path).catch(() => null);
  if (stat === null) return;
  if (stat.uid !== owner.uid || stat.gid !== owner.gid) {
    // lchown semantics for symlinks: never follow a link out of the tree.
    if (stat.isSymbolicLink()) return;
    await chown(path, owner.uid, owner.gid);
  }
  if (stat.isDirectory()) {
    for (const name of await readdir(path)) await chownTree(join(path, name), owner);
  }
}

export interface Usage {
  bytes: number;
  entries: number;
  /** True when the walk stopped at `maxEntries`: `bytes` is then a lower bound. */
  truncated: boolean;
}

/**
 * du-like disk usage (allocated blocks, not apparent size) of some trees,
 * walking at most `maxEntries` entries so a service with millions of files
 * cannot make measuring it expensive.
 */
export async function measureUsage(paths: readonly string[], maxEntries = 100_000): Promise<Usage> {
  let bytes = 0;
  let entries = 0;
  const stack = [...paths];
  while (stack.length > 0) {
    const path = stack.pop()!;
    if (entries >= maxEntries) return { bytes, entries, truncated: true };
    const stat = await lstat(path).catch(() => null);
    if (stat === null) continue;
    entries++;
    bytes += stat.blocks * 512;
    if (stat.isDirectory()) {
      const names = await readdir(path).catch(() => [] as string[]);
      for (const name of names) stack.push(join(path, name));
    }
  }
  return { bytes, entries, truncated: false };
}

export type QuotaEvent =
  | { type: 'over-quota'; usedBytes: number; limitBytes: number }
  | { type: 'back-under-quota'; usedBytes: number; limitBytes: number }
  | { type: 'quota-exceeded'; usedBytes: number; limitBytes: number; reason: string };

export interface QuotaMonitorOptions {
  /** Trees counted against the quota: RUNTIME, STATE and CACHE (LOGS are bounded by rotation). */
  paths: readonly string[];
  limitBytes: number;
  intervalMs: number;
  /** How long usage may stay over the limit before `quota-exceeded`. */
  graceMs: number;
  maxEntries?: number;
  onEvent: (event: QuotaEvent) => void;
  onMeasured?: (usage: Usage) => void;
  now?: () => number;
}

/**
 * Periodic scratch usage check: the first measurement over the limit emits
 * `over-quota`; staying over for longer than the grace emits `quota-exceeded`
 * once (the runtime then stops the service with that reason).
 */
export class ScratchQuotaMonitor {
  private timer: NodeJS.Timeout | null = null;
  private overSince: number | null = null;
  private exceeded = false;
  private measuring = false;
  lastUsage: Usage | null = null;

  constructor(private readonly options: QuotaMonitorOptions) {}

  start(): void {
    if (this.timer !== null) return;
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** One measurement now (also what the timer runs). */
  async tick(): Promise<Usage | null> {
    if (this.measuring) return null;
    this.measuring = true;
    try {
      const usage = await measureUsage(this.options.paths, this.options.maxEntries);
      this.lastUsage = usage;
      this.options.onMeasured?.(usage);
      this.evaluate(usage.bytes);
      return usage;
    } finally {
      this.measuring = false;
    }
  }

  private evaluate(usedBytes: number): void {
    const { limitBytes, graceMs, onEvent } = this.options;
    const now = (this.options.now ?? Date.now)();
    if (usedBytes <= limitBytes) {
      if (this.overSince !== null) onEvent({ type: 'back-under-quota', usedBytes, limitBytes });
      this.overSince = null;
      return;
    }
    if (this.overSince === null) {
      this.overSince = now;
      onEvent({ type: 'over-quota', usedBytes, limitBytes });
    }
    if (!this.exceeded && now - this.overSince >= graceMs) {
      this.exceeded = true;
      const mb = (n: number): string => (n / 1048576).toFixed(1);
      onEvent({
        type: 'quota-exceeded',
        usedBytes,
        limitBytes,
        reason: `scratch quota exceeded: ${mb(usedBytes)} MB used of ${mb(limitBytes)} MB for more than ${graceMs / 1000} s`,
      });
    }
  }
}
