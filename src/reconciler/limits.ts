import { existsSync, readFileSync } from 'node:fs';
import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { killQuietly } from './proc.js';

/**
 * Resource limits for one service, with what this host can actually enforce
 * (these machines: cgroup v1, no systemd):
 *   memory  cgroup v1 memory.limit_in_bytes (+ memsw when swap accounting is on);
 *           without a writable memory cgroup, RLIMIT_AS as a rough stand-in
 *   cpu     cgroup v1 cpu.cfs_quota_us = cpus × cfs_period_us
 *   nofile  RLIMIT_NOFILE (soft = hard), capped at the agent's own hard limit
 * cgroup v2 is not handled yet: its "no internal processes" rule needs a
 * delegated subtree the agent does not have without systemd.
 *
 * Limits are applied by a /bin/sh prefix that moves itself into the cgroups,
 * sets the rlimits and then execs the real command (bwrap or the service), so
 * the very first instruction of the service already runs limited.
 */

export interface ResourceRequest {
  cpus: number;
  memoryMb: number;
}

export interface EnforcedLimits {
  memory: 'cgroup-v1' | 'rlimit-as' | 'none';
  cpu: 'cgroup-v1-cfs' | 'none';
  /** RLIMIT_NOFILE applied, or null. */
  nofile: number | null;
  /** Why something is not enforced (one note per gap). */
  notes: string[];
}

export interface LimitSetup {
  enforced: EnforcedLimits;
  /** cgroup directories the service runs in (killed and removed at release). */
  cgroupDirs: string[];
  /** argv prefix; the command follows it. */
  prefix: string[];
}

export interface ResourceLimiterOptions {
  logger: Logger;
  /** Where the cgroup v1 hierarchies are mounted. */
  cgroupMount?: string;
  /** The agent's own cgroup membership (parent of the services' cgroups). */
  procSelfCgroup?: string;
  /** RLIMIT_NOFILE for services. */
  nofile?: number;
  /** false: enforce nothing (tests of other behaviour, hosts where the agent must not touch cgroups). */
  enabled?: boolean;
}

// "$1".. are cgroup.procs files up to "--", then the command.
const WRAPPER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; ';

export class ResourceLimiter {
  private readonly logger: Logger;
  private readonly mount: string;

  constructor(private readonly options: ResourceLimiterOptions) {
    this.logger = options.logger.child({ component: 'limits' });
    this.mount = options.cgroupMount ?? '/sys/fs/cgroup';
  }

  /** Create/refresh the service's cgroups; `id` is unique per agent data dir and service. */
  async setup(id: string, request: ResourceRequest): Promise<LimitSetup> {
    const notes: string[] = [];
    const enforced: EnforcedLimits = { memory: 'none', cpu: 'none', nofile: null, notes };
    const cgroupDirs: string[] = [];
    const rlimits: string[] = [];
    if (this.options.enabled === false) {
      notes.push('limits disabled by configuration');
      return { enforced, cgroupDirs, prefix: [] };
    }

    const memoryBytes = request.memoryMb * 1024 * 1024;
    const memoryDir = await this.makeCgroup('memory', id, notes);
    if (memoryDir !== null) {
      try {
        await writeFile(join(memoryDir, 'memory.limit_in_bytes'), String(memoryBytes));
        // With swap accounting, memsw caps memory+swap; without it, swapping would dodge the limit.
        const memsw = join(memoryDir, 'memory.memsw.limit_in_bytes');
        if (existsSync(memsw)) await writeFile(memsw, String(memoryBytes)).catch(() => undefined);
        enforced.memory = 'cgroup-v1';
        cgroupDirs.push(memoryDir);
      } catch (err) {
        notes.push(`memory cgroup not writable: ${(err as Error).message}`);
      }
    }
    if (enforced.memory === 'none') {
      rlimits.push(`ulimit -v ${request.memoryMb * 1024}`);
      enforced.memory = 'rlimit-as';
      notes.push('memory: RLIMIT_AS (address space, not resident memory) instead of a cgroup');
    }

    const cpuDir = await this.makeCgroup('cpu', id, notes);
    if (cpuDir !== null) {
      try {
        const period = Number((await readFile(join(cpuDir, 'cpu.cfs_period_us'), 'utf8')).trim()) || 100_000;
        const quota = Math.max(1000, Math.round(request.cpus * period));
        await writeFile(join(cpuDir, 'cpu.cfs_quota_us'), String(quota));
        enforced.cpu = 'cgroup-v1-cfs';
        cgroupDirs.push(cpuDir);
      } catch (err) {
        notes.push(`cpu cgroup not writable: ${(err as Error).message}`);
      }
    }

    const hard = hardNofileLimit();
    const nofile = Math.min(this.options.nofile ?? 65536, hard ?? Number.POSITIVE_INFINITY);
    if (Number.isFinite(nofile) && nofile > 0) {
      rlimits.push(`ulimit -n ${nofile}`);
      enforced.nofile = nofile;
    }

    const script = `${WRAPPER}${rlimits.map((line) => `${line} || exit 126; `).join('')}exec "$@"`;
    const prefix = [
      '/bin/sh',
      '-c',
      script,
      'silo-limits',
      ...cgroupDirs.map((d) => join(d, 'cgroup.procs')),
      '--',
    ];
    this.logger.debug({ id, enforced }, 'resource limits prepared');
    return { enforced, cgroupDirs, prefix };
  }

