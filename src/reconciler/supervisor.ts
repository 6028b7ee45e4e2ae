import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { ObservedStatus, Phase } from '../state/schemas.js';
import { Listeners } from '../util/listeners.js';
import { killCgroupMembers } from './limits.js';
import { RotatingLog } from './log-rotation.js';
import { PidFile } from './pid-file.js';
import { isSameProcessAlive, killQuietly, readProcStat, waitUntilGone } from './proc.js';
import {
  DEFAULT_SUPERVISOR_TUNING,
  type Death,
  RestartBudget,
  type RestartPolicy,
  type SupervisorTuning,
} from './restart-budget.js';
import { decodeExit, describeExit, type LastExit, settleWithin } from './run-exit.js';
import { watchBwrapChildPid, watchReadinessLine } from './run-streams.js';
import type { LaunchPlan, SandboxKind } from './sandbox.js';

export {
  DEFAULT_SUPERVISOR_TUNING,
  PERMANENT_FAILURE_EXIT_CODE,
  type RestartPolicy,
  type SupervisorTuning,
} from './restart-budget.js';

/**
 * s6-style supervision of one service at one spec revision:
 *  - before every start `prepare()` runs (fresh RUNTIME, generator) and yields the launch plan;
 *  - readiness: a newline on `notificationFd`, else at spawn; none within `startTimeoutMs` = failure;
 *  - after an exit: restart per policy with exponential backoff (reset once the service stayed
 *    up for `resetAfterMs`); `crashLoopDeaths` exits within `crashLoopWindowMs` = failed;
 *    exit code 125 = permanent failure, never restarted (restart-budget.ts);
 *  - stop: the stop signal to the service's main process, `stopTimeoutMs`, then SIGKILL to
 *    everything it started (process group, bwrap's namespace, cgroups): no orphans;
 *  - stdout/stderr into LOGS_DIRECTORY/current with size-based rotation;
 *  - a pid file (`supervise/pid`, pid-file.ts) so that a restarted agent can reap a leftover copy.
 */

export interface SupervisorOptions {
  name: string;
  revision: number;
  sandbox: SandboxKind;
  restart: RestartPolicy;
  stopSignal: string;
  stopTimeoutMs: number;
  startTimeoutMs: number;
  notificationFd?: number;
  logsDir: string;
  /** `<service>/supervise`: holds the pid file. */
  superviseDir: string;
  /**
   * Runs before every start (fresh RUNTIME, generator; `log` appends to the service log);
   * a rejection fails that start and its message becomes the reason.
   */
  prepare: (log: (chunk: Buffer) => void) => Promise<LaunchPlan>;
  /** cgroups the service runs in: recorded in the pid file, emptied after every exit. */
  cgroupDirs?: readonly string[];
  tuning?: Partial<SupervisorTuning>;
  logger: Logger;
}

export type StatusListener = (status: ObservedStatus) => void;

interface Run {
  child: ChildProcess;
  pid: number;
  startTime: string | undefined;
  /** The service's pid when it runs under bwrap (bwrap itself is `pid`). */
  childPid: number | null;
  childStartTime: string | undefined;
  readyAt: number | null;
  /** The newline arrived on notification_fd. */
  notified: boolean;
  waitsForChildPid: boolean;
  readinessTimer: NodeJS.Timeout | null;
  /** Set when the supervisor killed the run because it failed (readiness timeout). */
  failure: string | null;
  exited: Promise<void>;
  /** All of the child's stdio closed (its output fully read). */
  closed: Promise<void>;
  /**
   * The pid record writes, one after another (they share a temp file, and an older record must
   * never replace a newer one). Readiness waits for it: a run is reported running only once the
   * record that lets the next agent reap it is on disk.
   */
  recorded: Promise<void>;
}

export class Supervisor {
  private readonly tuning: SupervisorTuning;
  private readonly logger: Logger;
  private readonly log: RotatingLog;
  private readonly listeners = new Listeners<Parameters<StatusListener>>((err) =>
    this.logger.error({ err: (err as Error).message }, 'status listener threw'),
  );
  private status: ObservedStatus;
  private run: Run | null = null;
  private backoffTimer: NodeJS.Timeout | null = null;
  /** Deaths so far and the backoff they call for. */
  private readonly restarts: RestartBudget;
  private readonly pidFile: PidFile;
  private stopping: Promise<void> | null = null;
  private started = false;
  private finished = false;

