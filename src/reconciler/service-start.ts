import { join } from 'node:path';
import type { Logger } from 'pino';
import type { WorkloadSpec } from '../state/schemas.js';
import { type EncryptedScratch, stateCipherDir } from './encrypted-scratch.js';
import { type RuntimeConfig, runGenerator } from './generator.js';
import { isInitialized } from './gocryptfs.js';
import type { ImageStore } from './image-store.js';
import type { LimitSetup } from './limits.js';
import type { RuntimeEntry } from './runtime-types.js';
import { buildLaunch, checkProgram, SANDBOX_PATHS, type SandboxChoice } from './sandbox.js';
import { type Owner, prepareDirs, type ServiceDirs, serviceDirs } from './scratch.js';
import type { ServiceAddressing } from './service-addressing.js';
import { Supervisor, type SupervisorTuning } from './supervisor.js';

/**
 * The steps of starting one service, in the order the runtime takes them
 * (service-runtime.ts `start`): the image checked and unpacked, the
 * scratch directories and encrypted STATE made ready, then a supervisor
 * whose `prepare` runs before every (re)start of the process.
 */

/** A service's record before its first step: pending, nothing set up. */
export function newEntry(dataDir: string, spec: WorkloadSpec): RuntimeEntry {
  return {
    spec,
    dirs: serviceDirs(dataDir, spec.name),
    status: {
      phase: 'pending',
      since: Date.now(),
      revision: spec.revision,
      restarts: 0,
      lastExit: null,
      reason: null,
      sandbox: null,
      scratchUsedMb: null,
      snapshot: null,
    },
    supervisor: null,
    limits: null,
    quota: null,
    stoppedByRequest: false,
    retry: false,
    encrypted: false,
    address: undefined,
  };
}

export type ImageCheck =
  | { ok: true; rootfs: string; choice: SandboxChoice }
  /** `retry`: the image may still come (missing, or corrupt and removed): report pulling, try again. */
  | { ok: false; retry: boolean; reason: string };

/**
 * The image's digest recomputed and its CA signature checked, the image
 * unpacked, the programs the spec names found in it, the sandbox chosen.
 */
export async function checkImage(
  imageStore: ImageStore,
  spec: WorkloadSpec,
  sandboxChoice: () => Promise<SandboxChoice>,
): Promise<ImageCheck> {
  const verified = await imageStore.verify(spec.imageDigest, spec.imageSignature);
  if (!verified.ok) {
    // A missing or corrupt (now removed) tar can still be fetched.
    const retry = verified.code === 'missing' || verified.code === 'tampered';
    return { ok: false, retry, reason: verified.reason };
  }
  try {
    const rootfs = await imageStore.unpack(spec.imageDigest);
    for (const program of [spec.command, spec.generator]) {
      if (program === undefined) continue;
      const problem = await checkProgram(rootfs, program);
      if (problem !== null) throw new Error(problem);
    }
    return { ok: true, rootfs, choice: await sandboxChoice() };
  } catch (err) {
    return { ok: false, retry: false, reason: (err as Error).message };
  }
}

/**
 * Persistent workloads get encrypted STATE when the runtime has encrypted
 * scratch; where it cannot work the start fails with the reason instead of
 * running unencrypted.
 */
export async function mountEncryptedState(
  encrypted: EncryptedScratch | undefined,
  entry: RuntimeEntry,
  owner: Owner | undefined,
): Promise<void> {
  if (encrypted === undefined) {
    // A checkpoint from an encrypted node restored here: starting on an empty plain STATE would lose it quietly.
    if (await isInitialized(stateCipherDir(entry.dirs))) {
      throw new Error(
        `STATE is encrypted (${stateCipherDir(entry.dirs)}) but this node holds no scratch keys (docs/security.md, "Encrypted scratch")`,
      );
    }
    return;
  }
  if (entry.spec.scratchClass !== 'persistent' || entry.spec.encrypted === false) return;
  await encrypted.mount(entry.spec.name, entry.dirs, join(entry.dirs.supervise, 'gocryptfs.log'));
  entry.encrypted = true;
  // The mount's root belongs to root until handed over to the service user.
  await prepareDirs(entry.dirs, owner);
}

export interface SuperviseOptions {
  entry: RuntimeEntry;
  rootfs: string;
  choice: SandboxChoice;
  owner: Owner | undefined;
  limits: LimitSetup;
  nodeId: string | null;
  tuning: Partial<SupervisorTuning>;
  addressing: ServiceAddressing;
  logger: Logger;
}

/**
 * The supervisor of one run of the entry's spec. Before every start its
 * `prepare` makes a fresh RUNTIME, runs the generator, makes the service's
 * network namespace (service-addressing.ts) and builds the launch plan.
 */
export function superviseService(options: SuperviseOptions): Supervisor {
  const { entry, rootfs, choice, owner, limits, addressing } = options;
  const { spec, dirs } = entry;
  return new Supervisor({
    name: spec.name,
    revision: spec.revision,
    sandbox: choice.kind,
    restart: spec.restart,
    stopSignal: spec.stopSignal,
    stopTimeoutMs: spec.stopTimeoutMs,
    startTimeoutMs: spec.startTimeoutMs,
    ...(spec.notificationFd === undefined ? {} : { notificationFd: spec.notificationFd }),
    logsDir: dirs.logs,
    superviseDir: dirs.supervise,
    cgroupDirs: limits.cgroupDirs,
    tuning: options.tuning,
    logger: options.logger,
    prepare: async (log) => {
      await prepareDirs(dirs, owner);
      if (spec.generator !== undefined)
        await runSpecGenerator(spec, choice, dirs, rootfs, options.nodeId, log);
      const netnsPath = await addressing.namespaceFor(entry, choice);
      const resolvConfPath = netnsPath === undefined ? undefined : await addressing.resolvConf(dirs);
      return buildLaunch({
        choice,
        dirs,
        rootfs,
        program: spec.command,
        args: spec.args,
        env: spec.env,
        network: spec.network,
        keepFds: spec.notificationFd === undefined ? [] : [spec.notificationFd],
        limitPrefix: limits.prefix,
        ...(netnsPath !== undefined ? { netnsPath } : {}),
        ...(resolvConfPath !== undefined ? { resolvConfPath } : {}),
      });
    },
  });
}

/** The spec's generator, run in the service's sandbox with the runtime configuration it is owed. */
async function runSpecGenerator(
  spec: WorkloadSpec,
  choice: SandboxChoice,
  dirs: ServiceDirs,
  rootfs: string,
  nodeId: string | null,
  log: (chunk: Buffer) => void,
): Promise<void> {
  const seen = choice.kind === 'bubblewrap' ? SANDBOX_PATHS : dirs;
  const config: RuntimeConfig = {
    service: spec.name,
    revision: spec.revision,
    nodeId,
    image: { name: spec.image, digest: spec.imageDigest },
    sandbox: choice.kind,
    directories: { runtime: seen.runtime, state: seen.state, cache: seen.cache, logs: seen.logs },
    env: { ...spec.env },
    args: [...spec.args],
    network: spec.network,
    resources: { cpus: spec.cpus, memoryMb: spec.memoryMb, scratchMb: spec.scratchMb },
  };
  const plan = buildLaunch({
    choice,
    dirs,
    rootfs,
    program: spec.generator!,
    args: [],
    env: spec.env,
    network: spec.network,
    mounts: 'generator',
  });
  await runGenerator(plan, config, spec.startTimeoutMs, log);
}
