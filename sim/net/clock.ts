/**
 * Skewable wall clock for simulated nodes. Many agents share one process and
 * one real clock; a skew per node lets a scenario give each agent a clock that
 * is ahead or behind (the agent's failure detector, leases and timestamps take
 * an injectable `now`). Skew is a fixed offset that can be changed at any time
 * (a step, like an NTP correction); drift is not modelled.
 */
export class SimClock {
  private readonly skews = new Map<string, number>();

  constructor(private readonly base: () => number = Date.now) {}

  /** Set `node`'s offset from the real clock, in ms (positive = ahead). */
  setSkew(node: string, skewMs: number): void {
    if (!Number.isFinite(skewMs))
      throw new RangeError(`setSkew(${node}): skew must be a finite number, got ${skewMs}`);
    if (skewMs === 0) this.skews.delete(node);
    else this.skews.set(node, skewMs);
  }

  skew(node: string): number {
    return this.skews.get(node) ?? 0;
  }

  /** `node`'s idea of the time: Date.now() plus its skew, in ms since the epoch. */
  now(node: string): number {
    return this.base() + this.skew(node);
  }

  /** A `now` function to inject into one node's components; it follows later setSkew calls. */
  clockFor(node: string): () => number {
    return () => this.now(node);
  }

  /** Every node back to the real clock. */
  reset(): void {
    this.skews.clear();
  }
}
