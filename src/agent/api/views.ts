import type { Liveness, MemberView } from '../../gossip/index.js';
import { roleOf } from '../../identity/role.js';
import { quorumSize } from '../../ownership/witness-config.js';
import type { LeaseSummary } from '../../reconciler/loop-status.js';
import { ownershipClass } from '../../reconciler/placement/types.js';
import type { DocName } from '../../state/names.js';
import type {
  DrainFlag,
  EnrollmentRole,
  ObservedStatus,
  Phase,
  SignedEnrollment,
  WorkloadSpec,
} from '../../state/schemas.js';
import type { NodeAgent } from '../node-agent.js';
import type { PeerDigests } from '../peer-digests.js';

/**
 * The JSON shapes of the control API's listings (docs/api.md), built from
 * the agent's typed views. Pure reads: nothing here writes a document.
 */

export interface NodeRow {
  nodeId: string;
  /** This is the node that answered. */
  self: boolean;
  peerId: string;
  overlayIp: string;
  endpoints: string[];
  capacity: SignedEnrollment['capacity'];
  labels: Record<string, string>;
  issuedAt: number;
  /**
   * Its enrollment role (docs/protocol.md, "Enrollment roles"): `client`
   * records are admitted but never placed nor counted for ownership.
   */
  role: EnrollmentRole;
  /** As this node's failure detector sees it; "unknown" until a heartbeat was heard. */
  liveness: Liveness | 'unknown';
  /** ms since the last heartbeat (0 for self, null when never heard). */
  lastSeenAgoMs: number | null;
  incarnation: number | null;
  draining: boolean;
  drain: DrainFlag | null;
  revoked: { revokedAt: number; reason: string } | null;
  /** Document digests from the node's latest heartbeat (our own for self). */
  digests: Record<DocName, string> | null;
  /** What SWIM membership says of the node (docs/membership.md); null when SWIM is off or has no view of it. */
  swim: { state: Liveness; incarnation: number } | null;
  /**
   * The enrolled nodes it is connected to, sorted: this agent's own open
   * connections for self, else what the node last recorded in its observed
   * report (`peers`); null when it recorded none (an older agent, or none yet).
   */
  peers: string[] | null;
}

export function nodeRows(
  agent: NodeAgent,
  peerDigests: PeerDigests | undefined,
  now = Date.now(),
): NodeRow[] {
  const members = new Map<string, MemberView>(agent.gossip.detector.view().map((m) => [m.nodeId, m]));
  const drainFlags = agent.enrollment.drainFlags();
  return agent.enrollment.list().map((record) => {
    const self = record.nodeId === agent.nodeId;
    const member = members.get(record.nodeId);
    const revocation = agent.enrollment.revocation(record.nodeId);
    // A revocation only counts against records issued at or before it (re-enrollment).
    const revoked =
      revocation && revocation.revokedAt >= record.issuedAt
        ? { revokedAt: revocation.revokedAt, reason: revocation.reason }
        : null;
    const drain = drainFlags.get(record.nodeId) ?? null;
    return {
      nodeId: record.nodeId,
      self,
      peerId: record.peerId,
      overlayIp: record.overlayIp,
      endpoints: record.endpoints,
      capacity: record.capacity,
      labels: record.labels,
      issuedAt: record.issuedAt,
      role: roleOf(record),
      liveness: self ? 'alive' : (member?.state ?? 'unknown'),
      lastSeenAgoMs: self ? 0 : member ? Math.max(0, now - member.lastSeenAt) : null,
      incarnation: self ? agent.gossip.incarnation : (member?.incarnation ?? null),
      draining: drain?.draining === true,
      drain,
      revoked,
      digests: self ? agent.state.digestsAll() : (peerDigests?.get(record.nodeId)?.digests ?? null),
      swim: swimOf(agent, record.nodeId, self),
      peers: self ? agent.connectedNodeIds() : (agent.observed.peersOf(record.nodeId)?.nodes ?? null),
    };
  });
}