  /** Kill whatever still runs in the service's cgroups, then remove them. */
  async release(setup: LimitSetup): Promise<void> {
    await killCgroupMembers(setup.cgroupDirs);
    for (const dir of setup.cgroupDirs) {
      await rmdir(dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') this.logger.warn({ dir, err: err.message }, 'cgroup not removed');
      });
    }
  }

  private async makeCgroup(controller: string, id: string, notes: string[]): Promise<string | null> {
    const hierarchy = join(this.mount, controller);
    if (existsSync(join(this.mount, 'cgroup.controllers'))) {
      if (!notes.some((n) => n.startsWith('cgroup v2')))
        notes.push('cgroup v2 host: cgroup limits not implemented');
      return null;
    }
    if (!existsSync(join(hierarchy, 'cgroup.procs'))) {
      notes.push(`${controller}: no cgroup v1 hierarchy at ${hierarchy}`);
      return null;
    }
    const parent = join(hierarchy, ownCgroupPath(controller, this.options.procSelfCgroup));
    const base = existsSync(parent) ? parent : hierarchy;
    const dir = join(base, `silo-${id}`);
    try {
      await mkdir(dir, { recursive: true });
      await access(join(dir, 'cgroup.procs'));
      return dir;
    } catch (err) {
      notes.push(`${controller}: cannot create cgroup (${(err as Error).message})`);
      return null;
    }
  }
}

/** SIGKILL every process in the cgroups and wait (bounded) until they are empty. */
export async function killCgroupMembers(dirs: readonly string[], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let remaining = 0;
    for (const dir of dirs) {
      for (const pid of readCgroupProcs(dir)) {
        remaining++;
        killQuietly(pid, 'SIGKILL');
      }
    }
    if (remaining === 0 || Date.now() >= deadline) return;
    await sleep(20);
  }
}

export function readCgroupProcs(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((line) => line.length > 0)
      .map(Number)
      .filter((pid) => Number.isInteger(pid) && pid > 0);
  } catch {
    return [];
  }
}

/** The agent's own path in a v1 hierarchy ("/" when unknown), from /proc/self/cgroup. */
function ownCgroupPath(controller: string, file = '/proc/self/cgroup'): string {
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const [, controllers, path] = line.split(':');
      if (controllers?.split(',').includes(controller) && path !== undefined) return path;
    }
  } catch {
    // fall through
  }
  return '/';
}

/** The agent's hard RLIMIT_NOFILE (a child cannot raise above it unless privileged), or null. */
function hardNofileLimit(): number | null {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const hard = line?.trim().split(/\s+/)[4];
    if (hard === undefined) return null;
    return hard === 'unlimited' ? Number.POSITIVE_INFINITY : Number(hard);
  } catch {
    return null;
  }
}
