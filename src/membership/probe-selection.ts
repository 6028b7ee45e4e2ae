/**
 * Which members a core turns to: the next probe target in a randomised
 * round-robin (SWIM §4.3: every member is probed within one pass, yet the
 * order is unpredictable), and random samples for indirect probes, gossip
 * and reconnect pings. Randomness comes in as `random`, so the core stays
 * pure and property tests replay any schedule.
 */

/** Fisher-Yates, in place. */
export function shuffle(items: number[], random: () => number): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j] as number, items[i] as number];
  }
}

/**
 * Up to `count` distinct indexes below `size` that are `eligible`,
 * uniformly at random. Random draws first (cheap when most members match,
 * as alive ones do), a full scan only when they keep missing.
 */
export function sampleMembers(
  count: number,
  size: number,
  eligible: (member: number) => boolean,
  random: () => number,
): number[] {
  const picked: number[] = [];
  for (let tries = 0; tries < 8 * count && picked.length < count; tries++) {
    const i = Math.floor(random() * size);
    if (eligible(i) && !picked.includes(i)) picked.push(i);
  }
  if (picked.length === count) return picked;
  const pool: number[] = [];
  for (let i = 0; i < size; i++) if (eligible(i)) pool.push(i);
  picked.length = 0;
  while (picked.length < count && pool.length > 0) {
    const j = Math.floor(random() * pool.length);
    picked.push(pool[j] as number);
    pool[j] = pool[pool.length - 1] as number;
    pool.pop();
  }
  return picked;
}

/** Randomised round-robin (SWIM §4.3): a shuffled pass over the members, reshuffled when used up. */
export class ProbeOrder {
  private order: number[] = [];
  private position = 0;

  constructor(private readonly random: () => number) {}

  /**
   * New members join the rest of the current pass at random places, so that
   * each is probed within about one pass. One shuffle of the rest, not a
   * splice per member: a whole cluster at start (thousands of members)
   * stays O(n).
   */
  add(added: readonly number[]): void {
    const rest = this.order.slice(this.position).concat(added);
    shuffle(rest, this.random);
    this.order = this.order.slice(0, this.position).concat(rest);
  }

  /**
   * The next member of the pass that `probeable` accepts; at the end of a
   * pass a new one is shuffled from `members()`. Null when a fresh pass
   * holds nobody to probe either.
   */
  next(probeable: (member: number) => boolean, members: () => number[]): number | null {
    for (let pass = 0; pass < 2; pass++) {
      while (this.position < this.order.length) {
        const candidate = this.order[this.position++] as number;
        if (probeable(candidate)) return candidate;
      }
      const order = members();
      shuffle(order, this.random);
      this.order = order;
      this.position = 0;
      if (this.order.length === 0) return null;
    }
    return null;
  }
}
