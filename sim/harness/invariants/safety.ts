import type { RunningRegistry, RunStart } from '../running-registry.js';
import { type InvariantResult, result } from './types.js';

export interface SafetyViolation {
  workload: string;
  /** Harness time (performance.now) of the start that made it run twice. */
  at: number;
  nodes: string[];
}

/**
 * Safety: at no instant does an exclusive workload (persistent, or volatile
 * with on_partition = "stop") run on two nodes. Processes change only at
 * registry events, so checking at every start is checking every instant.
 * A process counts from its spawn (starting) until it is gone.
 */
export class SafetyChecker {
  private readonly violationList: SafetyViolation[] = [];
  private starts = 0;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly registry: RunningRegistry,
    private readonly describeTime: (at: number) => string = (at) => `${Math.round(at)} ms`,
  ) {
    this.unsubscribe = registry.subscribe((event) => {
      if (event.kind === 'start') this.onStart(event);
    });
  }

  violations(): readonly SafetyViolation[] {
    return this.violationList;
  }

  stop(): void {
    this.unsubscribe();
  }

  result(): InvariantResult {
    const lines = this.violationList.map(
      (v) => `${this.describeTime(v.at)}: ${v.workload} running on ${v.nodes.join(' and ')}`,
    );
    return result(
      'safety',
      this.starts,
      lines,
      lines.length === 0
        ? `${this.starts} starts of exclusive workloads, never two copies at once`
        : `${lines.length} of ${this.starts} starts made an exclusive workload run twice`,
    );
  }

  private onStart(event: RunStart): void {
    if (!event.exclusive) return;
    this.starts++;
    const running = this.registry.runningOn(event.workload).map((p) => p.node);
    if (running.length > 1) {
      this.violationList.push({ workload: event.workload, at: event.at, nodes: running.sort() });
    }
  }
}