function swimOf(agent: NodeAgent, nodeId: string, self: boolean): NodeRow['swim'] {
  const swim = agent.swim;
  if (!swim) return null;
  if (self) return { state: 'alive', incarnation: swim.incarnation };
  const seen = swim.stateOf(nodeId);
  return seen ? { state: seen.state, incarnation: seen.incarnation } : null;
}

export interface WitnessRow {
  nodeId: string;
  /** An active enrolled node (valid CA-signed record, not revoked) in this agent's document. */
  enrolled: boolean;
  /** As this node's failure detector sees it; `self` for the node that answered, `unknown` until heard. */
  liveness: Liveness | 'self' | 'unknown';
}

export interface WitnessesView {
  /** The witness configuration in force in this agent's enrollment document; null when there is none. */
  config: { version: number; witnesses: string[]; issuedAt: number } | null;
  /** One row per witness of `config`, in its (sorted) order. */
  witnesses: WitnessRow[];
}

export function witnessesView(agent: NodeAgent): WitnessesView {
  const record = agent.enrollment.witnessConfig();
  if (record === null) return { config: null, witnesses: [] };
  const members = new Map<string, MemberView>(agent.gossip.detector.view().map((m) => [m.nodeId, m]));
  const active = agent.trust
    ? agent.trust.active().byNodeId
    : new Set(
        agent.enrollment
          .list()
          .filter((r) => !agent.enrollment.isRevoked(r.nodeId))
          .map((r) => r.nodeId),
      );
  const witnesses = [...record.witnesses];
  return {
    config: { version: record.version, witnesses, issuedAt: record.issuedAt },
    witnesses: witnesses.map((nodeId) => ({
      nodeId,
      enrolled: active.has(nodeId),
      liveness: nodeId === agent.nodeId ? 'self' : (members.get(nodeId)?.state ?? 'unknown'),
    })),
  };
}

/** What `silo status` says about ownership (docs/cli.md): can exclusive workloads start and renew here? */
export interface OwnershipHealth {
  /** The liveness source placement reads ("acked-heartbeats", "local-detector", "swim"); null without a reconciler. */
  liveness: string | null;
  /** The witness configuration in force and how many of its witnesses this node sees alive (itself included). */
  witnesses: { version: number; total: number; alive: number; quorum: number; hasQuorum: boolean } | null;
  /** Exclusive workloads this node wants a lease for, and the ones whose lease it does not hold now. */
  leases: { wanted: number; held: number; notHeld: string[] } | null;
  /**
   * How long this node's witness still grants nothing after starting on an
   * existing store (docs/placement.md, rule W6), ms; 0 when it grants, null
   * without a reconciler. Absent from older agents' answers.
   */
  witnessQuietMs?: number | null;
}

export function ownershipHealth(agent: NodeAgent): OwnershipHealth {
  const view = witnessesView(agent);
  const witnesses =
    view.config === null
      ? null
      : (() => {
          const total = view.witnesses.length;
          const alive = view.witnesses.filter(
            (w) => w.enrolled && (w.liveness === 'self' || w.liveness === 'alive'),
          ).length;
          const quorum = quorumSize({ version: view.config.version, witnesses: view.config.witnesses });
          return { version: view.config.version, total, alive, quorum, hasQuorum: alive >= quorum };
        })();
  const reconciler = agent.reconciler;
  if (!reconciler) return { liveness: null, witnesses, leases: null, witnessQuietMs: null };
  const wanted = reconciler.leases.wanted();
  const notHeld = wanted.filter((name) => !reconciler.leases.status(name).held).sort();
  return {
    liveness: reconciler.livenessKind,
    witnesses,
    leases: { wanted: wanted.length, held: wanted.length - notHeld.length, notHeld },
    witnessQuietMs: reconciler.witness.quietRemainingMs(),
  };
}

/** How ReconcileLoop.status() writes an assignment that placement left pending. */
const PENDING = 'pending: ';

