/**
 * Node selectors in scenario steps (docs/sim.md, "Scenario format"):
 *
 *   n3            one node            n1..n10     a range by number
 *   all           every node          live, down  running / crashed nodes
 *   half:1        first half (by creation order; the extra node of an odd count goes here)
 *   half:2        second half
 *   random:3      3 random running nodes      random:30%   30% of the running nodes (at least 1)
 *   holder:web    the node(s) running workload `web` right now
 *   rest          (partition groups only) every node not in another group
 *
 * Random picks come from the scenario's seeded PRNG and never repeat a node
 * already chosen in the same step.
 */
import type { Prng } from '../net/prng.js';

export type SelectorTerm =
  | { kind: 'name'; name: string; index: number }
  | { kind: 'range'; from: number; to: number }
  | { kind: 'all' | 'live' | 'down' | 'rest' }
  | { kind: 'half'; which: 1 | 2 }
  | { kind: 'random'; count: number; percent: boolean }
  | { kind: 'holder'; workload: string };

export interface SelectorContext {
  /** Every node so far, in creation order. */
  all: readonly string[];
  live: readonly string[];
  down: readonly string[];
  holders: (workload: string) => string[];
  prng: Prng;
  /** Nodes already chosen in this step (random picks avoid them; `rest` is the complement). */
  taken: Set<string>;
}

export class SelectorError extends Error {
  override name = 'SelectorError';
}

export function parseSelector(text: string): SelectorTerm {
  const value = text.trim();
  if (value === 'all' || value === 'live' || value === 'down' || value === 'rest') return { kind: value };
  let match = /^n(\d+)$/.exec(value);
  if (match) return { kind: 'name', name: value, index: Number(match[1]) };
  match = /^n(\d+)\.\.n(\d+)$/.exec(value);
  if (match) {
    const from = Number(match[1]);
    const to = Number(match[2]);
    if (from > to) throw new SelectorError(`range "${value}" runs backwards`);
    return { kind: 'range', from, to };
  }
  match = /^half:([12])$/.exec(value);
  if (match) return { kind: 'half', which: match[1] === '1' ? 1 : 2 };
  match = /^random:(\d+)(%?)$/.exec(value);
  if (match) {
    const count = Number(match[1]);
    const percent = match[2] === '%';
    if (count === 0 || (percent && count > 100))
      throw new SelectorError(`"${value}": count must be 1..N or 1%..100%`);
    return { kind: 'random', count, percent };
  }
  match = /^holder:([a-z0-9][a-z0-9_-]*)$/.exec(value);
  if (match) return { kind: 'holder', workload: match[1] as string };
  throw new SelectorError(
    `unknown node selector "${value}" (expected nK, nA..nB, all, live, down, half:1, half:2, random:K, random:P%, holder:<workload>, rest)`,
  );
}

/** The highest node number a selector names explicitly (for checking it exists), or 0. */
export function highestNamedNode(term: SelectorTerm): number {
  if (term.kind === 'name') return term.index;
  if (term.kind === 'range') return term.to;
  return 0;
}

/** Resolves a selector (or a list of them, the union) to node names; adds them to `ctx.taken`. */
export function resolveSelector(selector: string | readonly string[], ctx: SelectorContext): string[] {
  const out: string[] = [];
  for (const text of typeof selector === 'string' ? [selector] : selector) {
    for (const name of resolveTerm(parseSelector(text), ctx)) {
      if (!out.includes(name)) out.push(name);
    }
  }
  for (const name of out) ctx.taken.add(name);
  return out;
}

function resolveTerm(term: SelectorTerm, ctx: SelectorContext): string[] {
  switch (term.kind) {
    case 'all':
      return [...ctx.all];
    case 'live':
      return [...ctx.live];
    case 'down':
      return [...ctx.down];
    case 'rest':
      return ctx.all.filter((name) => !ctx.taken.has(name));
    case 'name':
      if (!ctx.all.includes(term.name))
        throw new SelectorError(`no node ${term.name} (nodes: ${ctx.all.length})`);
      return [term.name];
    case 'range': {
      const names: string[] = [];
      for (let i = term.from; i <= term.to; i++) {
        if (!ctx.all.includes(`n${i}`)) throw new SelectorError(`no node n${i} (nodes: ${ctx.all.length})`);
        names.push(`n${i}`);
      }
      return names;
    }
    case 'half': {
      const cut = Math.ceil(ctx.all.length / 2);
      return term.which === 1 ? ctx.all.slice(0, cut) : ctx.all.slice(cut);
    }
    case 'random': {
      const pool = ctx.live.filter((name) => !ctx.taken.has(name));
      const wanted = term.percent
        ? Math.max(1, Math.round((term.count / 100) * ctx.live.length))
        : term.count;
      if (wanted > pool.length) {
        throw new SelectorError(
          `random:${term.count}${term.percent ? '%' : ''} needs ${wanted} running nodes, ${pool.length} available`,
        );
      }
      return ctx.prng.sample(pool, wanted);
    }
    case 'holder': {
      const holders = ctx.holders(term.workload);
      if (holders.length === 0)
        throw new SelectorError(`holder:${term.workload}: nobody runs ${term.workload} now`);
      return holders;
    }
  }
}
