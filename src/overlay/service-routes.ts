import type { ObservedStatus, Phase } from '../state/schemas.js';

/**
 * Routing from state (docs/services.md, "Service addresses"): which node
 * holds each service address, computed from the converged documents alone
 * (no I/O, no clock), so that every node routes an address to the same peer.
 * WireGuard's cryptokey routing then does the rest: the holder's peer entry
 * carries the address's /32 in AllowedIPs, so packets to the address go to
 * the holder only, and packets *from* the address are accepted from the
 * holder only. When the holder changes, the /32 leaves the old holder's
 * entry and joins the new one's on every node.
 */

/** Phases in which a node has (or is about to have) the service bound to its address. */
const HOLDING: ReadonlySet<Phase> = new Set<Phase>(['starting', 'running', 'stopping']);
/** Preference between two entries of equal epoch: the one serving, then the one coming up. */
const PHASE_RANK: Partial<Record<Phase, number>> = { running: 3, starting: 2, stopping: 1 };

export interface ServiceRoutesInput {
  /** Workload name → its service address (WorkloadsView.serviceAddresses()). */
  addresses: ReadonlyMap<string, string>;
  /** Observed document: node id → workload → status. */
  observed: ReadonlyMap<string, ReadonlyMap<string, ObservedStatus>>;
  /** Nodes that may hold an address (active enrolled members): a revoked node's entries route nothing. */
  members: ReadonlySet<string>;
}

export interface ServiceHolder {
  workload: string;
  address: string;
  nodeId: string;
}

/**
 * The holder of each service address: among the member nodes whose entry
 * for the workload is `starting`, `running` or `stopping`, the one with the
 * highest lease epoch (the fencing token of docs/placement.md: the later
 * owner), then the better phase (running > starting > stopping), then the
 * smallest node id. At most one holder per address by construction; an
 * address nobody holds is absent.
 */
export function serviceHolders(input: ServiceRoutesInput): Map<string, ServiceHolder> {
  const holders = new Map<string, ServiceHolder>();
  for (const [workload, address] of [...input.addresses].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    let best: { nodeId: string; status: ObservedStatus } | undefined;
    for (const [nodeId, statuses] of input.observed) {
      if (!input.members.has(nodeId)) continue;
      const status = statuses.get(workload);
      if (status === undefined || !HOLDING.has(status.phase)) continue;
      if (best === undefined || better(nodeId, status, best.nodeId, best.status)) best = { nodeId, status };
    }
    if (best !== undefined) holders.set(address, { workload, address, nodeId: best.nodeId });
  }
  return holders;
}

function better(nodeId: string, status: ObservedStatus, otherId: string, other: ObservedStatus): boolean {
  const epoch = status.epoch ?? 0;
  const otherEpoch = other.epoch ?? 0;
  if (epoch !== otherEpoch) return epoch > otherEpoch;
  const rank = PHASE_RANK[status.phase] ?? 0;
  const otherRank = PHASE_RANK[other.phase] ?? 0;
  if (rank !== otherRank) return rank > otherRank;
  return nodeId < otherId;
}

/**
 * The extra AllowedIPs of each peer as `selfId` sees it: node id → sorted
 * `<address>/32` list. Addresses this node holds itself are not routed to
 * any peer (they live in the local service namespace).
 */
export function peerServiceRoutes(
  holders: ReadonlyMap<string, ServiceHolder>,
  selfId: string,
): Map<string, string[]> {
  const routes = new Map<string, string[]>();
  for (const holder of holders.values()) {
    if (holder.nodeId === selfId) continue;
    const list = routes.get(holder.nodeId) ?? [];
    list.push(`${holder.address}/32`);
    routes.set(holder.nodeId, list);
  }
  for (const list of routes.values()) list.sort();
  return routes;
}
