import type { ConnectionGater, PeerId } from '@libp2p/interface';

/**
 * Peers this node refuses to talk to: no dials to them, no connections from
 * them. Tests and the simulator partition nodes with it (block + close the
 * existing connections); it is checked by a connection gater so that
 * libp2p itself enforces it.
 */
export class PeerBlocklist {
  private readonly blocked = new Set<string>();

  add(peerId: string): void {
    this.blocked.add(peerId);
  }

  delete(peerId: string): boolean {
    return this.blocked.delete(peerId);
  }

  has(peerId: string): boolean {
    return this.blocked.has(peerId);
  }

  clear(): void {
    this.blocked.clear();
  }

  list(): string[] {
    return [...this.blocked];
  }

  /** A gater that denies blocked peers at every stage where the peer id is known. */
  gater(): ConnectionGater {
    const denied = (peer: PeerId): boolean => this.blocked.has(peer.toString());
    return {
      denyDialPeer: denied,
      denyInboundEncryptedConnection: denied,
      denyOutboundEncryptedConnection: denied,
      denyInboundUpgradedConnection: denied,
      denyOutboundUpgradedConnection: denied,
    };
  }
}

type GaterMethod = keyof ConnectionGater;

const GATER_METHODS: GaterMethod[] = [
  'denyDialPeer',
  'denyDialMultiaddr',
  'denyInboundConnection',
  'denyOutboundConnection',
  'denyInboundEncryptedConnection',
  'denyOutboundEncryptedConnection',
  'denyInboundUpgradedConnection',
  'denyOutboundUpgradedConnection',
  'denyInboundRelayReservation',
  'denyOutboundRelayedConnection',
  'denyInboundRelayedConnection',
];

/**
 * One gater that denies whatever any of `gaters` denies, asking them in
 * order. `filterMultiaddrForPeer` keeps an address only if every gater keeps it.
 */
export function composeGaters(...gaters: ConnectionGater[]): ConnectionGater {
  const composed: Record<string, (...args: unknown[]) => Promise<boolean>> = {};
  for (const method of GATER_METHODS) {
    // Bound, because a gater may be a class instance whose methods use `this`.
    const impls = gaters
      .map((g) => (g[method] as ((...args: unknown[]) => boolean | Promise<boolean>) | undefined)?.bind(g))
      .filter((f) => f !== undefined);
    if (impls.length === 0) continue;
    composed[method] = async (...args: unknown[]) => {
      for (const impl of impls) if (await impl(...args)) return true;
      return false;
    };
  }
  const filters = gaters.map((g) => g.filterMultiaddrForPeer?.bind(g)).filter((f) => f !== undefined);
  if (filters.length > 0) {
    composed.filterMultiaddrForPeer = async (...args: unknown[]) => {
      for (const f of filters)
        if (!(await (f as (...a: unknown[]) => boolean | Promise<boolean>)(...args))) return false;
      return true;
    };
  }
  return composed as ConnectionGater;
}
