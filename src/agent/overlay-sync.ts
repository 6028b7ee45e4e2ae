import type { Logger } from 'pino';
import type { OverlayManager } from '../overlay/overlay-manager.js';
import type { EnrollmentTrust } from './trust.js';

export interface OverlaySyncOptions {
  overlay: OverlayManager;
  trust: EnrollmentTrust;
  logger: Logger;
  /** Level-triggered resync period, also the retry period after a failed sync. */
  intervalMs?: number;
}

/**
 * Keeps the WireGuard peers equal to the active enrolled nodes: on every
 * change of the active set and every `intervalMs` (which also repairs an
 * interface deleted or a wireguard-go that died behind our back). Syncs never
 * overlap; a change during a sync schedules one more.
 */
export class OverlaySync {
  private readonly overlay: OverlayManager;
  private readonly trust: EnrollmentTrust;
  private readonly logger: Logger;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private unsubscribe: (() => void) | null = null;

  constructor(options: OverlaySyncOptions) {
    this.overlay = options.overlay;
    this.trust = options.trust;
    this.logger = options.logger.child({ component: 'overlay-sync' });
    this.intervalMs = options.intervalMs ?? 10_000;
  }

  /** Brings the interface up and applies the current active set once. */
  async start(): Promise<void> {
    await this.overlay.up();
    await this.syncNow();
    this.unsubscribe = this.trust.onActiveChange(() => this.schedule());
    this.timer = setInterval(() => this.schedule(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
    await this.overlay.down();
  }

  private schedule(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.syncNow().finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    });
  }

  private async syncNow(): Promise<void> {
    try {
      const result = await this.overlay.sync(this.trust.active().active);
      if (result.added.length + result.updated.length + result.removed.length > 0) {
        this.logger.info(
          { added: result.added.length, updated: result.updated.length, removed: result.removed.length },
          'overlay peers updated',
        );
      }
    } catch (err) {
      this.logger.error({ err }, 'overlay sync failed; retrying at the next interval');
    }
  }
}
