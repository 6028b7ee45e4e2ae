import type { Logger } from 'pino';
import { z } from 'zod';
import type { ObservedStatus, Phase, WorkloadSpec } from '../state/schemas.js';
import { WorkloadSpecSchema } from '../state/schemas.js';
import { KeyedLock } from '../util/keyed-lock.js';
import { Listeners } from '../util/listeners.js';
import { type LimitSetup, ResourceLimiter } from './limits.js';
import { type ReapedService, reapOrphans } from './orphans.js';
import { RuntimeMetrics } from './runtime-metrics.js';
import {
  DEFAULT_QUOTA,
  type QuotaOptions,
  type RuntimeEntry,
  type RuntimeEvent,
  runtimeInstanceId,
  type ServiceRuntimeOptions,
  type ServiceStatus,
} from './runtime-types.js';
import { detectSandbox, SANDBOX_GID, SANDBOX_UID, type SandboxChoice } from './sandbox.js';
import {
  type Owner,
  prepareDirs,
  purgeCache,
  type QuotaEvent,
  removeRuntime,
  ScratchQuotaMonitor,
  serviceDirs,
} from './scratch.js';
import { ServiceAddressing } from './service-addressing.js';
import { checkImage, mountEncryptedState, newEntry, superviseService } from './service-start.js';
import type { Supervisor } from './supervisor.js';

export {
  type QuotaOptions,
  type RuntimeEvent,
  runtimeInstanceId,
  type ServiceNetworkAccess,
  type ServiceRuntimeOptions,
  type ServiceStatus,
} from './runtime-types.js';

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

type Entry = RuntimeEntry;

export class ServiceRuntime {
  private readonly logger: Logger;
  private readonly entries = new Map<string, Entry>();
  /** Everything done to one service is done in turn. */
  private readonly locks = new KeyedLock();
  private readonly statusListeners = new Listeners<[ServiceStatus]>((err) =>
    this.logger.error({ err: (err as Error).message }, 'status listener threw'),
  );
  private readonly eventListeners = new Listeners<[RuntimeEvent]>((err) =>
    this.logger.error({ err: (err as Error).message }, 'event listener threw'),
  );
  private readonly limiter: ResourceLimiter;
  private readonly quota: QuotaOptions;
  private readonly instanceId: string;
  private readonly addressing: ServiceAddressing;
  private sandbox: Promise<SandboxChoice> | null = null;
  private initialized: Promise<ReapedService[]> | null = null;
  private readonly metrics: RuntimeMetrics;

  constructor(private readonly options: ServiceRuntimeOptions) {
    this.logger = options.logger.child({ component: 'service-runtime' });
    this.limiter = new ResourceLimiter({ ...options.limits, logger: options.logger });
    this.quota = { ...DEFAULT_QUOTA, ...options.quota };
    // cgroup names must not collide between agents sharing a host (or a test process).
    this.instanceId = runtimeInstanceId(options.dataDir);
    this.addressing = new ServiceAddressing(options.serviceNetwork, this.logger);
    // For the runtime's lifetime, which is the agent's (the reconciler is not restarted).
    this.addressing.onChange(() => this.readdressAll());
    const entries = this.entries;
    this.metrics = new RuntimeMetrics(options.registry, function* () {
      for (const entry of entries.values()) yield entry.status.phase;
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

  /** Every step of a start (service-start.ts); a failed step leaves the service failed, or pulling to retry. */
  private async start(spec: WorkloadSpec): Promise<ServiceStatus> {
    const entry = newEntry(this.options.dataDir, spec);
    this.entries.set(spec.name, entry);
    const image = await checkImage(this.options.imageStore, spec, () => this.sandboxChoice());
    if (!image.ok) {
      entry.retry = image.retry;
      this.setStatus(entry, { phase: image.retry ? 'pulling' : 'failed', reason: image.reason });
      return this.view(entry);
    }
    const { rootfs, choice } = image;
    const owner: Owner | undefined =
      choice.kind === 'bubblewrap' ? { uid: SANDBOX_UID, gid: SANDBOX_GID } : undefined;
    let limits: LimitSetup;
    try {
      await prepareDirs(entry.dirs, owner);
      await mountEncryptedState(this.options.encryptedScratch, entry, owner);
      limits = await this.limiter.setup(`${this.instanceId}-${spec.name}`, {
        cpus: spec.cpus,
        memoryMb: spec.memoryMb,
      });
    } catch (err) {
      this.setStatus(entry, { phase: 'failed', reason: `cannot prepare: ${(err as Error).message}` });
      return this.view(entry);
    }
    entry.limits = limits;

    const supervisor = superviseService({
      entry,
      rootfs,
      choice,
      owner,
      limits,
      nodeId: this.options.nodeId ?? null,
      tuning: this.options.tuning ?? {},
      addressing: this.addressing,
      logger: this.options.logger,
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

  /**
   * Restarts every service whose claim lost after it started (docs/services.md,
   * "When an address is used"): two nodes that applied at once may each have
   * started it with an address the merged document gives to another
   * workload. It must not keep answering there, so it stops and starts again
   * with its new address; while it has none, the start fails and the restart
   * policy retries.
   */
  private readdressAll(): void {
    // One resolution of the address map for all services (ServiceAddressing.moved). OverlaySync and
    // ServiceNetwork resolve it too on the same change, in the agent, through WorkloadsView; sharing
    // one result would need a cache in WorkloadsView keyed on the document, which also reports
    // invalid claims each time it reads them: left as it is.
    for (const name of this.addressing.moved(this.entries)) {
      void this.withLock(name, async () => {
        const current = this.entries.get(name);
        if (current === undefined || current.stoppedByRequest || current.address === undefined) return;
        // Asked again under the lock: the address may have moved back while earlier work ran.
        const now = this.addressing.addressOf(name);
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

  private async teardown(entry: Entry, reason: string, phase: Phase): Promise<void> {
    entry.address = undefined;
    entry.quota?.stop();
    entry.quota = null;
    if (entry.supervisor !== null) await entry.supervisor.stop(reason, phase);
    else this.setStatus(entry, { phase, reason });
    await this.addressing.release(entry);
    await removeRuntime(entry.dirs);
    if (entry.encrypted) {
      // Nothing of the plaintext view outlives the run.
      await this.options.encryptedScratch?.unmount(entry.dirs);
      entry.encrypted = false;
    }
    if (entry.limits !== null) await this.limiter.release(entry.limits);
    entry.limits = null;
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
        this.metrics.scratchBytes.set({ service: spec.name }, usage.bytes);
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
      this.metrics.exits.inc({ service: entry.spec.name });
    }
    if (status.restarts > entry.status.restarts) this.metrics.restarts.inc({ service: entry.spec.name });
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
    return this.locks.run(name, task);
  }
}
