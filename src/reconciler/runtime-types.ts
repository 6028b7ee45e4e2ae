import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ObservedStatus, WorkloadSpec } from '../state/schemas.js';
import type { EncryptedScratch } from './encrypted-scratch.js';
import type { ImageStore } from './image-store.js';
import type { EnforcedLimits, LimitSetup, ResourceLimiterOptions } from './limits.js';
import type { SandboxPreference } from './sandbox.js';
import type { ScratchQuotaMonitor, ServiceDirs } from './scratch.js';
import type { Supervisor, SupervisorTuning } from './supervisor.js';

/**
 * What the service runtime (service-runtime.ts) is built from, what it
 * reports, and the record it keeps of each service; shared by the parts it
 * delegates to.
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
  /**
   * Every workload's service address at once (workload → address). When
   * given, a change of the document resolves the addresses once for all
   * running services instead of once per service.
   */
  addresses?(): ReadonlyMap<string, string>;
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

export const DEFAULT_QUOTA: QuotaOptions = { intervalMs: 10_000, graceMs: 60_000, maxEntries: 100_000 };

/** One service the runtime knows of, at its current spec revision. */
export interface RuntimeEntry {
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
