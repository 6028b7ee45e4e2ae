import type { FailureDetector } from './failure-detector.js';
import type { SwimMembership } from './swim-transport.js';

export interface SwimDetectorFeedOptions {
  swim: Pick<SwimMembership, 'view' | 'onChange'>;
  detector: Pick<FailureDetector, 'vouch'>;
  /** How often every member SWIM holds alive is vouched for, ms: well under gossip.suspect_after. */
  intervalMs: number;
}

/**
 * With `services.lease = "swim"` heartbeats go out rarely (they carry only
 * digests and addresses, docs/membership.md), so the heartbeat failure
 * detector would find everyone silent. Everything that still reads it
 * (`silo nodes`, the witnesses view, redial, mesh repair, catch-up) gets
 * SWIM's verdict instead: every member SWIM holds alive is vouched for at
 * once when it becomes alive and then every `intervalMs`; a member SWIM
 * suspects or declares dead is no longer vouched for and ages out of the
 * detector by suspect_after and dead_after.
 */
export class SwimDetectorFeed {
  private readonly options: SwimDetectorFeedOptions;
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(options: SwimDetectorFeedOptions) {
    if (!(Number.isFinite(options.intervalMs) && options.intervalMs > 0))
      throw new RangeError(`intervalMs must be > 0, got ${options.intervalMs}`);
    this.options = options;
  }

  start(): void {
    if (this.timer !== null) return;
    this.unsubscribe = this.options.swim.onChange((update) => {
      if (update.state === 'alive') this.options.detector.vouch(update.node);
    });
    this.vouchAlive();
    this.timer = setInterval(() => this.vouchAlive(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  private vouchAlive(): void {
    for (const member of this.options.swim.view()) {
      if (member.state === 'alive') this.options.detector.vouch(member.node);
    }
  }
}
