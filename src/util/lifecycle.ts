/**
 * One lifecycle for the agent's parts (docs/architecture.md, "Lifecycle"),
 * after js-libp2p's `Startable`: parts start in the order given and stop in
 * the reverse order; a part that fails to start makes the ones already
 * started stop again (in reverse) before the error is rethrown, so a failed
 * start leaves nothing running (no WireGuard interface, no listener, no
 * timer keeping the process alive).
 */

/** Anything with a start and a stop; both may be synchronous. */
export interface Startable {
  start(): void | Promise<void>;
  stop(): void | Promise<void>;
}

export interface LifecyclePart {
  /** For logs: which part failed. */
  name: string;
  part: Startable;
  /** The agent works without it: a failed start is reported, and the rest starts. */
  optional?: boolean;
}

export type LifecycleErrorHandler = (name: string, phase: 'start' | 'stop', err: unknown) => void;

export class Lifecycle {
  private readonly parts: readonly LifecyclePart[];
  private readonly onError: LifecycleErrorHandler;
  /** The parts started, in start order; what `stop` undoes. */
  private started: LifecyclePart[] = [];

  constructor(parts: readonly LifecyclePart[], onError: LifecycleErrorHandler) {
    this.parts = parts;
    this.onError = onError;
  }

  get running(): boolean {
    return this.started.length > 0;
  }

  /** Starts every part in order; on a required part's failure stops what started, then throws. */
  async start(): Promise<void> {
    if (this.running) return;
    for (const entry of this.parts) {
      try {
        await entry.part.start();
      } catch (err) {
        if (entry.optional === true) {
          this.onError(entry.name, 'start', err);
          continue;
        }
        await this.stop();
        throw err;
      }
      this.started.push(entry);
    }
  }

  /** Stops the started parts in reverse order; a failure is reported and the others still stop. */
  async stop(): Promise<void> {
    const started = this.started;
    this.started = [];
    for (const entry of [...started].reverse()) {
      try {
        await entry.part.stop();
      } catch (err) {
        this.onError(entry.name, 'stop', err);
      }
    }
  }
}