/** Phases in which a node holds (runs or is bringing up or down) a workload. */
const HOLDING: readonly Phase[] = ['running', 'starting', 'pulling', 'stopping'];
/** Which status speaks for a workload when several nodes report one: the lowest rank wins. */
const RANK: Record<Phase, number> = {
  running: 0,
  starting: 1,
  pulling: 2,
  stopping: 3,
  failed: 4,
  released: 5,
  pending: 6,
};

export interface WorkloadRow {
  name: string;
  spec: WorkloadSpec;
  /** The node running (or starting, or stopping) it; null when none does. */
  holder: string | null;
  /** The most telling phase reported by any node; "pending" when no node reported one. */
  phase: Phase;
  restarts: number;
  /**
   * Why, from the most telling node report; when no node holds it and no
   * report says why, placement's reason for leaving it pending ("fits no
   * node: ...", "no node matches constraints ...").
   */
  reason: string | null;
  /**
   * Where this agent's last placement puts it: a node id, or "pending:
   * <reason>"; null without a reconciler (placement is the same pure function
   * of the converged documents on every node).
   */
  placement: string | null;
  /** Every node's report, by node id. */
  statuses: Record<string, ObservedStatus>;
  /** The holder's lease epoch (ballot), exclusive workloads only. */
  epoch: number | null;
  /**
   * `network = "overlay"`: its service address and DNS name
   * (docs/services.md, "Service addresses"); null otherwise, and while it
   * has no address yet. Absent from older agents.
   */
  address?: string | null;
  dnsName?: string | null;
  /**
   * This agent's own witness lease of the workload when it claims or runs
   * it: the ballot, who granted it, and what each missing witness said.
   */
  lease: LeaseSummary | null;
}

/**
 * The observed document without the entries of nodes that are no longer
 * active enrolled nodes (revoked): they describe the past, and a revoked node
 * cannot correct them (everyone refuses its updates).
 */
function activeObserved(agent: NodeAgent): Map<string, Map<string, ObservedStatus>> {
  const all = agent.observed.listAll();
  const revoked = new Set(agent.enrollment.revocations().map((r) => r.nodeId));
  if (revoked.size === 0) return all;
  return new Map([...all].filter(([nodeId]) => !revoked.has(nodeId)));
}

export function workloadRows(agent: NodeAgent): WorkloadRow[] {
  const observed = activeObserved(agent);
  const loop = agent.reconciler?.loop?.status();
  const dead = new Set(
    agent.gossip.detector
      .view()
      .filter((m) => m.state === 'dead')
      .map((m) => m.nodeId),
  );
  const addresses = agent.workloads.serviceAddresses();
  const quorum = quorumShortfall(witnessesView(agent));
  return agent.workloads.list().map((spec) => {
    const here = loop?.workloads.find((w) => w.name === spec.name);
    const row = withQuorumReason(
      workloadRow(spec, observed, here?.lease ?? null, here?.assignment ?? null, dead),
      quorum,
      dead,
    );
    const address = addresses.get(spec.name) ?? null;
    return {
      ...row,
      address,
      dnsName: address === null ? null : serviceDnsName(spec.name, agent.serviceZone),
    };
  });
}

/** Witnesses short of a quorum as this agent sees them; null when there is a quorum (or no configuration). */
export interface QuorumShortfall {
  alive: number;
  total: number;
  quorum: number;
  /** Witnesses not alive (dead, suspect, never heard) or no longer enrolled, in configuration order. */
  missing: string[];
}

export function quorumShortfall(view: WitnessesView): QuorumShortfall | null {
  if (view.config === null) return null;
  const up = (w: WitnessRow): boolean => w.enrolled && (w.liveness === 'self' || w.liveness === 'alive');
  const alive = view.witnesses.filter(up).length;
  const quorum = quorumSize({ version: view.config.version, witnesses: view.config.witnesses });
  if (alive >= quorum) return null;
  const missing = view.witnesses.filter((w) => !up(w)).map((w) => w.nodeId);
  return { alive, total: view.witnesses.length, quorum, missing };
}

