import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Counter, Gauge, Registry } from 'prom-client';
import { z } from 'zod';
import {
  type ObservedStatus,
  type Phase,
  PhaseSchema,
  type WorkloadSpec,
  WorkloadSpecSchema,
} from '../state/schemas.js';
import { Listeners } from '../util/listeners.js';
import { counterIn, gaugeIn } from '../util/metrics.js';
import { type EncryptedScratch, stateCipherDir } from './encrypted-scratch.js';
import { type RuntimeConfig, runGenerator } from './generator.js';
import { isInitialized } from './gocryptfs.js';
import type { ImageStore } from './image-store.js';
import {
  type EnforcedLimits,
  type LimitSetup,
  ResourceLimiter,
  type ResourceLimiterOptions,
} from './limits.js';
import { type ReapedService, reapOrphans } from './orphans.js';
import {
  buildLaunch,
  checkProgram,
  detectSandbox,
  SANDBOX_GID,
  SANDBOX_PATHS,
  SANDBOX_UID,
  type SandboxChoice,
  type SandboxPreference,
} from './sandbox.js';
import {
  type Owner,
  prepareDirs,
  purgeCache,
  type QuotaEvent,
  removeRuntime,
  ScratchQuotaMonitor,
  type ServiceDirs,
  serviceDirs,
} from './scratch.js';
import { Supervisor, type SupervisorTuning } from './supervisor.js';

/**
 * The single-node service runtime: what the reconcile loop calls,
 * level-triggered. `ensureRunning(spec)` is idempotent per spec revision
 * (a new revision restarts the service; a service that failed stays failed
 * until its revision changes); `stop`, `status`, `list`, `stopAll`.
 *
 * Before anything runs: the image's digest is recomputed and its CA signature
 * checked, the image is unpacked, the program is checked to exist, the
 * scratch directories are prepared and the resource limits set up.
 */

export interface ServiceStatus extends ObservedStatus {
  name: string;
  /** The service's main pid while it runs (inside bwrap: the service, not bwrap). */
  pid: number | null;
  /** Resource limits actually enforced for the current run, or null before a start. */
  limits: EnforcedLimits | null;
}

export type RuntimeEvent =
  | { type: 'scratch-over-quota'; name: string; usedBytes: number; limitBytes: number }
  | { type: 'scratch-back-under-quota'; name: string; usedBytes: number; limitBytes: number }
  | { type: 'scratch-quota-exceeded'; name: string; usedBytes: number; limitBytes: number; reason: string };

export interface QuotaOptions {
  intervalMs: number;
  graceMs: number;
  maxEntries: number;
}

export interface ServiceRuntimeOptions {
  dataDir: string;
  imageStore: ImageStore;
  logger: Logger;
  registry: Registry;
  /** 'auto' (default): bubblewrap when usable, plain processes otherwise. */
  sandbox?: SandboxPreference;
  nodeId?: string | null;
  tuning?: Partial<SupervisorTuning>;
  quota?: Partial<QuotaOptions>;
  limits?: Omit<ResourceLimiterOptions, 'logger'>;
  /**
   * Encrypted STATE for persistent workloads (docs/security.md, "Encrypted
   * scratch"). Without it STATE is a plain directory.
   */
  encryptedScratch?: EncryptedScratch;
  /**
   * Service addresses (docs/services.md, "Service addresses"): a sandboxed
   * `network = "overlay"` service runs in its own network namespace with
   * its address. Absent: overlay services share the host's network.
   */
  serviceNetwork?: ServiceNetworkAccess;
}

/** What the runtime needs to give a service its own address. */
export interface ServiceNetworkAccess {
  /** The workload's service address in the converged workloads document, or undefined while it has none. */
  addressOf(workload: string): string | undefined;
  /** Creates the namespace with the address; returns its path. */
  setup(workload: string, address: string, ports: readonly number[]): Promise<string>;
  teardown(workload: string): Promise<void>;
  /**
   * Contents of the service's /etc/resolv.conf (the agent's service DNS
   * first), or undefined to leave the host's.
   */
  resolvConf?(): Promise<string | undefined>;
  /** Calls `listener` whenever the addresses may have changed; returns the unsubscribe. */
  onChange?(listener: () => void): () => void;
}

/** Distinguishes the services of agents sharing one kernel: a hash of the data directory. */
export function runtimeInstanceId(dataDir: string): string {
  return createHash('sha256').update(dataDir).digest('hex').slice(0, 8);
}