  constructor(private readonly options: SupervisorOptions) {
    this.tuning = { ...DEFAULT_SUPERVISOR_TUNING, ...options.tuning };
    this.logger = options.logger.child({ component: 'supervisor', service: options.name });
    this.restarts = new RestartBudget(options.restart, this.tuning);
    this.pidFile = new PidFile(join(options.superviseDir, 'pid'), this.logger);
    this.log = new RotatingLog({
      dir: options.logsDir,
      maxBytes: this.tuning.logMaxBytes,
      keep: this.tuning.logKeep,
    });
    this.status = {
      phase: 'pending',
      since: Date.now(),
      revision: options.revision,
      restarts: 0,
      lastExit: null,
      reason: null,
      sandbox: options.sandbox,
      scratchUsedMb: null,
      snapshot: null,
    };
  }

  get name(): string {
    return this.options.name;
  }

  get revision(): number {
    return this.options.revision;
  }

  /** Current status (a copy). */
  current(): ObservedStatus {
    return { ...this.status };
  }

  /** pid of the service's main process (inside bwrap: the service itself), or null. */
  servicePid(): number | null {
    return this.run === null ? null : (this.run.childPid ?? this.run.pid);
  }

  /** True once the supervisor will never start the service again (stopped, failed, exited for good). */
  isFinished(): boolean {
    return this.finished;
  }

  onStatus(listener: StatusListener): () => void {
    return this.listeners.add(listener);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    void this.launch();
  }

  /**
   * Stop for good: cancel any pending restart, stop the running process
   * (signal, timeout, SIGKILL) and end in `phase` (released unless told otherwise).
   */
  stop(reason = 'stopped', phase: Phase = 'released'): Promise<void> {
    if (this.stopping === null) this.stopping = this.stopNow(reason, phase);
    return this.stopping;
  }

  private async stopNow(reason: string, phase: Phase): Promise<void> {
    this.clearBackoff();
    const run = this.run;
    if (run !== null) {
      this.setStatus({ phase: 'stopping', reason });
      await this.terminate(run);
    }
    this.finish(phase, reason);
  }

  // ---- starting -----------------------------------------------------------

  private async launch(): Promise<void> {
    if (this.stopping !== null) return;
    this.setStatus({ phase: 'starting', reason: this.status.restarts > 0 ? this.status.reason : null });
    let plan: LaunchPlan;
    try {
      plan = await this.options.prepare((chunk) => this.log.write(chunk));
    } catch (err) {
      if (this.stopping !== null) return;
      this.logger.warn({ err: (err as Error).message }, 'start failed before spawn');
      this.afterDeath({ failure: `start failed: ${(err as Error).message}`, exit: null });
      return;
    }
    if (this.stopping !== null) return;
    this.spawnRun(plan);
  }