/**
 * An exclusive workload that is not running on a live node cannot start, nor
 * be taken over, without a witness quorum (docs/placement.md): when this
 * agent sees none, the reason says so and names the missing witnesses, so
 * that a stuck row does not only show the old holder's last word.
 */
export function withQuorumReason(
  row: WorkloadRow,
  shortfall: QuorumShortfall | null,
  dead: ReadonlySet<string> = new Set(),
): WorkloadRow {
  if (shortfall === null || ownershipClass(row.spec) !== 'exclusive') return row;
  if (row.phase === 'running' && row.holder !== null && !dead.has(row.holder)) return row;
  if (row.reason?.includes('no witness quorum')) return row;
  const why =
    `no witness quorum: ${shortfall.alive} of ${shortfall.total} witnesses alive, ${shortfall.quorum} needed ` +
    `(missing: ${shortfall.missing.join(', ')}); it cannot start or be taken over until they return`;
  return { ...row, reason: row.reason === null ? why : `${row.reason}; ${why}` };
}

/** A service's DNS name in its org's zone, `<org>.<suffix>` (docs/services.md, "Service addresses"). */
export function serviceDnsName(workload: string, zone: string): string {
  return `${workload}.${zone}`;
}

/**
 * The reason shown for a workload whose speaking status comes from a node
 * this agent holds dead: that status is only the node's last word (e.g.
 * `stopping: agent stopping` from an agent that stopped cleanly), so say so,
 * with placement's reason when no one else may take it yet.
 */
function lastWordOfDead(nodeId: string, status: ObservedStatus, pending: string | null): string {
  const said = `${status.phase}${status.reason ? `: ${status.reason}` : ''}`;
  return `${nodeId} is dead; its last status was "${said}"${pending ? `; ${pending}` : ''}`;
}

export function workloadRow(
  spec: WorkloadSpec,
  observed: Map<string, Map<string, ObservedStatus>>,
  lease: WorkloadRow['lease'] = null,
  placement: string | null = null,
  /** Nodes this agent holds dead: their statuses are their last word, and the reason says so. */
  dead: ReadonlySet<string> = new Set(),
): WorkloadRow {
  const statuses: Record<string, ObservedStatus> = {};
  let best: { nodeId: string; status: ObservedStatus } | null = null;
  for (const [nodeId, byName] of observed) {
    const status = byName.get(spec.name);
    if (!status) continue;
    statuses[nodeId] = status;
    // A live node's status speaks before a dead node's last word, then by phase.
    const rank = (dead.has(nodeId) ? 100 : 0) + RANK[status.phase];
    const bestRank =
      best === null ? Number.POSITIVE_INFINITY : (dead.has(best.nodeId) ? 100 : 0) + RANK[best.status.phase];
    if (rank < bestRank) best = { nodeId, status };
  }
  const holder = best && HOLDING.includes(best.status.phase) ? best.nodeId : null;
  const pending = placement?.startsWith(PENDING) ? placement.slice(PENDING.length) : null;
  // Placed on a node that holds nothing yet and said nothing why: say where it goes and what is awaited.
  const awaited =
    placement !== null && pending === null && holder === null && statuses[placement] === undefined
      ? `placed on ${placement}; no status from it yet`
      : null;
  return {
    name: spec.name,
    spec,
    holder,
    phase: best?.status.phase ?? 'pending',
    restarts: best?.status.restarts ?? 0,
    reason:
      best !== null && dead.has(best.nodeId)
        ? lastWordOfDead(best.nodeId, best.status, pending)
        : (best?.status.reason ??
          (holder === null
            ? (pending ?? awaited)
            : pending === null
              ? null
              : `placement has no node for it (it stays on ${holder}): ${pending}`)),
    placement,
    statuses,
    epoch: best?.status.epoch ?? null,
    lease: lease === null ? null : { ...lease, grantedBy: [...lease.grantedBy], missing: [...lease.missing] },
  };
}
