import type { DocName } from '../names.js';

/**
 * The documents that move between epochs, with their slotted maps
 * (docs/epochs.md, "Layout"). An epoch start or a carry-over reads and writes
 * exactly these maps: anything else in such a document does not survive a
 * switch, so every record kind of these documents must be listed here.
 */
export const EPOCH_LAYOUT: Partial<Record<DocName, readonly string[]>> = {
  // 'sim-writes': the simulator's and benchmarks' write checker (sim/harness/sim-cluster.ts).
  workloads: ['specs', 'addresses', 'sim-writes'],
  enrollment: ['nodes', 'revocations', 'draining', 'witnesses', 'scratchKeys'],
};

export function slottedMapsOf(doc: DocName): readonly string[] | undefined {
  return EPOCH_LAYOUT[doc];
}
