import type { Capacity, WorkloadSpec } from '../../state/schemas.js';
import { compareAsc, rankNodes } from './rendezvous.js';
import type { Assignment, HolderRef, PlacementInput, PlacementNode, PlacementResult } from './types.js';
import { livenessOf } from './types.js';

export { deriveHolders } from './holders.js';

/**
 * Capacity in integer units (milli-cpus, MB) so that sums of fractional cpus
 * never drift: 0.1 + 0.2 cpus must fit exactly into 0.3.
 */
interface Units {
  milliCpus: number;
  memoryMb: number;
  scratchMb: number;
}

function toUnits(capacity: { cpus: number; memoryMb: number; scratchMb: number }): Units {
  return {
    milliCpus: Math.round(capacity.cpus * 1000),
    memoryMb: capacity.memoryMb,
    scratchMb: capacity.scratchMb,
  };
}

function fits(need: Units, used: Units, total: Units): boolean {
  return (
    used.milliCpus + need.milliCpus <= total.milliCpus &&
    used.memoryMb + need.memoryMb <= total.memoryMb &&
    used.scratchMb + need.scratchMb <= total.scratchMb
  );
}

const NOTHING_USED: Readonly<Units> = { milliCpus: 0, memoryMb: 0, scratchMb: 0 };

function add(used: Units, need: Units): void {
  used.milliCpus += need.milliCpus;
  used.memoryMb += need.memoryMb;
  used.scratchMb += need.scratchMb;
}

function describeNeed(spec: WorkloadSpec): string {
  return `${spec.cpus} cpus, ${spec.memoryMb} MB memory, ${spec.scratchMb} MB scratch`;
}

function describeConstraints(constraints: Readonly<Record<string, string>>): string {
  const keys = Object.keys(constraints).sort(compareAsc);
  return `{${keys.map((key) => `${key}=${constraints[key]}`).join(', ')}}`;
}

export function matchesConstraints(
  node: PlacementNode,
  constraints: Readonly<Record<string, string>>,
): boolean {
  for (const key of Object.keys(constraints)) {
    if (!Object.hasOwn(node.labels, key) || node.labels[key] !== constraints[key]) return false;
  }
  return true;
}

function holderOf(holders: PlacementInput['holders'], workload: string): HolderRef | undefined {
  if (holders instanceof Map) return holders.get(workload);
  const record = holders as Readonly<Record<string, HolderRef>>;
  return Object.hasOwn(record, workload) ? record[workload] : undefined;
}

/**
 * Decides where every workload should run, from one node's view. Pure and
 * deterministic: the result depends on the contents of the input, never on
 * the order of its arrays or maps, so every node with the same view computes
 * the same placement and no leader is needed (docs/placement.md).
 *
 * 1. Sticky first, in workload name order: a holder that is live (alive or
 *    suspect: suspicion alone is no reason to move), enrolled, not draining,
 *    still matches the constraints and still has room keeps its workload.
 *    Sticky workloads reserve their capacity before anything else is placed.
 * 2. Then the rest, in workload name order: the eligible node (alive, not
 *    draining, labels match every constraint) with the highest rendezvous
 *    score that still has room for cpus, memory and scratch.
 */
