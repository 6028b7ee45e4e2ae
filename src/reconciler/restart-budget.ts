import type { Phase } from '../state/schemas.js';
import { describeExit, type LastExit } from './run-exit.js';

/**
 * What follows a service's death (s6's policy, docs/services.md): restart
 * per policy with exponential backoff, reset once a run stayed up for
 * `resetAfterMs`; `crashLoopDeaths` exits within `crashLoopWindowMs` end
 * it as failed; exit code 125 is a permanent failure, never restarted.
 * Kept apart from the process handling so the rules read (and test) alone.
 */

export type RestartPolicy = 'always' | 'on-failure' | 'never';

/** Exit code a service uses to say "do not restart me, ever" (s6's permanent failure). */
export const PERMANENT_FAILURE_EXIT_CODE = 125;

export interface SupervisorTuning {
  backoffBaseMs: number;
  backoffCapMs: number;
  /** A run that stayed ready this long resets the backoff to its base. */
  resetAfterMs: number;
  /** This many exits within `crashLoopWindowMs` = crash loop (phase failed). */
  crashLoopDeaths: number;
  crashLoopWindowMs: number;
  logMaxBytes: number;
  logKeep: number;
}

export const DEFAULT_SUPERVISOR_TUNING: SupervisorTuning = {
  backoffBaseMs: 1000,
  backoffCapMs: 60_000,
  resetAfterMs: 30_000,
  crashLoopDeaths: 5,
  crashLoopWindowMs: 60_000,
  logMaxBytes: 1024 * 1024,
  logKeep: 5,
};

/** A run that ended: `failure` when the supervisor ended it (or it never spawned), `exit` when it exited. */
export interface Death {
  failure: string | null;
  exit: LastExit | null;
  /** How long it had been ready (0 if never). */
  uptimeMs?: number;
}

export type AfterDeath =
  | { kind: 'finish'; phase: Phase; reason: string }
  | { kind: 'restart'; delayMs: number; reason: string };

/** The deaths of one service at one revision, and what each calls for. */
export class RestartBudget {
  private consecutiveFailures = 0;
  private deaths: number[] = [];

  constructor(
    private readonly policy: RestartPolicy,
    private readonly tuning: SupervisorTuning,
  ) {}

  /** Records a death at `now` (only when a restart is possible) and says what follows. */
  afterDeath(death: Death, now: () => number): AfterDeath {
    const { exit } = death;
    const what = death.failure ?? (exit === null ? 'start failed' : describeExit(exit));
    if (exit?.code === PERMANENT_FAILURE_EXIT_CODE)
      return { kind: 'finish', phase: 'failed', reason: `${what}: permanent failure, not restarted` };
    const clean = death.failure === null && exit !== null && exit.code === 0 && exit.signal === null;
    if (this.policy === 'never' || (this.policy === 'on-failure' && clean))
      return {
        kind: 'finish',
        phase: clean ? 'released' : 'failed',
        reason: `${what}; restart policy "${this.policy}"`,
      };
    const at = now();
    this.deaths = this.deaths.filter((t) => at - t < this.tuning.crashLoopWindowMs);
    this.deaths.push(at);
    if (this.deaths.length >= this.tuning.crashLoopDeaths) {
      return {
        kind: 'finish',
        phase: 'failed',
        reason: `crash loop: ${this.deaths.length} exits within ${this.tuning.crashLoopWindowMs / 1000} s (last: ${what})`,
      };
    }
    if ((death.uptimeMs ?? 0) >= this.tuning.resetAfterMs) this.consecutiveFailures = 0;
    this.consecutiveFailures++;
    const delayMs = Math.min(
      this.tuning.backoffCapMs,
      this.tuning.backoffBaseMs * 2 ** Math.min(this.consecutiveFailures - 1, 30),
    );
    return { kind: 'restart', delayMs, reason: `restarting in ${delayMs / 1000} s after ${what}` };
  }
}
