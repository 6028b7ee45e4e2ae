import { execFile } from 'node:child_process';
import { access, constants as fsConstants, stat } from 'node:fs/promises';
import { delimiter, join, posix } from 'node:path';
import { promisify } from 'node:util';
import type { ServiceDirs } from './scratch.js';

/**
 * How a service process is launched: inside bubblewrap (read-only host root,
 * its four directories writable under /run/silo, own pid/ipc/uts/cgroup
 * namespaces, dropped to uid/gid 65534 with no capabilities) when bwrap is
 * installed and the agent is root; as a plain child process otherwise. The
 * choice is reported in the service status (`sandbox`).
 */

export type SandboxKind = 'bubblewrap' | 'none';
export type SandboxPreference = 'auto' | 'bubblewrap' | 'none';

/** Where the service sees things inside the sandbox. */
export const SANDBOX_PATHS = {
  runtime: '/run/silo/runtime',
  state: '/run/silo/state',
  cache: '/run/silo/cache',
  logs: '/run/silo/logs',
  image: '/run/silo/image',
} as const;

/** The unprivileged user (nobody/nogroup) services run as inside the sandbox. */
export const SANDBOX_UID = 65534;
export const SANDBOX_GID = 65534;

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface SandboxChoice {
  kind: SandboxKind;
  /** Why this kind (shown in logs and in the status reason when bubblewrap was wanted). */
  detail: string;
  bwrapPath: string | null;
  setprivPath: string | null;
}

/** Pick the sandbox for this host; 'bubblewrap' that cannot work is an error, not a silent downgrade. */
export async function detectSandbox(preference: SandboxPreference): Promise<SandboxChoice> {
  if (preference === 'none')
    return { kind: 'none', detail: 'sandbox disabled', bwrapPath: null, setprivPath: null };
  const problem = (detail: string): SandboxChoice => {
    if (preference === 'bubblewrap') throw new Error(`bubblewrap sandbox unavailable: ${detail}`);
    return { kind: 'none', detail, bwrapPath: null, setprivPath: null };
  };
  if (process.getuid?.() !== 0) return problem('the agent is not root');
  const bwrapPath = await findExecutable('bwrap');
  if (bwrapPath === null) return problem('bwrap not found in PATH (apt-get install bubblewrap)');
  const setprivPath = await findExecutable('setpriv');
  if (setprivPath === null) return problem('setpriv not found in PATH (util-linux)');
  // Some kernels/containers forbid the namespaces bwrap needs: probe once.
  try {
    await promisify(execFile)(
      bwrapPath,
      [
        '--ro-bind',
        '/',
        '/',
        '--unshare-pid',
        '--unshare-ipc',
        '--unshare-uts',
        '--die-with-parent',
        '--',
        'true',
      ],
      { timeout: 10_000 },
    );
  } catch (err) {
    return problem(`bwrap probe failed: ${(err as Error).message.split('\n')[0]}`);
  }
  return { kind: 'bubblewrap', detail: `${bwrapPath} as root`, bwrapPath, setprivPath };
}

