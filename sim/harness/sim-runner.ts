/**
 * A simulated ServiceRunner (src/reconciler/service-runner.ts) for the
 * simulator: the reconcile loop drives it exactly as it drives the real
 * ServiceRuntime, but a "process" is an in-memory record with phases and
 * timers. What is real is its STATE_DIRECTORY (`<data>/services/<name>/state`,
 * the path the SnapshotStore captures and restores): a running process
 * bumps a counter file in it every `stateWriteMs`, so checkpoints,
 * released snapshots, restores and migrations move real bytes, and the
 * harness can compare the directory before and after a move.
 *
 * Every birth and end is reported to the global RunningRegistry, which is
 * how the safety checker sees what runs where at every instant.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ownershipClass } from '../../src/reconciler/placement/index.js';
import { serviceDirs } from '../../src/reconciler/scratch.js';
import type { EnsureOptions, RunnerStatus, ServiceRunner } from '../../src/reconciler/service-runner.js';
import { type Phase, type WorkloadSpec, WorkloadSpecSchema } from '../../src/state/schemas.js';
import { KeyedLock } from '../../src/util/keyed-lock.js';
import type { RunningRegistry } from './running-registry.js';
import { digestTree } from './state-digest.js';

export interface SimRunnerTiming {
  /** From spawn to `running` (a readiness notification), ms. */
  startMs: number;
  /** From SIGTERM to exit, ms. */
  stopMs: number;
  /** A running process writes its STATE_DIRECTORY this often (0: never). */
  stateWriteMs: number;
}

export const DEFAULT_SIM_RUNNER_TIMING: SimRunnerTiming = { startMs: 50, stopMs: 50, stateWriteMs: 250 };

/**
 * Deliberate misbehaviour, switchable at any time, for proving that the
 * checkers can fail. Never set in a normal scenario.
 */
export interface SimRunnerFaults {
  /** `stop` reports `released` but the process keeps running (a process that ignores SIGTERM and is not killed). */
  leakOnStop: boolean;
}

export interface SimRunnerOptions {
  node: string;
  dataDir: string;
  registry: RunningRegistry;
  logger: Logger;
  timing?: Partial<SimRunnerTiming>;
  faults?: SimRunnerFaults;
  /** The node's clock for `since` stamps (informative only). */
  now?: () => number;
}

/** The name of the counter file a simulated process keeps in its STATE_DIRECTORY. */
export const STATE_COUNTER_FILE = 'counter';

const ACTIVE = new Set<Phase>(['pending', 'starting', 'running', 'stopping']);

interface SimProcess {
  spec: WorkloadSpec;
  pid: number | null;
  phase: Phase;
  since: number;
  restarts: number;
  lastExit: RunnerStatus['lastExit'];
  reason: string | null;
  counter: number;
  writer: NodeJS.Timeout | null;
  /** Set when the process leaked on stop: it still runs, but the runner no longer drives it. */
  leaked: boolean;
}

export class SimRunner implements ServiceRunner {
  readonly node: string;
  readonly faults: SimRunnerFaults;
  private readonly options: SimRunnerOptions;
  private readonly timing: SimRunnerTiming;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly procs = new Map<string, SimProcess>();
  private readonly leaked: SimProcess[] = [];
  private readonly listeners = new Set<(status: RunnerStatus) => void>();
  /** One operation per workload at a time (ensureRunning and stop never interleave). */
  private readonly perWorkload = new KeyedLock();
  /** Pending sleeps; kill() wakes them so that every operation in flight ends (with "node is down"). */
  private readonly sleepers = new Map<NodeJS.Timeout, () => void>();
  private dead = false;

  constructor(options: SimRunnerOptions) {
    this.options = options;
    this.node = options.node;
    this.timing = { ...DEFAULT_SIM_RUNNER_TIMING, ...options.timing };
    this.faults = options.faults ?? { leakOnStop: false };
    this.logger = options.logger.child({ component: 'sim-runner' });
    this.now = options.now ?? Date.now;
  }

  async init(): Promise<void> {
    // A crashed predecessor's processes died with its node (kill()); there is nothing to reap.
  }

  ensureRunning(spec: WorkloadSpec, options: EnsureOptions = {}): Promise<RunnerStatus> {
    const parsed = WorkloadSpecSchema.safeParse(spec);
    if (!parsed.success) {
      return Promise.reject(new Error(`invalid spec: ${parsed.error.issues[0]?.message ?? 'unknown'}`));
    }
    return this.perWorkload.run(spec.name, () => this.ensureOnce(parsed.data, options.reason ?? null));
  }