  private spawnRun(plan: LaunchPlan): void {
    const { notificationFd } = this.options;
    const stdio: ('ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
    for (const fd of [notificationFd, plan.statusFd]) {
      if (fd === undefined || fd === null) continue;
      while (stdio.length <= fd) stdio.push('ignore');
      stdio[fd] = 'pipe';
    }
    // detached: the service leads its own process group, so SIGKILL to -pid reaches everything it forked.
    const child = spawn(plan.file, plan.args, { env: plan.env, cwd: plan.cwd, stdio, detached: true });
    let markExited!: () => void;
    const exited = new Promise<void>((resolve) => {
      markExited = resolve;
    });
    if (child.pid === undefined) {
      // Synchronous spawn failure: 'error' follows on the next tick and 'exit' never fires.
      child.once('error', (err) => {
        markExited();
        this.afterDeath({ failure: `spawn failed: ${err.message}`, exit: null });
      });
      return;
    }
    const run: Run = {
      child,
      pid: child.pid,
      startTime: readProcStat(child.pid)?.startTime,
      childPid: null,
      childStartTime: undefined,
      readyAt: null,
      notified: false,
      waitsForChildPid: false,
      readinessTimer: null,
      failure: null,
      exited,
      closed: new Promise<void>((resolve) => child.once('close', () => resolve())),
      recorded: Promise.resolve(),
    };
    this.run = run;
    this.logger.info(
      { pid: run.pid, sandbox: plan.kind, revision: this.options.revision },
      'service spawned',
    );
    this.recordPid(run);

    child.stdout?.on('data', (chunk: Buffer) => this.log.write(chunk));
    child.stderr?.on('data', (chunk: Buffer) => this.log.write(chunk));
    if (plan.statusFd !== null) {
      watchBwrapChildPid(child.stdio[plan.statusFd] as Readable | null, (childPid) => {
        if (run.childPid === null) this.adoptChildPid(run, childPid);
      });
    }

    // Ready = the newline on notification_fd (if declared) AND, under bwrap, the service's own
    // pid known (child-pid on the status fd), so a running status never names bwrap.
    run.waitsForChildPid = plan.statusFd !== null;
    if (notificationFd !== undefined) {
      watchReadinessLine(child.stdio[notificationFd] as Readable | null, () => {
        run.notified = true;
        this.maybeReady(run);
      });
    }
    this.maybeReady(run);
    if (run.readyAt === null) this.armReadinessTimer(run);

    let settled = false;
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (settled) return;
      settled = true;
      void this.onRunExit(run, code, signal, plan.kind).finally(markExited);
    };
    child.once('exit', onExit);
    child.once('error', (err) => {
      this.logger.warn({ err: err.message }, 'child process error');
      // An 'error' without a pid-ful exit (e.g. kill failure) is not a death; exit still follows.
      if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
    });
  }

  private armReadinessTimer(run: Run): void {
    run.readinessTimer = setTimeout(() => {
      if (run.readyAt !== null || this.run !== run || this.stopping !== null) return;
      const missing =
        this.options.notificationFd !== undefined && !run.notified
          ? `no newline on fd ${this.options.notificationFd}`
          : 'bwrap reported no child pid';
      run.failure = `not ready within ${this.options.startTimeoutMs / 1000} s (${missing})`;
      this.logger.warn(run.failure);
      void this.terminate(run);
    }, this.options.startTimeoutMs);
  }

  private maybeReady(run: Run): void {
    const notified = this.options.notificationFd === undefined || run.notified;
    const pidKnown = !run.waitsForChildPid || run.childPid !== null;
    // An agent killed right after reporting running must leave a record naming this run (the
    // service's own pid under bwrap), or its successor cannot reap the orphan.
    if (notified && pidKnown) void run.recorded.then(() => this.markReady(run));
  }

  private adoptChildPid(run: Run, childPid: number): void {
    // Only trust a pid that really is bwrap's child: signalling an arbitrary pid would be a hole.
    const stat = readProcStat(childPid);
    if (stat === null || stat.ppid !== run.pid) {
      this.logger.warn({ childPid, bwrapPid: run.pid }, 'ignoring bwrap child-pid that is not its child');
      return;
    }
    run.childPid = childPid;
    run.childStartTime = stat.startTime;
    this.recordPid(run);
    this.maybeReady(run);
  }

  private markReady(run: Run): void {
    if (this.run !== run || run.readyAt !== null || this.stopping !== null) return;
    run.readyAt = Date.now();
    if (run.readinessTimer !== null) clearTimeout(run.readinessTimer);
    this.setStatus({ phase: 'running', reason: null });
  }

  // ---- exits and restarts -------------------------------------------------