async function findExecutable(name: string): Promise<string | null> {
  for (const dir of (process.env['PATH'] ?? DEFAULT_PATH).split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return null;
}

/** Normalized path of a program inside the image; throws when it would leave the image. */
export function programInImage(program: string): string {
  const normalized = posix.normalize(`/${program}`);
  if (normalized.split('/').includes('..'))
    throw new Error(`program path ${JSON.stringify(program)} leaves the image`);
  return normalized.slice(1);
}

/** Checks that the program exists in the unpacked image and is executable. */
export async function checkProgram(rootfs: string, program: string): Promise<string | null> {
  const relative = programInImage(program);
  const host = join(rootfs, relative);
  const info = await stat(host).catch(() => null);
  if (info === null) return `${program}: not found in the image`;
  if (!info.isFile()) return `${program}: not a regular file in the image`;
  if ((info.mode & 0o111) === 0)
    return `${program}: not executable in the image (mode ${(info.mode & 0o777).toString(8)})`;
  return null;
}

export interface LaunchRequest {
  choice: SandboxChoice;
  dirs: ServiceDirs;
  rootfs: string;
  /** Program path inside the image. */
  program: string;
  args: readonly string[];
  /** The service's own variables (manifest env); the directory variables are added here. */
  env: Readonly<Record<string, string>>;
  network: 'overlay' | 'host' | 'none';
  /** Descriptors the child keeps (the readiness fd), so the status fd avoids them. */
  keepFds?: readonly number[];
  /**
   * Which directories the process gets. The service: all four, writable. The
   * generator: RUNTIME writable and STATE read-only.
   */
  mounts?: 'service' | 'generator';
  /** argv prefix applying resource limits (limits.ts), or none. */
  limitPrefix?: readonly string[];
  /**
   * Bubblewrap only: the service's own network namespace (`network =
   * "overlay"` with a service address, src/overlay/service-netns.ts),
   * entered with nsenter before bwrap starts.
   */
  netnsPath?: string;
  /** Bubblewrap only: a file bound read-only over /etc/resolv.conf (service DNS names). */
  resolvConfPath?: string;
}

export interface LaunchPlan {
  kind: SandboxKind;
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** fd on which bwrap reports `{"child-pid": N}` and `{"exit-code": N}` (bubblewrap only). */
  statusFd: number | null;
}

export function buildLaunch(request: LaunchRequest): LaunchPlan {
  const { choice, dirs, rootfs, args, network } = request;
  const program = programInImage(request.program);
  const mounts = request.mounts ?? 'service';
  const prefix = request.limitPrefix ?? [];

  if (choice.kind === 'none') {
    const env = serviceEnv(request.env, {
      runtime: dirs.runtime,
      state: dirs.state,
      cache: dirs.cache,
      logs: dirs.logs,
    });
    if (mounts === 'generator') {
      delete env['CACHE_DIRECTORY'];
      delete env['LOGS_DIRECTORY'];
    }
    const argv = [...prefix, join(rootfs, program), ...args];
    return { kind: 'none', file: argv[0]!, args: argv.slice(1), env, cwd: dirs.state, statusFd: null };
  }

  const statusFd = firstFreeFd(request.keepFds ?? []);
  const bwrap: string[] = [
    choice.bwrapPath!,
    '--ro-bind',
    '/',
    '/',
    '--dev',
    '/dev',
    '--proc',
    '/proc',
    '--tmpfs',
    '/tmp',
    // Root is read-only, so every mount target must live under a tmpfs.
    '--tmpfs',
    '/run',
    '--perms',
    '0755',
    '--dir',
    '/run/silo',
    '--bind',
    dirs.runtime,
    SANDBOX_PATHS.runtime,
  ];
  if (mounts === 'service') {
    bwrap.push('--bind', dirs.state, SANDBOX_PATHS.state);
    bwrap.push('--bind', dirs.cache, SANDBOX_PATHS.cache);
    bwrap.push('--bind', dirs.logs, SANDBOX_PATHS.logs);
  } else {
    bwrap.push('--ro-bind', dirs.state, SANDBOX_PATHS.state);
  }
  bwrap.push('--ro-bind', rootfs, SANDBOX_PATHS.image);
  if (request.resolvConfPath !== undefined)
    bwrap.push('--ro-bind', request.resolvConfPath, '/etc/resolv.conf');
  bwrap.push('--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup');
  if (network === 'none') bwrap.push('--unshare-net');
  bwrap.push('--as-pid-1', '--die-with-parent', '--new-session', '--clearenv');
  const env = serviceEnv(request.env, SANDBOX_PATHS);
  if (mounts === 'generator') {
    delete env['CACHE_DIRECTORY'];
    delete env['LOGS_DIRECTORY'];
  }
  for (const [key, value] of Object.entries(env)) bwrap.push('--setenv', key, value);
  bwrap.push('--chdir', SANDBOX_PATHS.state, '--json-status-fd', String(statusFd));
  bwrap.push(
    '--',
    choice.setprivPath!,
    `--reuid=${SANDBOX_UID}`,
    `--regid=${SANDBOX_GID}`,
    '--clear-groups',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    '--',
    posix.join(SANDBOX_PATHS.image, program),
    ...args,
  );
  const netns = request.netnsPath === undefined ? [] : ['nsenter', `--net=${request.netnsPath}`, '--'];
  const argv = [...prefix, ...netns, ...bwrap];
  // bwrap gets a minimal environment of its own; the service's comes from --setenv.
  return {
    kind: 'bubblewrap',
    file: argv[0]!,
    args: argv.slice(1),
    env: { PATH: DEFAULT_PATH },
    cwd: '/',
    statusFd,
  };
}

function serviceEnv(
  own: Readonly<Record<string, string>>,
  paths: { runtime: string; state: string; cache: string; logs: string },
): Record<string, string> {
  return {
    PATH: DEFAULT_PATH,
    HOME: paths.state,
    LANG: 'C.UTF-8',
    ...own,
    RUNTIME_DIRECTORY: paths.runtime,
    STATE_DIRECTORY: paths.state,
    CACHE_DIRECTORY: paths.cache,
    LOGS_DIRECTORY: paths.logs,
  };
}

function firstFreeFd(taken: readonly number[]): number {
  let fd = 3;
  while (taken.includes(fd)) fd++;
  return fd;
}

export type BwrapStatus = { childPid: number } | { exitCode: number };

/** Parse one line of bwrap's --json-status-fd output; null for lines of no interest. */
export function parseBwrapStatusLine(line: string): BwrapStatus | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object') return null;
  const record = value as Record<string, unknown>;
  const childPid = record['child-pid'];
  if (typeof childPid === 'number' && Number.isInteger(childPid) && childPid > 0) return { childPid };
  const exitCode = record['exit-code'];
  if (typeof exitCode === 'number' && Number.isInteger(exitCode)) return { exitCode };
  return null;
}