const DEFAULT_QUOTA: QuotaOptions = { intervalMs: 10_000, graceMs: 60_000, maxEntries: 100_000 };

interface Entry {
  spec: WorkloadSpec;
  dirs: ServiceDirs;
  status: ObservedStatus;
  supervisor: Supervisor | null;
  limits: LimitSetup | null;
  quota: ScratchQuotaMonitor | null;
  /** Stopped by `stop()`: the next ensureRunning starts it again even at the same revision. */
  stoppedByRequest: boolean;
  /** Waiting for something that may appear (the image): ensureRunning retries. */
  retry: boolean;
  /** STATE is mounted through encrypted scratch for this run (unmounted at teardown). */
  encrypted: boolean;
  /** The service address its current namespace was made with; undefined without one. */
  address: string | undefined;
}

export class ServiceRuntime {
  private readonly logger: Logger;
  private readonly entries = new Map<string, Entry>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly statusListeners = new Listeners<[ServiceStatus]>((err) =>
    this.logger.error({ err: (err as Error).message }, 'status listener threw'),
  );
  private readonly eventListeners = new Listeners<[RuntimeEvent]>((err) =>
    this.logger.error({ err: (err as Error).message }, 'event listener threw'),
  );
  private readonly limiter: ResourceLimiter;
  private readonly quota: QuotaOptions;
  private readonly instanceId: string;
  private sandbox: Promise<SandboxChoice> | null = null;
  private initialized: Promise<ReapedService[]> | null = null;
  private readonly exits: Counter<'service'>;
  private readonly restarts: Counter<'service'>;
  private readonly scratchBytes: Gauge<'service'>;

  constructor(private readonly options: ServiceRuntimeOptions) {
    this.logger = options.logger.child({ component: 'service-runtime' });
    this.limiter = new ResourceLimiter({ ...options.limits, logger: options.logger });
    this.quota = { ...DEFAULT_QUOTA, ...options.quota };
    // cgroup names must not collide between agents sharing a host (or a test process).
    this.instanceId = runtimeInstanceId(options.dataDir);
    // For the runtime's lifetime, which is the agent's (the reconciler is not restarted).
    options.serviceNetwork?.onChange?.(() => this.readdressAll());
    this.exits = counterIn(options.registry, {
      name: 'silo_service_exits_total',
      help: 'Service process exits, by service',
      labelNames: ['service'],
    });
    this.restarts = counterIn(options.registry, {
      name: 'silo_service_restarts_total',
      help: 'Service restarts by the supervisor, by service',
      labelNames: ['service'],
    });
    this.scratchBytes = gaugeIn(options.registry, {
      name: 'silo_service_scratch_used_bytes',
      help: 'Scratch usage (RUNTIME+STATE+CACHE) by service',
      labelNames: ['service'],
    });
    // Computed at scrape time from the first runtime made on this registry (one per agent).
    const entries = this.entries;
    gaugeIn(options.registry, {
      name: 'silo_services',
      help: 'Services supervised by this runtime, by phase',
      labelNames: ['phase'],
      collect() {
        for (const phase of PhaseSchema.options) this.set({ phase }, 0);
        for (const entry of entries.values()) this.inc({ phase: entry.status.phase });
      },
    });
  }

  /** Reap services a previous agent left running (once; ensureRunning does it implicitly). */
  init(): Promise<ReapedService[]> {
    this.initialized ??= reapOrphans(this.options.dataDir, this.logger).then(async (reaped) => {
      if (reaped.some((r) => r.killed))
        this.logger.warn({ reaped }, 'reaped services left by a previous agent');
      // After the reaping: a killed agent's gocryptfs mounts would block the next mount.
      const stale = (await this.options.encryptedScratch?.cleanStale(this.options.dataDir)) ?? [];
      if (stale.length > 0)
        this.logger.warn({ stale }, 'removed encrypted scratch mounts left by a previous agent');
      return reaped;
    });
    return this.initialized;
  }

  onStatus(listener: (status: ServiceStatus) => void): () => void {
    return this.statusListeners.add(listener);
  }

  onEvent(listener: (event: RuntimeEvent) => void): () => void {
    return this.eventListeners.add(listener);
  }

