/** The invariants a scenario can ask for (docs/sim.md, "Invariants"). */
export const INVARIANT_NAMES = ['convergence', 'writes', 'safety', 'liveness', 'state'] as const;
export type InvariantName = (typeof INVARIANT_NAMES)[number];

export interface InvariantResult {
  name: InvariantName;
  ok: boolean;
  /** One line: what was checked and what was found. */
  summary: string;
  /** How many things were checked (writes, process starts, moves, deadlines, ...). */
  checked: number;
  /** The first violations, for the report (capped). */
  violations: string[];
}

export const MAX_REPORTED_VIOLATIONS = 20;

export function result(
  name: InvariantName,
  checked: number,
  violations: string[],
  summary: string,
): InvariantResult {
  return {
    name,
    ok: violations.length === 0,
    summary,
    checked,
    violations: violations.slice(0, MAX_REPORTED_VIOLATIONS),
  };
}
