import type { Logger } from 'pino';
import type { OverlayManager } from '../overlay/overlay-manager.js';
import type { EnrollmentTrust } from './trust.js';

/** Which service addresses each peer holds (src/agent/service-network.ts). */
export interface ServiceRouteSource {
  peerRoutes(): ReadonlyMap<string, readonly string[]>;
  onChange(listener: () => void): () => void;
}

export interface OverlaySyncOptions {
  overlay: OverlayManager;
  trust: EnrollmentTrust;
  /** Service addresses routed to their holders; absent: peers carry their overlay IP only. */
  serviceRoutes?: ServiceRouteSource;
  logger: Logger;
  /** Level-triggered resync period, also the retry period after a failed sync. */
  intervalMs?: number;
}

/**
 * Keeps the WireGuard peers equal to the active enrolled nodes, each with
 * the service addresses it holds (docs/services.md, "Service addresses"): on
 * every change of the active set or of the service routes and every `intervalMs` (which also repairs an
 * interface deleted or a wireguard-go that died behind our back). Syncs never
 * overlap; a change during a sync schedules one more.
 */
export class OverlaySync {
  private readonly overlay: OverlayManager;
  private readonly trust: EnrollmentTrust;
  private readonly serviceRoutes: ServiceRouteSource | undefined;
  private readonly logger: Logger;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private unsubscribe: (() => void) | null = null;
  private unsubscribeRoutes: (() => void) | null = null;
  /** The service routes of the last successful sync, as a comparable string. */
  private appliedRoutes = '';

  constructor(options: OverlaySyncOptions) {
    this.overlay = options.overlay;
    this.trust = options.trust;
    this.serviceRoutes = options.serviceRoutes;
    this.logger = options.logger.child({ component: 'overlay-sync' });
    this.intervalMs = options.intervalMs ?? 10_000;
  }

  /** Brings the interface up and applies the current active set once. */
  async start(): Promise<void> {
    await this.overlay.up();
    await this.syncNow();
    this.unsubscribe = this.trust.onActiveChange(() => this.schedule());
    this.unsubscribeRoutes = this.serviceRoutes?.onChange(() => this.onRoutesChange()) ?? null;
    this.timer = setInterval(() => this.schedule(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribeRoutes?.();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
    await this.overlay.down();
  }

  /**
   * The route source fires on every change of the workloads and observed
   * documents (each status report); a sync spawns `wg`, so it runs only when
   * the routes themselves differ from what was applied.
   */
  private onRoutesChange(): void {
    const routes = this.serviceRoutes?.peerRoutes();
    if (routes !== undefined && routesKey(routes) === this.appliedRoutes) return;
    this.schedule();
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
      const routes = this.serviceRoutes?.peerRoutes();
      const nodes = this.trust.active().active.map((node) => {
        const serviceIps = routes?.get(node.nodeId);
        return serviceIps === undefined ? node : { ...node, serviceIps };
      });
      const result = await this.overlay.sync(nodes);
      this.appliedRoutes = routes === undefined ? '' : routesKey(routes);
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

function routesKey(routes: ReadonlyMap<string, readonly string[]>): string {
  return JSON.stringify([...routes].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