  /** Make `spec` run here (idempotent per revision). Throws only for an invalid spec. */
  async ensureRunning(input: WorkloadSpec): Promise<ServiceStatus> {
    const parsed = WorkloadSpecSchema.safeParse(input);
    if (!parsed.success) throw new Error(`invalid workload spec: ${z.prettifyError(parsed.error)}`);
    const spec = parsed.data;
    await this.init();
    return this.withLock(spec.name, async () => {
      const entry = this.entries.get(spec.name);
      if (entry !== undefined) {
        if (entry.spec.revision === spec.revision && !entry.stoppedByRequest && !entry.retry)
          return this.view(entry);
        if (entry.spec.revision !== spec.revision) {
          await this.teardown(entry, `spec revision ${entry.spec.revision} → ${spec.revision}`, 'released');
        }
      }
      return this.start(spec);
    });
  }

  /** Stop a service (stop signal, timeout, SIGKILL); RUNTIME removed, STATE/CACHE/LOGS kept. */
  async stop(name: string, reason = 'stopped'): Promise<ServiceStatus | null> {
    return this.withLock(name, async () => {
      const entry = this.entries.get(name);
      if (entry === undefined) return null;
      await this.teardown(entry, reason, 'released');
      entry.stoppedByRequest = true;
      entry.retry = false;
      return this.view(entry);
    });
  }

  async stopAll(reason = 'agent stopping'): Promise<void> {
    await Promise.all([...this.entries.keys()].map((name) => this.stop(name, reason)));
  }

  status(name: string): ServiceStatus | null {
    const entry = this.entries.get(name);
    return entry === undefined ? null : this.view(entry);
  }

  list(): ServiceStatus[] {
    return [...this.entries.values()].map((entry) => this.view(entry));
  }

  /** Empty a stopped service's CACHE_DIRECTORY. */
  async purgeCache(name: string): Promise<void> {
    await this.withLock(name, async () => {
      const entry = this.entries.get(name);
      if (entry?.supervisor && !entry.supervisor.isFinished()) {
        throw new Error(`${name}: cache can only be purged while the service is stopped`);
      }
      await purgeCache(entry?.dirs ?? serviceDirs(this.options.dataDir, name));
    });
  }

  /** The sandbox this runtime uses (detected once). */
  sandboxChoice(): Promise<SandboxChoice> {
    this.sandbox ??= detectSandbox(this.options.sandbox ?? 'auto');
    return this.sandbox;
  }

  // ---- start / stop -----------------------------------------------------------

