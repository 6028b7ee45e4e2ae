/**
 * A small seeded PRNG (xoshiro128**, seeded through splitmix32) for every
 * random choice the simulator makes: link jitter, loss, scenario choices.
 *
 * Why not Math.random: a simulation run must be repeatable from its seed.
 * Why `fork(label)`: consumers that draw independently (one per link
 * direction, one per scenario step) each get their own stream derived from
 * the root seed and a stable label, so adding draws in one place does not
 * shift the numbers another place sees.
 */

export type Seed = number | string;

/** FNV-1a over the UTF-16 code units: turns a string seed or label into 32 bits. */
function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

function seedToUint32(seed: Seed): number {
  if (typeof seed === 'string') return hashString(seed);
  if (!Number.isFinite(seed))
    throw new RangeError(`PRNG seed must be a finite number or a string, got ${seed}`);
  // Fold the high bits of large integers in, so seeds above 2^32 still differ.
  const high = Math.floor(seed / 0x1_0000_0000);
  return (seed ^ Math.imul(high, 0x9e3779b9)) >>> 0;
}

/** splitmix32 step: spreads a 32-bit seed over xoshiro's 128 bits of state. */
function splitmix32(state: { value: number }): number {
  state.value = (state.value + 0x9e3779b9) | 0;
  let z = state.value;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class Prng {
  readonly seed: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: Seed) {
    this.seed = seedToUint32(seed);
    const mix = { value: this.seed };
    this.s0 = splitmix32(mix);
    this.s1 = splitmix32(mix);
    this.s2 = splitmix32(mix);
    this.s3 = splitmix32(mix);
    // xoshiro's all-zero state is a fixed point; splitmix cannot give it for all four words, but be sure.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next 32 random bits as an unsigned integer (xoshiro128**). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 0x1_0000_0000;
  }

  /** Uniform in [min, max). */
  range(min: number, max: number): number {
    if (!(max >= min)) throw new RangeError(`range(${min}, ${max}): max must be >= min`);
    return min + (max - min) * this.next();
  }

  /** Uniform integer in [0, maxExclusive). */
  int(maxExclusive: number): number {
    if (!Number.isInteger(maxExclusive) || maxExclusive <= 0) {
      throw new RangeError(`int(${maxExclusive}): bound must be a positive integer`);
    }
    return Math.floor(this.next() * maxExclusive);
  }

  /** True with probability p (0..1). */
  chance(p: number): boolean {
    if (!(p >= 0 && p <= 1)) throw new RangeError(`chance(${p}): probability must be within [0, 1]`);
    return p > 0 && this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick() from an empty list');
    return items[this.int(items.length)] as T;
  }

  /** A shuffled copy (Fisher-Yates); the input is left alone. */
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = out[i] as T;
      out[i] = out[j] as T;
      out[j] = tmp;
    }
    return out;
  }

  /** `count` distinct items chosen at random. */
  sample<T>(items: readonly T[], count: number): T[] {
    if (!Number.isInteger(count) || count < 0 || count > items.length) {
      throw new RangeError(`sample(): count ${count} must be an integer within [0, ${items.length}]`);
    }
    return this.shuffle(items).slice(0, count);
  }

  /**
   * An independent stream derived from this PRNG's seed and `label` (not from
   * its current position), so it is the same however many draws came before.
   */
  fork(label: string): Prng {
    return new Prng(hashString(`${this.seed}\u0000${label}`));
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
