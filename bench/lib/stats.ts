/** Nearest-rank percentile of an ascending array (NaN when empty). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, i)] as number;
}

export interface Distribution {
  count: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

export function distribution(values: readonly number[]): Distribution {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => (sorted.length === 0 ? null : round(percentile(sorted, p)));
  return {
    count: sorted.length,
    p50: at(50),
    p99: at(99),
    max: sorted.length === 0 ? null : round(sorted.at(-1) as number),
  };
}

export function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every `everyMs` until true (returns the elapsed ms) or `timeoutMs` passes (returns null). */
export async function waitUntil(
  condition: () => boolean,
  timeoutMs: number,
  everyMs = 10,
): Promise<number | null> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > timeoutMs) return null;
    await sleep(everyMs);
  }
  return performance.now() - started;
}
