import type { SimCluster } from '../sim-cluster.js';
import { type InvariantResult, result } from './types.js';

export interface ConvergenceOutcome {
  ok: boolean;
  /** Time from the start of the wait until every running agent had equal digests (or the bound). */
  ms: number;
  /** Agents grouped by digests at the end of the wait (one group when converged). */
  groups: string[][];
  /** Live connections between agents of different groups at the end (0: the groups cannot talk). */
  crossLinks: number;
}

const POLL_MS = 20;

/**
 * Waits until every running agent has equal digests of all three documents
 * (state vector + delete set, so equal digests = equal content), or
 * `withinMs` passes.
 */
export async function awaitConvergence(cluster: SimCluster, withinMs: number): Promise<ConvergenceOutcome> {
  const started = performance.now();
  while (true) {
    const groups = cluster.digestGroups();
    const elapsed = performance.now() - started;
    if (groups.length <= 1) return { ok: true, ms: elapsed, groups, crossLinks: 0 };
    if (elapsed >= withinMs)
      return { ok: false, ms: elapsed, groups, crossLinks: crossLinks(cluster, groups) };
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function crossLinks(cluster: SimCluster, groups: string[][]): number {
  const groupOf = new Map<string, number>();
  groups.forEach((group, i) => {
    for (const name of group) groupOf.set(name, i);
  });
  return cluster.net
    .liveConnections()
    .filter((c) => groupOf.get(c.dialer) !== undefined && groupOf.get(c.dialer) !== groupOf.get(c.listener))
    .length;
}

/** Convergence checks made during a run (each `wait until converged` and the final one). */
export class ConvergenceLog {
  private readonly outcomes: { label: string; outcome: ConvergenceOutcome; withinMs: number }[] = [];

  record(label: string, outcome: ConvergenceOutcome, withinMs: number): void {
    this.outcomes.push({ label, outcome, withinMs });
  }

  /** The longest successful convergence, ms (null when none). */
  slowestMs(): number | null {
    const ok = this.outcomes.filter((o) => o.outcome.ok).map((o) => o.outcome.ms);
    return ok.length === 0 ? null : Math.max(...ok);
  }

  result(): InvariantResult {
    const failures = this.outcomes
      .filter((o) => !o.outcome.ok)
      .map(
        (o) =>
          `${o.label}: not converged within ${o.withinMs} ms; digest groups ${o.outcome.groups.map((g) => g.length).join('/')} (e.g. ${o.outcome.groups
            .slice(0, 3)
            .map((g) => g.slice(0, 4).join(','))
            .join(' | ')}); ${o.outcome.crossLinks} connections between groups`,
      );
    const times = this.outcomes.map((o) => `${o.label} ${Math.round(o.outcome.ms)} ms`).join(', ');
    return result(
      'convergence',
      this.outcomes.length,
      failures,
      failures.length === 0
        ? `every running agent reached equal digests (${times || 'no check made'})`
        : `${failures.length} of ${this.outcomes.length} convergence checks failed`,
    );
  }
}
