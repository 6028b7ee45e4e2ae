import type { EndKind, RunEnd, RunningRegistry, RunStart } from '../running-registry.js';
import { type InvariantResult, result } from './types.js';

/** The reconcile loop's reason for the holder's stop in a planned move (reconcile-loop.ts, stop-and-release). */
const PLANNED_MOVE_REASON = /^moving to /;

/**
 * No state lost on planned moves: when a persistent workload's holder
 * stopped it for a planned move (drain, constraint change, rebalance) and
 * it next starts on another node, STATE_DIRECTORY there must hold exactly
 * what the old holder's process left (digest of paths + bytes). Takeovers
 * after a crash or a fence are not planned moves: they restore a
 * checkpoint and may lose recent writes by design (docs/placement.md, T4).
 */
/** A persistent workload that started elsewhere after its holder was killed or fenced (not a planned move). */
export interface Takeover {
  workload: string;
  from: string;
  to: string;
  at: number;
  /** How the previous process ended: killed with its node, or stopped (fenced, agent stopping). */
  previousEnd: EndKind;
  /** Writes of the previous process the new one does not start with (checkpoint age), >= 0. */
  lostWrites: number;
}

export class StateMoveChecker {
  private readonly lastEnd = new Map<string, RunEnd>();
  private readonly failures: string[] = [];
  private readonly takeoverList: Takeover[] = [];
  private moves = 0;
  private readonly unsubscribe: () => void;

  constructor(
    registry: RunningRegistry,
    private readonly describeTime: (at: number) => string = (at) => `${Math.round(at)} ms`,
  ) {
    this.unsubscribe = registry.subscribe((event) => {
      if (event.kind === 'start') this.onStart(event);
      else this.lastEnd.set(event.workload, event);
    });
  }

  stop(): void {
    this.unsubscribe();
  }

  /** Unplanned moves and the state they lost (by design: docs/placement.md T4), for the report. */
  takeovers(): readonly Takeover[] {
    return this.takeoverList;
  }

  result(): InvariantResult {
    return result(
      'state',
      this.moves,
      this.failures,
      this.failures.length === 0
        ? `${this.moves} planned moves of persistent workloads, STATE_DIRECTORY identical after each`
        : `${this.failures.length} of ${this.moves} planned moves changed STATE_DIRECTORY`,
    );
  }

  private onStart(event: RunStart): void {
    if (!event.persistent) return;
    const end = this.lastEnd.get(event.workload);
    if (end === undefined || end.node === event.node) return;
    if (end.kind !== 'stop' || end.reason === null || !PLANNED_MOVE_REASON.test(end.reason)) {
      this.takeoverList.push({
        workload: event.workload,
        from: end.node,
        to: event.node,
        at: event.at,
        previousEnd: end.kind,
        lostWrites: Math.max(0, end.counter - event.counter),
      });
      return;
    }
    this.moves++;
    if (end.stateDigest !== event.stateDigest) {
      this.failures.push(
        `${this.describeTime(event.at)}: ${event.workload} moved ${end.node} → ${event.node}: state ${short(end.stateDigest)} at stop, ${short(event.stateDigest)} at start`,
      );
    }
  }
}

function short(digest: string | null): string {
  return digest === null ? 'unknown' : digest.slice('sha256:'.length, 'sha256:'.length + 12);
}