  stop(name: string, options: { reason: string }): Promise<RunnerStatus | null> {
    return this.perWorkload.run(name, async () => {
      const proc = this.procs.get(name);
      if (proc === undefined) return null;
      if (ACTIVE.has(proc.phase)) await this.stopProcess(proc, options.reason);
      return this.toStatus(proc);
    });
  }

  status(name: string): RunnerStatus | null {
    const proc = this.procs.get(name);
    return proc === undefined ? null : this.toStatus(proc);
  }

  list(): RunnerStatus[] {
    return [...this.procs.values()].map((proc) => this.toStatus(proc));
  }

  onStatus(listener: (status: RunnerStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async stopAll(options: { reason: string }): Promise<void> {
    await Promise.all([...this.procs.keys()].map((name) => this.stop(name, options)));
  }

  /**
   * The node died: every process vanishes at this instant, without a stop,
   * a snapshot or a status. The runner is unusable afterwards (the harness
   * builds a new one for the restarted agent).
   */
  kill(): void {
    this.dead = true;
    for (const [timer, wake] of this.sleepers) {
      clearTimeout(timer);
      wake();
    }
    this.sleepers.clear();
    for (const proc of [...this.procs.values(), ...this.leaked]) {
      if (proc.writer !== null) clearInterval(proc.writer);
      proc.writer = null;
      if (proc.pid !== null) {
        this.options.registry.ended({
          kind: 'kill',
          node: this.node,
          workload: proc.spec.name,
          pid: proc.pid,
          stateDigest: null,
          counter: proc.counter,
          reason: null,
        });
        proc.pid = null;
      }
    }
    this.leaked.length = 0;
    this.listeners.clear();
  }

  /** Processes that still run although their stop was reported (faults.leakOnStop). */
  leakedProcesses(): string[] {
    return this.leaked.map((proc) => proc.spec.name);
  }

  // ---- internals ----------------------------------------------------------------------------------------

  private async ensureOnce(spec: WorkloadSpec, reason: string | null): Promise<RunnerStatus> {
    this.requireAlive();
    const existing = this.procs.get(spec.name);
    if (existing !== undefined && ACTIVE.has(existing.phase)) {
      if (existing.spec.revision === spec.revision) return this.toStatus(existing);
      await this.stopProcess(existing, `spec revision ${existing.spec.revision} → ${spec.revision}`);
    }
    if (existing?.phase === 'failed' && existing.spec.revision === spec.revision)
      return this.toStatus(existing);
    const proc: SimProcess = {
      spec,
      pid: null,
      phase: 'pending',
      since: this.now(),
      restarts: existing?.restarts ?? 0,
      lastExit: existing?.lastExit ?? null,
      reason,
      counter: 0,
      writer: null,
      leaked: false,
    };
    this.procs.set(spec.name, proc);
    this.setPhase(proc, 'pending');
    await this.launch(proc);
    this.logger.debug({ workload: spec.name, revision: spec.revision, reason }, 'sim process running');
    return this.toStatus(proc);
  }

  /** Spawns `proc`'s process from its STATE_DIRECTORY as it is: starting, then running after startMs. */
  private async launch(proc: SimProcess): Promise<void> {
    const spec = proc.spec;
    const dirs = serviceDirs(this.options.dataDir, spec.name);
    await mkdir(dirs.state, { recursive: true });
    await mkdir(dirs.runtime, { recursive: true });
    this.requireAlive();
    const stateDigest = await digestTree(dirs.state);
    proc.counter = await readCounter(dirs.state);
    this.requireAlive();
    proc.pid = this.options.registry.started({
      node: this.node,
      workload: spec.name,
      revision: spec.revision,
      exclusive: ownershipClass(spec) === 'exclusive',
      persistent: spec.scratchClass === 'persistent',
      stateDigest,
      counter: proc.counter,
    });
    this.setPhase(proc, 'starting');
    await this.sleep(this.timing.startMs);
    this.requireAlive();
    this.options.registry.ready(this.node, spec.name, proc.pid);
    proc.reason = null;
    this.setPhase(proc, 'running');
    if (this.timing.stateWriteMs > 0) {
      proc.writer = setInterval(
        () => this.writeState(proc, dirs.state, dirs.runtime),
        this.timing.stateWriteMs,
      );
      proc.writer.unref();
    }
  }

  /**
   * The service's process dies on its own (SIGKILL from outside, a bug),
   * while the node and the agent live on: as the real runtime does for
   * restart = "always", the runner counts a restart, reports the exit and
   * starts it again on this node, from the STATE_DIRECTORY it left. False
   * when it does not run right now.
   */
  crashProcess(name: string): boolean {
    const proc = this.procs.get(name);
    if (proc === undefined || proc.phase !== 'running' || proc.pid === null || this.dead) return false;
    if (proc.writer !== null) clearInterval(proc.writer);
    proc.writer = null;
    this.options.registry.ended({
      kind: 'exit',
      node: this.node,
      workload: name,
      pid: proc.pid,
      stateDigest: null,
      counter: proc.counter,
      reason: 'killed by SIGKILL',
    });
    proc.pid = null;
    proc.lastExit = { code: null, signal: 'SIGKILL', at: Math.floor(this.now()) };
    proc.restarts++;
    this.setPhase(proc, 'starting', 'restarting after an exit by SIGKILL');
    // Queued like any operation on it: a stop or a new revision asked meanwhile waits for the restart.
    void this.perWorkload
      .run(name, async () => {
        if (proc.phase === 'starting' && proc.pid === null && this.procs.get(name) === proc)
          await this.launch(proc);
      })
      .catch((err: unknown) => this.logger.debug({ err, workload: name }, 'sim restart after exit ended'));
    return true;
  }

  private async stopProcess(proc: SimProcess, reason: string): Promise<void> {
    this.requireAlive();
    this.setPhase(proc, 'stopping', reason);
    await this.sleep(this.timing.stopMs);
    this.requireAlive();
    const dirs = serviceDirs(this.options.dataDir, proc.spec.name);
    if (this.faults.leakOnStop && proc.pid !== null) {
      // The process survives its stop: it keeps its pid in the registry and keeps writing,
      // while the runner (and so the loop) believes it released.
      const zombie: SimProcess = { ...proc, leaked: true };
      this.leaked.push(zombie);
      proc.writer = null;
      proc.pid = null;
      this.logger.warn({ workload: proc.spec.name }, 'sim fault: process leaked on stop');
    } else {
      if (proc.writer !== null) clearInterval(proc.writer);
      proc.writer = null;
      if (proc.pid !== null) {
        this.options.registry.ended({
          kind: 'stop',
          node: this.node,
          workload: proc.spec.name,
          pid: proc.pid,
          stateDigest: await digestTree(dirs.state),
          counter: proc.counter,
          reason,
        });
        proc.pid = null;
      }
    }
    proc.lastExit = { code: 0, signal: 'SIGTERM', at: Math.floor(this.now()) };
    this.setPhase(proc, 'released', reason);
  }

  /**
   * One write of the process: counter + 1, atomically (a live checkpoint
   * never sees half a file). Synchronous, so that nothing is still being
   * written when the node is killed: a dead process writes nothing more.
   */
  private writeState(proc: SimProcess, stateDir: string, runtimeDir: string): void {
    const value = proc.counter + 1;
    const temp = join(runtimeDir, `.${STATE_COUNTER_FILE}.tmp`);
    try {
      writeFileSync(temp, `${value}\n`);
      renameSync(temp, join(stateDir, STATE_COUNTER_FILE));
      proc.counter = value;
    } catch (err) {
      // A restore may swap the directory away under a leaked process; the next write retries.
      this.logger.debug({ err, workload: proc.spec.name }, 'sim state write failed');
    }
  }

  private setPhase(proc: SimProcess, phase: Phase, reason: string | null = proc.reason): void {
    proc.phase = phase;
    proc.since = Math.floor(this.now());
    proc.reason = reason;
    const status = this.toStatus(proc);
    for (const listener of this.listeners) {
      try {
        listener(status);
      } catch (err) {
        this.logger.error({ err }, 'runner status listener failed');
      }
    }
  }

  private toStatus(proc: SimProcess): RunnerStatus {
    return {
      name: proc.spec.name,
      phase: proc.phase,
      since: proc.since,
      revision: proc.spec.revision,
      restarts: proc.restarts,
      lastExit: proc.lastExit,
      reason: proc.reason,
      sandbox: 'none',
      scratchUsedMb: null,
    };
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.sleepers.delete(timer);
        resolve();
      }, ms);
      this.sleepers.set(timer, resolve);
    });
  }

  private requireAlive(): void {
    if (this.dead) throw new Error(`sim node ${this.node} is down`);
  }
}

async function readCounter(stateDir: string): Promise<number> {
  const text = await readFile(join(stateDir, STATE_COUNTER_FILE), 'utf8').catch(() => '0');
  const value = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(value) ? value : 0;
}
