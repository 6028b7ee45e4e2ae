import type { SimCluster } from '../sim-cluster.js';
import { type InvariantResult, result } from './types.js';

/**
 * No acknowledged write lost: every write the harness made and got back
 * (transactLocal returned, so it was durable on its node) is present on
 * every running agent at the end. A write whose node is down at the end
 * and that never left it cannot be verified anywhere: such writes are
 * counted, not failed (they come back when the node restarts).
 */
export function checkWrites(cluster: SimCluster): InvariantResult {
  const live = cluster.live();
  const present = new Map(live.map((name) => [name, cluster.writeKeysOn(name)]));
  const writes = cluster.ackedWrites();
  const violations: string[] = [];
  let checked = 0;
  let unverifiable = 0;
  let missingTotal = 0;
  for (const write of writes) {
    const missingOn = live.filter((name) => !present.get(name)?.has(write.key));
    if (!cluster.isUp(write.node) && missingOn.length === live.length) {
      unverifiable++;
      continue;
    }
    checked++;
    if (missingOn.length > 0) {
      missingTotal++;
      violations.push(
        `write ${write.key} (acknowledged by ${write.node}) missing on ${missingOn.length} agents: ${missingOn.slice(0, 5).join(', ')}`,
      );
    }
  }
  const tail = unverifiable > 0 ? `; ${unverifiable} on nodes still down, unverifiable` : '';
  return result(
    'writes',
    checked,
    violations,
    missingTotal === 0
      ? `${checked} acknowledged writes present on all ${live.length} running agents${tail}`
      : `${missingTotal} of ${checked} acknowledged writes missing somewhere${tail}`,
  );
}
