import type { LinkParams } from '../net/link-model.js';
import type { FaultEvent, FaultKind } from './sim-cluster-options.js';

/** Every fault a scenario injected, with its time (performance.now, never a node's skewed clock). */
export class FaultLog {
  private readonly events: FaultEvent[] = [];
  private readonly listeners = new Set<(event: FaultEvent) => void>();

  record(kind: FaultKind, nodes: string[], detail: string): void {
    const event: FaultEvent = { kind, at: performance.now(), nodes, detail };
    this.events.push(event);
    for (const listener of this.listeners) listener(event);
  }

  all(): readonly FaultEvent[] {
    return this.events;
  }

  onFault(listener: (event: FaultEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export function describeLink(params: Partial<LinkParams>): string {
  const parts: string[] = [];
  if (params.latencyMs !== undefined) parts.push(`latency ${params.latencyMs} ms`);
  if (params.jitterMs !== undefined) parts.push(`jitter ${params.jitterMs} ms`);
  if (params.lossPct !== undefined) parts.push(`loss ${params.lossPct}%`);
  return parts.join(', ');
}

/** "n1..n10, n12": node names with consecutive runs folded, for timeline lines. */
export function compactNames(names: readonly string[]): string {
  const numbered = names.map((name) => ({ name, n: /^n(\d+)$/.exec(name)?.[1] }));
  if (numbered.some((x) => x.n === undefined)) return names.join(', ');
  const nums = numbered.map((x) => Number(x.n)).sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < nums.length; ) {
    let j = i;
    while (j + 1 < nums.length && nums[j + 1] === (nums[j] as number) + 1) j++;
    parts.push(
      j - i >= 2
        ? `n${nums[i]}..n${nums[j]}`
        : nums
            .slice(i, j + 1)
            .map((x) => `n${x}`)
            .join(', '),
    );
    i = j + 1;
  }
  return parts.join(', ');
}
