import { SiloError } from '../util/silo-error.js';
/**
 * The witness configuration (docs/placement.md, "Witnesses"): a small,
 * versioned set of nodes, named in a CA-signed record of the enrollment
 * document, that grant per-workload leases. A quorum is a majority of the
 * witnesses of ONE configuration version, never "more than half of the nodes
 * I have heard of". Pure: no I/O.
 */
export interface WitnessConfig {
  /** Increases by one with every change; witnesses refuse requests made under an older one. */
  readonly version: number;
  /** Node ids, sorted, distinct, 1 to MAX_WITNESSES of them. */
  readonly witnesses: readonly string[];
}

/** More witnesses buy nothing but cost per lease round; 5 tolerates 2 failures. */
export const MAX_WITNESSES = 7;
/** The size `ca sign` grows the set to while the org has fewer witnesses. */
export const DEFAULT_WITNESS_COUNT = 3;

export class WitnessConfigError extends SiloError<'invalid_input'> {
  constructor(message: string, options?: ErrorOptions) {
    super('invalid_input', message, options);
  }
}

/** Validates and normalises (sorted witness ids). Throws WitnessConfigError naming the problem. */
export function checkWitnessConfig(config: WitnessConfig): WitnessConfig {
  if (!Number.isSafeInteger(config.version) || config.version < 1)
    throw new WitnessConfigError(
      `witness configuration version must be an integer >= 1, got ${config.version}`,
    );
  if (!Array.isArray(config.witnesses) || config.witnesses.length === 0)
    throw new WitnessConfigError('a witness configuration names at least one witness');
  if (config.witnesses.length > MAX_WITNESSES)
    throw new WitnessConfigError(
      `a witness configuration names at most ${MAX_WITNESSES} witnesses, got ${config.witnesses.length}`,
    );
  const sorted = [...config.witnesses].sort();
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i] === sorted[i - 1]) throw new WitnessConfigError(`witness ${sorted[i]} is listed twice`);
  }
  return { version: config.version, witnesses: sorted };
}

/** Grants needed for a lease under `config`: a strict majority of its witnesses. */
export function quorumSize(config: WitnessConfig): number {
  return Math.floor(config.witnesses.length / 2) + 1;
}

/**
 * Why `next` may not follow `current` directly, or null when it may. One
 * witness added or removed per version: any majority of the old set and any
 * majority of the new set then share a witness, which is what keeps a lease
 * granted under the old version visible to a claimant under the new one.
 */
export function changeProblem(current: WitnessConfig | null, next: WitnessConfig): string | null {
  if (current === null) return next.version === 1 ? null : 'the first witness configuration has version 1';
  if (next.version !== current.version + 1)
    return `the next version after ${current.version} is ${current.version + 1}, not ${next.version}`;
  const before = new Set(current.witnesses);
  const after = new Set(next.witnesses);
  const added = next.witnesses.filter((id) => !before.has(id));
  const removed = current.witnesses.filter((id) => !after.has(id));
  if (added.length + removed.length !== 1) {
    return `a change adds or removes exactly one witness (this one adds ${added.length} and removes ${removed.length}); replace a witness in two steps`;
  }
  return null;
}
