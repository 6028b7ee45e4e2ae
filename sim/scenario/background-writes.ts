import type { SimCluster } from '../harness/sim-cluster.js';

export interface WriterPlan {
  n: number;
  /** Writes per second. */
  rate: number;
  /** The nodes to write on; each write goes to a random one of them that is running. */
  nodes: () => string[];
  pick: (candidates: string[]) => string;
}

export interface WriterOutcome {
  acked: number;
  /** Writes that found none of their nodes running (not made). */
  skipped: number;
  ms: number;
}

/**
 * A steady stream of `n` acknowledged writes at `rate` per second, paced on
 * absolute times so that a busy event loop delays writes without lowering
 * the total (late writes catch up in bursts, as a client queue would).
 */
export function startWriter(
  cluster: SimCluster,
  plan: WriterPlan,
): { done: Promise<WriterOutcome>; cancel(): void } {
  let cancelled = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const started = performance.now();
  const intervalMs = 1000 / plan.rate;
  const done = new Promise<WriterOutcome>((resolve) => {
    let made = 0;
    let acked = 0;
    let skipped = 0;
    const finish = () => resolve({ acked, skipped, ms: performance.now() - started });
    const tick = () => {
      if (cancelled) return finish();
      const due = Math.min(plan.n, Math.floor((performance.now() - started) / intervalMs) + 1);
      while (made < due) {
        made++;
        const candidates = plan.nodes().filter((name) => cluster.isUp(name));
        if (candidates.length === 0) {
          skipped++;
          continue;
        }
        try {
          cluster.write(plan.pick(candidates));
          acked++;
        } catch {
          // The node went down between the check and the write: not acknowledged, not counted.
          skipped++;
        }
      }
      if (made >= plan.n) return finish();
      const next = started + made * intervalMs;
      timer = setTimeout(tick, Math.max(0, next - performance.now()));
    };
    wake = tick;
    tick();
  });
  return {
    done,
    cancel() {
      cancelled = true;
      if (timer !== undefined) {
        clearTimeout(timer);
        timer = undefined;
        wake?.();
      }
    },
  };
}
