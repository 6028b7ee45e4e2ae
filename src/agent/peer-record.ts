import type { Logger } from 'pino';
import type { ObservedView } from '../state/observed-view.js';

export interface PeerRecordOptions {
  nodeId: string;
  observed: ObservedView;
  logger: Logger;
  /** The enrolled nodes this node has an open connection to now (node ids). */
  connectedNodes: () => string[];
  /** Calls `listener` whenever a connection opens or closes; returns the unsubscribe. */
  onConnectionsChange: (listener: () => void) => () => void;
  /** Quiet time after the last connection event before the set is recorded. */
  settleMs?: number;
  /** Recorded at least this often anyway (bounds the delay under connections that never settle). */
  refreshMs?: number;
  now?: () => number;
}

/**
 * Keeps this node's `peers` in its observed report equal to the enrolled
 * nodes it is connected to (docs/protocol.md, "observed"), so that any
 * node's API can show the cluster's connection graph, not only its own
 * connections. A connection event starts a quiet period (`settleMs`, reset
 * by each further event): a flapping connection is recorded once it
 * settles, or at the next `refreshMs` check, never on every flap. An
 * unchanged set writes nothing (the report is one value rewritten whole).
 */
export class PeerRecord {
  private readonly options: PeerRecordOptions;
  private settleTimer: NodeJS.Timeout | null = null;
  private refreshTimer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(options: PeerRecordOptions) {
    this.options = options;
  }

  start(): void {
    if (this.refreshTimer !== null) return;
    this.unsubscribe = this.options.onConnectionsChange(() => this.schedule());
    this.refreshTimer = setInterval(() => this.record(), this.options.refreshMs ?? 30_000);
    this.refreshTimer.unref();
    this.record();
  }

  stop(): void {
    if (this.refreshTimer !== null) clearInterval(this.refreshTimer);
    if (this.settleTimer !== null) clearTimeout(this.settleTimer);
    this.refreshTimer = null;
    this.settleTimer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  private schedule(): void {
    if (this.refreshTimer === null) return;
    if (this.settleTimer !== null) clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      this.settleTimer = null;
      this.record();
    }, this.options.settleMs ?? 2000);
    this.settleTimer.unref();
  }

  /** Writes the current set if it differs from the recorded one. */
  record(): void {
    const { observed, nodeId, logger } = this.options;
    try {
      const peers = this.options.connectedNodes().filter((id) => id !== nodeId);
      if (observed.setPeers(nodeId, peers, (this.options.now ?? Date.now)())) {
        logger.debug({ peers: peers.length }, 'recorded the nodes this node is connected to');
      }
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'could not record the nodes this node is connected to');
    }
  }
}