export function place(input: PlacementInput): PlacementResult {
  // Clients are never placed (docs/protocol.md, "Enrollment roles"): for
  // placement they are not there at all, as if not enrolled.
  const nodes = checkNodes(input.nodes).filter((node) => node.role !== 'client');
  const specs = checkSpecs(input.specs);
  const used = new Map<string, Units>(
    nodes.map((node) => [node.nodeId, { milliCpus: 0, memoryMb: 0, scratchMb: 0 }]),
  );
  const totals = new Map<string, Units>(nodes.map((node) => [node.nodeId, toUnits(node.capacity)]));
  const byId = new Map(nodes.map((node) => [node.nodeId, node]));
  const assignments = new Map<string, Assignment>();
  const movedBecause = new Map<string, string>();

  // Pass 1: sticky holders reserve their capacity.
  for (const spec of specs) {
    const holder = holderOf(input.holders, spec.name);
    if (!holder) continue;
    const need = toUnits(spec);
    const node = byId.get(holder.nodeId);
    const liveness = livenessOf(input.liveness, holder.nodeId);
    let reason: string | undefined;
    if (!node) reason = `holder ${holder.nodeId} is not an active enrolled node`;
    else if (liveness === 'dead') reason = `holder ${holder.nodeId} is dead`;
    else if (node.draining) reason = `holder ${holder.nodeId} is draining`;
    else if (holder.fenced) reason = `holder ${holder.nodeId} lost its lease and stopped it`;
    else if (!matchesConstraints(node, spec.constraints)) {
      reason = `holder ${holder.nodeId} no longer matches constraints ${describeConstraints(spec.constraints)}`;
    } else if (!fits(need, used.get(node.nodeId)!, totals.get(node.nodeId)!)) {
      reason = `holder ${holder.nodeId} has no room for ${describeNeed(spec)}`;
    }
    if (reason !== undefined) {
      movedBecause.set(spec.name, reason);
      continue;
    }
    add(used.get(holder.nodeId)!, need);
    assignments.set(spec.name, { node: holder.nodeId, sticky: true });
  }

  // Pass 2: everything else by rendezvous hashing over eligible nodes.
  for (const spec of specs) {
    if (assignments.has(spec.name)) continue;
    const why = movedBecause.get(spec.name);
    const withReason = <T extends Assignment>(assignment: T): T =>
      why === undefined ? assignment : { ...assignment, movedBecause: why };
    const matching = nodes.filter((node) => matchesConstraints(node, spec.constraints));
    if (matching.length === 0) {
      const pending =
        nodes.length === 0
          ? 'no active enrolled nodes'
          : `no node matches constraints ${describeConstraints(spec.constraints)}`;
      assignments.set(spec.name, withReason({ pending }));
      continue;
    }
    const need = toUnits(spec);
    // Bigger than every matching node even when empty: waiting will not help, so say so (not "no capacity").
    if (!matching.some((node) => fits(need, NOTHING_USED, totals.get(node.nodeId)!))) {
      const pending = `fits no node: needs ${describeNeed(spec)}; none of the ${matching.length} matching nodes is that large`;
      assignments.set(spec.name, withReason({ pending }));
      continue;
    }
    // New placements go to alive nodes only: a suspect node may be on its way
    // out, and a target that dies before it starts just delays the workload.
    const eligible = matching.filter(
      (node) => !node.draining && livenessOf(input.liveness, node.nodeId) === 'alive',
    );
    if (eligible.length === 0) {
      const pending = `no alive, non-draining node matches constraints ${describeConstraints(spec.constraints)} (${matching.length} match)`;
      assignments.set(spec.name, withReason({ pending }));
      continue;
    }
    const fencedHolder = holderOf(input.holders, spec.name);
    const avoid = fencedHolder?.fenced === true ? fencedHolder.nodeId : null;
    // A holder that fenced itself goes last: it may be cut off from the witnesses.
    const ranked = rankNodes(
      spec.name,
      eligible.map((node) => node.nodeId),
    ).sort((a, b) => Number(a === avoid) - Number(b === avoid));
    const chosen = ranked.find((nodeId) => fits(need, used.get(nodeId)!, totals.get(nodeId)!));
    if (chosen === undefined) {
      const pending = `no capacity: needs ${describeNeed(spec)}; none of ${eligible.length} eligible nodes has room`;
      assignments.set(spec.name, withReason({ pending }));
      continue;
    }
    add(used.get(chosen)!, need);
    assignments.set(spec.name, withReason({ node: chosen, sticky: false }));
  }

  const ordered = new Map<string, Assignment>();
  for (const spec of specs) ordered.set(spec.name, assignments.get(spec.name)!);
  const usedOut = new Map<string, Capacity>();
  for (const node of nodes) {
    const units = used.get(node.nodeId)!;
    usedOut.set(node.nodeId, {
      cpus: units.milliCpus / 1000,
      memoryMb: units.memoryMb,
      scratchMb: units.scratchMb,
    });
  }
  return { assignments: ordered, used: usedOut };
}

function checkNodes(nodes: readonly PlacementNode[]): PlacementNode[] {
  if (!Array.isArray(nodes)) throw new TypeError('place: nodes must be an array');
  const seen = new Set<string>();
  for (const node of nodes) {
    if (typeof node?.nodeId !== 'string' || node.nodeId.length === 0) {
      throw new TypeError('place: every node needs a non-empty string nodeId');
    }
    if (seen.has(node.nodeId)) throw new RangeError(`place: node ${node.nodeId} is listed twice`);
    seen.add(node.nodeId);
    const { capacity } = node;
    for (const key of ['cpus', 'memoryMb', 'scratchMb'] as const) {
      const value = capacity?.[key];
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
        throw new RangeError(`place: node ${node.nodeId} capacity.${key} must be a finite number >= 0`);
      }
    }
    if (typeof node.labels !== 'object' || node.labels === null) {
      throw new TypeError(`place: node ${node.nodeId} labels must be an object`);
    }
    if (typeof node.draining !== 'boolean')
      throw new TypeError(`place: node ${node.nodeId} draining must be a boolean`);
    if (node.role !== undefined && node.role !== 'node' && node.role !== 'client')
      throw new TypeError(`place: node ${node.nodeId} role must be "node" or "client"`);
  }
  return [...nodes].sort((a, b) => compareAsc(a.nodeId, b.nodeId));
}

function checkSpecs(specs: readonly WorkloadSpec[]): WorkloadSpec[] {
  if (!Array.isArray(specs)) throw new TypeError('place: specs must be an array');
  const seen = new Set<string>();
  for (const spec of specs) {
    if (typeof spec?.name !== 'string' || spec.name.length === 0) {
      throw new TypeError('place: every spec needs a non-empty string name');
    }
    if (seen.has(spec.name)) throw new RangeError(`place: workload ${spec.name} is listed twice`);
    seen.add(spec.name);
    for (const key of ['cpus', 'memoryMb', 'scratchMb'] as const) {
      const value = spec[key];
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
        throw new RangeError(`place: workload ${spec.name} ${key} must be a finite number >= 0`);
      }
    }
    if (typeof spec.constraints !== 'object' || spec.constraints === null) {
      throw new TypeError(`place: workload ${spec.name} constraints must be an object`);
    }
  }
  return [...specs].sort((a, b) => compareAsc(a.name, b.name));
}
