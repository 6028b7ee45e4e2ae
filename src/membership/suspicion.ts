import type { SwimParams } from './swim-params.js';

/** A suspicion of one member, from the moment this node first held it suspect. */
export interface Suspicion {
  startedAt: number;
  /** Members that suspected it independently (the first included). */
  confirmedBy: Set<string>;
}

/**
 * How long a suspicion lasts before the member is declared dead
 * (Lifeguard): the longest, suspicionMaxMult times the shortest, without
 * confirmations, falling logarithmically to the shortest as independent
 * confirmations come in up to `expectedConfirmations`. The shortest grows
 * with log10 of the cluster size, as dissemination does.
 */
export function suspicionTimeout(
  params: Pick<
    SwimParams,
    'suspicionMult' | 'suspicionMaxMult' | 'probeIntervalMs' | 'expectedConfirmations'
  >,
  memberCount: number,
  suspicion: Suspicion,
): number {
  const n = Math.max(memberCount + 1, 1);
  const min = params.suspicionMult * Math.max(1, Math.log10(n)) * params.probeIntervalMs;
  const max = params.suspicionMaxMult * min;
  const k = Math.min(params.expectedConfirmations, n - 2);
  if (k < 1) return min;
  const confirmations = Math.max(0, suspicion.confirmedBy.size - 1);
  const timeout = max - ((max - min) * Math.log(confirmations + 1)) / Math.log(k + 1);
  return Math.max(min, Math.floor(timeout));
}
