/**
 * `record.endpoints` mixes two kinds of address (docs/protocol.md,
 * "Enrollment records, certificates and revocations"):
 * - `wg://<host>:<port>`: the node's WireGuard endpoint (host = IPv4, a DNS
 *   name, or [IPv6]); the first such entry is the one used;
 * - entries starting with "/": libp2p multiaddrs, dialled by the gossip layer.
 * Anything else is ignored by both.
 */

const WG_SCHEME = 'wg://';
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;

export interface WireguardEndpoint {
  host: string;
  port: number;
  /** host:port as `wg set ... endpoint` takes it. */
  hostPort: string;
}

/** Parse a `wg://host:port` entry; null when the entry is not a (valid) WireGuard endpoint. */
export function parseWireguardEndpoint(entry: string): WireguardEndpoint | null {
  if (!entry.startsWith(WG_SCHEME)) return null;
  const match = HOST_PORT.exec(entry.slice(WG_SCHEME.length));
  if (!match) return null;
  const port = Number(match[2]);
  if (port < 1 || port > 65535) return null;
  return { host: match[1]!, port, hostPort: `${match[1]}:${port}` };
}

export function formatWireguardEndpoint(host: string, port: number): string {
  const entry = `${WG_SCHEME}${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
  if (parseWireguardEndpoint(entry) === null) throw new Error(`invalid WireGuard endpoint ${host}:${port}`);
  return entry;
}

/** The WireGuard endpoint of an enrollment record: its first valid `wg://` entry, or null. */
export function wireguardEndpointOf(record: { endpoints: readonly string[] }): WireguardEndpoint | null {
  for (const entry of record.endpoints) {
    const endpoint = parseWireguardEndpoint(entry);
    if (endpoint !== null) return endpoint;
  }
  return null;
}

/** The libp2p multiaddr entries of an enrollment record. */
export function libp2pAddressesOf(record: { endpoints: readonly string[] }): string[] {
  return record.endpoints.filter((entry) => entry.startsWith('/'));
}
