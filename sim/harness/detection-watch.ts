import type { FaultEvent } from './sim-cluster.js';

/** What the watcher needs of the cluster: crashes as they happen, who runs, and each running agent's SWIM view. */
export interface DetectionCluster {
  onFault(listener: (event: FaultEvent) => void): () => void;
  live(): string[];
  /** SWIM's state of `node` in `viewer`'s view; null when the viewer runs no SWIM or does not know it. */
  swimStateOf(viewer: string, node: string): 'alive' | 'suspect' | 'dead' | null;
}

export interface Detection {
  node: string;
  /** From the crash until some running agent first held it suspect or dead, ms (null: never within the watch). */
  firstSuspectMs: number | null;
  /** From the crash until every running agent held it dead, ms (null: not within the watch). */
  deadEverywhereMs: number | null;
}

export interface DetectionWatchOptions {
  pollMs?: number;
  /** Give up on a crash after this long, ms (default 120 s). */
  giveUpMs?: number;
  now?: () => number;
  onDetected?: (detection: Detection) => void;
}

/**
 * How long SWIM takes to find a crash with real agents (docs/benchmarks.md,
 * "Scale": the model's "time to detect a dead node" beside the agents'):
 * after every crash it polls each running agent's SWIM view until all of
 * them hold the crashed node dead, or it comes back, or the watch gives up.
 */
export class DetectionWatch {
  private readonly cluster: DetectionCluster;
  private readonly pollMs: number;
  private readonly giveUpMs: number;
  private readonly now: () => number;
  private readonly onDetected: ((detection: Detection) => void) | undefined;
  private readonly watching = new Map<string, { since: number; firstSuspect: number | null }>();
  private readonly done: Detection[] = [];
  private unsubscribe: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(cluster: DetectionCluster, options: DetectionWatchOptions = {}) {
    this.cluster = cluster;
    this.pollMs = options.pollMs ?? 50;
    this.giveUpMs = options.giveUpMs ?? 120_000;
    this.now = options.now ?? (() => performance.now());
    this.onDetected = options.onDetected;
  }

  start(): void {
    this.unsubscribe ??= this.cluster.onFault((event) => {
      if (event.kind === 'crash')
        for (const node of event.nodes) this.watching.set(node, { since: event.at, firstSuspect: null });
      if (event.kind === 'restart') for (const node of event.nodes) this.finish(node, null);
    });
    this.timer ??= setInterval(() => this.poll(), this.pollMs);
    this.timer.unref();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const node of [...this.watching.keys()]) this.finish(node, null);
  }

  detections(): readonly Detection[] {
    return this.done;
  }

  private poll(): void {
    const now = this.now();
    const viewers = this.cluster.live();
    for (const [node, watch] of this.watching) {
      const states = viewers.map((viewer) => this.cluster.swimStateOf(viewer, node));
      if (watch.firstSuspect === null && states.some((s) => s === 'suspect' || s === 'dead'))
        watch.firstSuspect = now;
      if (viewers.length > 0 && states.every((s) => s === 'dead')) this.finish(node, now);
      else if (now - watch.since > this.giveUpMs) this.finish(node, null);
    }
  }

  private finish(node: string, deadEverywhereAt: number | null): void {
    const watch = this.watching.get(node);
    if (watch === undefined) return;
    this.watching.delete(node);
    const detection: Detection = {
      node,
      firstSuspectMs: watch.firstSuspect === null ? null : Math.round(watch.firstSuspect - watch.since),
      deadEverywhereMs: deadEverywhereAt === null ? null : Math.round(deadEverywhereAt - watch.since),
    };
    this.done.push(detection);
    this.onDetected?.(detection);
  }
}