  private async start(spec: WorkloadSpec): Promise<ServiceStatus> {
    const dirs = serviceDirs(this.options.dataDir, spec.name);
    const entry: Entry = {
      spec,
      dirs,
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
    this.entries.set(spec.name, entry);
    const { imageStore } = this.options;

    const verified = await imageStore.verify(spec.imageDigest, spec.imageSignature);
    if (!verified.ok) {
      // A missing or corrupt (now removed) tar can still be fetched: report pulling, retry next time.
      const retry = verified.code === 'missing' || verified.code === 'tampered';
      entry.retry = retry;
      this.setStatus(entry, { phase: retry ? 'pulling' : 'failed', reason: verified.reason });
      return this.view(entry);
    }

    let choice: SandboxChoice;
    let rootfs: string;
    try {
      rootfs = await imageStore.unpack(spec.imageDigest);
      for (const program of [spec.command, spec.generator]) {
        if (program === undefined) continue;
        const problem = await checkProgram(rootfs, program);
        if (problem !== null) throw new Error(problem);
      }
      choice = await this.sandboxChoice();
    } catch (err) {
      this.setStatus(entry, { phase: 'failed', reason: (err as Error).message });
      return this.view(entry);
    }
    const owner: Owner | undefined =
      choice.kind === 'bubblewrap' ? { uid: SANDBOX_UID, gid: SANDBOX_GID } : undefined;
    let limits: LimitSetup;
    try {
      await prepareDirs(dirs, owner);
      await this.mountEncrypted(entry, owner);
      limits = await this.limiter.setup(`${this.instanceId}-${spec.name}`, {
        cpus: spec.cpus,
        memoryMb: spec.memoryMb,
      });
    } catch (err) {
      this.setStatus(entry, { phase: 'failed', reason: `cannot prepare: ${(err as Error).message}` });
      return this.view(entry);
    }
    entry.limits = limits;

    const supervisor = new Supervisor({
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
      tuning: this.options.tuning ?? {},
      logger: this.options.logger,
      prepare: async (log) => {
        await prepareDirs(dirs, owner);
        if (spec.generator !== undefined) await this.runGenerator(spec, choice, dirs, rootfs, log);
        const netnsPath = await this.serviceNetns(entry, choice);
        const resolvConfPath = netnsPath === undefined ? undefined : await this.resolvConf(dirs);
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
    entry.supervisor = supervisor;
    supervisor.onStatus((status) => this.onSupervisorStatus(entry, supervisor, status));
    entry.quota = this.quotaMonitor(entry);
    this.logger.info(
      { service: spec.name, revision: spec.revision, sandbox: choice.kind, limits: limits.enforced },
      'starting service',
    );
    supervisor.start();
    entry.quota.start();
    return this.view(entry);
  }

  private async runGenerator(
    spec: WorkloadSpec,
    choice: SandboxChoice,
    dirs: ServiceDirs,
    rootfs: string,
    log: (chunk: Buffer) => void,
  ): Promise<void> {
    const seen = choice.kind === 'bubblewrap' ? SANDBOX_PATHS : dirs;
    const config: RuntimeConfig = {
      service: spec.name,
      revision: spec.revision,
      nodeId: this.options.nodeId ?? null,
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

  /**
   * A sandboxed overlay service's own namespace with its address, made anew
   * before every start; undefined when it shares the host's network. No
   * address yet (a claim lost to an older one and not yet repaired) fails
   * this start, and the restart policy tries again.
   */
  private async serviceNetns(entry: Entry, choice: SandboxChoice): Promise<string | undefined> {
    const { spec } = entry;
    const network = this.options.serviceNetwork;
    if (network === undefined || spec.network !== 'overlay' || choice.kind !== 'bubblewrap') return undefined;
    entry.address = undefined;
    const address = network.addressOf(spec.name);
    if (address === undefined) throw new Error('no service address assigned yet');
    const path = await network.setup(spec.name, address, spec.ports ?? []);
    entry.address = address;
    return path;
  }

  /**
   * Restarts every service whose claim lost after it started (docs/services.md,
   * "When an address is used"): two nodes that applied at once may each have
   * started it with an address the merged document gives to another
   * workload. It must not keep answering there, so it stops and starts again
   * with its new address; while it has none, the start fails and the restart
   * policy retries.
   */
  private readdressAll(): void {
    const network = this.options.serviceNetwork;
    if (network === undefined) return;
    for (const [name, entry] of this.entries) {
      if (entry.address === undefined || network.addressOf(name) === entry.address) continue;
      void this.withLock(name, async () => {
        const current = this.entries.get(name);
        if (current === undefined || current.stoppedByRequest || current.address === undefined) return;
        const now = network.addressOf(name);
        if (now === current.address) return;
        const reason = `service address ${current.address} → ${now ?? 'none'}: restarting`;
        this.logger.warn({ service: name, from: current.address, to: now ?? null }, reason);
        await this.teardown(current, reason, 'starting');
        await this.start(current.spec);
      }).catch((err: unknown) =>
        this.logger.error({ err, service: name }, 'restarting a service with its new address failed'),
      );
    }
  }

  /** Writes the service's resolv.conf next to its supervise records; its path, or undefined for none. */
  private async resolvConf(dirs: ServiceDirs): Promise<string | undefined> {
    const contents = await this.options.serviceNetwork?.resolvConf?.();
    if (contents === undefined) return undefined;
    const path = join(dirs.supervise, 'resolv.conf');
    await writeFile(path, contents, { mode: 0o644 });
    return path;
  }

  private async teardown(entry: Entry, reason: string, phase: Phase): Promise<void> {
    entry.address = undefined;
    entry.quota?.stop();
    entry.quota = null;
    if (entry.supervisor !== null) await entry.supervisor.stop(reason, phase);
    else this.setStatus(entry, { phase, reason });
    if (this.options.serviceNetwork !== undefined && entry.spec.network === 'overlay') {
      // The address leaves this node with the service: nothing here answers for it any more.
      await this.options.serviceNetwork
        .teardown(entry.spec.name)
        .catch((err: unknown) =>
          this.logger.warn({ err, service: entry.spec.name }, 'removing the service namespace failed'),
        );
    }
    await removeRuntime(entry.dirs);
    if (entry.encrypted) {
      // Nothing of the plaintext view outlives the run.
      await this.options.encryptedScratch?.unmount(entry.dirs);
      entry.encrypted = false;
    }
    if (entry.limits !== null) await this.limiter.release(entry.limits);
    entry.limits = null;
  }

  /**
   * Persistent workloads get encrypted STATE when the runtime has encrypted
   * scratch; where it cannot work the start fails with the reason instead of
   * running unencrypted.
   */
  private async mountEncrypted(entry: Entry, owner: Owner | undefined): Promise<void> {
    const encrypted = this.options.encryptedScratch;
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

  private quotaMonitor(entry: Entry): ScratchQuotaMonitor {
    const { spec, dirs } = entry;
    return new ScratchQuotaMonitor({
      paths: [dirs.runtime, dirs.state, dirs.cache],
      limitBytes: spec.scratchMb * 1024 * 1024,
      intervalMs: this.quota.intervalMs,
      graceMs: this.quota.graceMs,
      maxEntries: this.quota.maxEntries,
      onMeasured: (usage) => {
        this.scratchBytes.set({ service: spec.name }, usage.bytes);
        const mb = Math.round((usage.bytes / 1048576) * 10) / 10;
        // Publish whole-MB changes only: the observed document should not churn on every write.
        const changed = Math.floor(mb) !== Math.floor(entry.status.scratchUsedMb ?? -1);
        entry.status = { ...entry.status, scratchUsedMb: mb };
        if (changed) this.emit(entry);
      },
      onEvent: (event) => this.onQuotaEvent(entry, event),
    });
  }

  private onQuotaEvent(entry: Entry, event: QuotaEvent): void {
    const name = entry.spec.name;
    const mb = (n: number): string => (n / 1048576).toFixed(1);
    switch (event.type) {
      case 'over-quota':
        this.logger.warn(
          { service: name, usedBytes: event.usedBytes, limitBytes: event.limitBytes },
          'over scratch quota',
        );
        this.setStatus(entry, {
          reason: `over scratch quota: ${mb(event.usedBytes)} MB of ${mb(event.limitBytes)} MB; stopping after ${this.quota.graceMs / 1000} s unless freed`,
        });
        this.emitEvent({
          type: 'scratch-over-quota',
          name,
          usedBytes: event.usedBytes,
          limitBytes: event.limitBytes,
        });
        return;
      case 'back-under-quota':
        if (entry.status.reason?.startsWith('over scratch quota') === true)
          this.setStatus(entry, { reason: null });
        this.emitEvent({
          type: 'scratch-back-under-quota',
          name,
          usedBytes: event.usedBytes,
          limitBytes: event.limitBytes,
        });
        return;
      case 'quota-exceeded':
        this.logger.error(
          { service: name, reason: event.reason },
          'stopping service: scratch quota exceeded',
        );
        this.emitEvent({ ...event, type: 'scratch-quota-exceeded', name });
        void this.withLock(name, async () => {
          if (this.entries.get(name) === entry) await this.teardown(entry, event.reason, 'failed');
        });
        return;
    }
  }

  // ---- status -----------------------------------------------------------------

  private onSupervisorStatus(entry: Entry, supervisor: Supervisor, status: ObservedStatus): void {
    if (entry.supervisor !== supervisor) return;
    if (status.lastExit !== null && status.lastExit.at !== entry.status.lastExit?.at) {
      this.exits.inc({ service: entry.spec.name });
    }
    if (status.restarts > entry.status.restarts) this.restarts.inc({ service: entry.spec.name });
    // The supervisor owns phase/since/restarts/lastExit/reason; scratch usage is ours.
    entry.status = { ...status, scratchUsedMb: entry.status.scratchUsedMb };
    this.emit(entry);
  }

  private setStatus(entry: Entry, change: Partial<ObservedStatus>): void {
    const phaseChanged = change.phase !== undefined && change.phase !== entry.status.phase;
    entry.status = { ...entry.status, ...change };
    if (phaseChanged) entry.status.since = Date.now();
    this.emit(entry);
  }

  private emit(entry: Entry): void {
    this.statusListeners.emit(this.view(entry));
  }

  private emitEvent(event: RuntimeEvent): void {
    this.eventListeners.emit(event);
  }

  private view(entry: Entry): ServiceStatus {
    return {
      ...entry.status,
      name: entry.spec.name,
      pid: entry.supervisor?.servicePid() ?? null,
      limits: entry.limits?.enforced ?? null,
    };
  }

  private withLock<T>(name: string, task: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(name) ?? Promise.resolve();
    const next = previous.then(task, task);
    const tail = next.catch(() => undefined);
    this.locks.set(name, tail);
    void tail.then(() => {
      if (this.locks.get(name) === tail) this.locks.delete(name);
    });
    return next;
  }
}
