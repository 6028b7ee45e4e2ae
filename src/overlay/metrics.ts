import type { Counter, Gauge, Registry } from 'prom-client';
import { counterIn, gaugeIn } from '../util/metrics.js';

/**
 * Overlay metrics, labelled by interface so several managers (one per node in
 * a test or simulation process) can share a registry.
 */
export interface OverlayMetrics {
  /** Every `wg set` the manager runs: a second sync of an unchanged node set adds none. */
  wgSetCalls: Counter<'interface'>;
  peerChanges: Counter<'interface' | 'op'>;
  syncErrors: Counter<'interface'>;
  userspaceExits: Counter<'interface'>;
  peers: Gauge<'interface'>;
}

export function overlayMetrics(registry: Registry): OverlayMetrics {
  return {
    wgSetCalls: counterIn(registry, {
      name: 'silo_overlay_wg_set_calls_total',
      help: '`wg set` invocations by the overlay manager',
      labelNames: ['interface'],
    }),
    peerChanges: counterIn(registry, {
      name: 'silo_overlay_peer_changes_total',
      help: 'WireGuard peers added, updated or removed by sync',
      labelNames: ['interface', 'op'],
    }),
    syncErrors: counterIn(registry, {
      name: 'silo_overlay_sync_errors_total',
      help: 'Peer changes that failed during sync (retried at the next sync)',
      labelNames: ['interface'],
    }),
    userspaceExits: counterIn(registry, {
      name: 'silo_overlay_userspace_exits_total',
      help: 'Unexpected exits of the supervised wireguard-go process',
      labelNames: ['interface'],
    }),
    peers: gaugeIn(registry, {
      name: 'silo_overlay_peers',
      help: 'WireGuard peers the interface should have after the last sync',
      labelNames: ['interface'],
    }),
  };
}