  private async onRunExit(
    run: Run,
    rawCode: number | null,
    rawSignal: NodeJS.Signals | null,
    kind: SandboxKind,
  ): Promise<void> {
    if (run.readinessTimer !== null) clearTimeout(run.readinessTimer);
    const { code, signal } = decodeExit(rawCode, rawSignal, kind);
    const exit: LastExit = { code, signal, at: Date.now() };
    await this.killRemnants(run);
    if (run.childPid !== null) await waitUntilGone(run.childPid, run.childStartTime, 5000);
    // 'exit' can come before the last output was read: let the pipes drain (bounded, since
    // with the remnants killed nobody holds them open any more), then close them.
    await settleWithin(run.closed, 2000);
    for (const fd of run.child.stdio) fd?.destroy();
    if (this.run === run) this.run = null;
    await this.pidFile.remove();
    this.logger.info({ code, signal, pid: run.pid }, 'service exited');
    if (this.stopping !== null) {
      this.setStatus({ lastExit: exit });
      return; // stopNow finishes
    }
    // A run that died before it was ready still carries the reason of the restart that began it;
    // say what happened to this one until afterDeath decides what comes next.
    this.setStatus({ lastExit: exit, reason: `exited: ${describeExit(exit)}` });
    this.afterDeath({
      failure: run.failure,
      exit,
      uptimeMs: run.readyAt === null ? 0 : exit.at - run.readyAt,
    });
  }

  private afterDeath(death: Death): void {
    const next = this.restarts.afterDeath(death, Date.now);
    if (next.kind === 'finish') {
      this.finish(next.phase, next.reason);
      return;
    }
    this.setStatus({ phase: 'starting', reason: next.reason });
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = null;
      if (this.stopping !== null) return;
      this.setStatus({ restarts: this.status.restarts + 1 });
      void this.launch();
    }, next.delayMs);
  }

  private finish(phase: Phase, reason: string): void {
    this.clearBackoff();
    this.finished = true;
    this.log.close();
    this.setStatus({ phase, reason });
    this.logger.info({ phase, reason }, 'supervision ended');
  }

  private clearBackoff(): void {
    if (this.backoffTimer !== null) clearTimeout(this.backoffTimer);
    this.backoffTimer = null;
  }

  // ---- stopping -----------------------------------------------------------

  /** Stop signal to the service, `stopTimeoutMs`, then SIGKILL to all of it; resolves once it exited. */
  private async terminate(run: Run): Promise<void> {
    const target = run.childPid ?? run.pid;
    const signal = this.options.stopSignal as NodeJS.Signals;
    this.logger.info({ pid: target, signal }, 'stopping service');
    killQuietly(target, signal);
    const exitedInTime = await settleWithin(run.exited, this.options.stopTimeoutMs);
    if (!exitedInTime) {
      this.logger.warn({ pid: target, timeoutMs: this.options.stopTimeoutMs }, 'stop timeout: SIGKILL');
      await this.killRemnants(run);
    }
    await run.exited;
  }

  /** SIGKILL whatever the run left behind: its process group, bwrap's child, the cgroups. */
  private async killRemnants(run: Run): Promise<void> {
    killQuietly(-run.pid, 'SIGKILL');
    if (run.childPid !== null && isSameProcessAlive(run.childPid, run.childStartTime)) {
      killQuietly(run.childPid, 'SIGKILL');
    }
    if (this.options.cgroupDirs !== undefined && this.options.cgroupDirs.length > 0) {
      await killCgroupMembers(this.options.cgroupDirs);
    }
  }

  // ---- pid file -----------------------------------------------------------

  private recordPid(run: Run): void {
    run.recorded = run.recorded.then(() => this.writePidFile(run));
  }

  /** Never rejects (PidFile.write). */
  private async writePidFile(run: Run): Promise<void> {
    if (run.startTime === undefined) return;
    const record = {
      name: this.options.name,
      revision: this.options.revision,
      pid: run.pid,
      startTime: run.startTime,
      childPid: run.childPid,
      childStartTime: run.childStartTime ?? null,
      cgroupDirs: [...(this.options.cgroupDirs ?? [])],
      writtenAt: Date.now(),
    };
    // The run may have ended while writing: never leave a record of a dead run behind.
    await this.pidFile.write(record, () => this.run === run);
  }

  // ---- status -------------------------------------------------------------

  private setStatus(change: Partial<ObservedStatus>): void {
    const phaseChanged = change.phase !== undefined && change.phase !== this.status.phase;
    this.status = { ...this.status, ...change };
    if (phaseChanged) this.status.since = Date.now();
    if (this.status.reason !== null && this.status.reason.length > 2000) {
      this.status.reason = `${this.status.reason.slice(0, 1997)}...`;
    }
    this.listeners.emit(this.current());
  }
}
