/**
 * Stamps of last-writer-wins records (docs/epochs.md, "Stamps").
 *
 * A stamp is a hybrid logical clock reading plus the writer's node id: `at`
 * follows the writer's wall clock, `seq` orders stamps within one `at`, and
 * `writer` breaks the remaining ties. A node's clock never runs behind a stamp
 * it has seen, so a write always outranks every record its writer had seen
 * for that key: causally later writes win, concurrent ones are ordered by
 * wall clock, then by writer id, the same way on every node.
 *
 * Pure: the caller supplies `now`.
 */
export interface Stamp {
  /** Milliseconds since the Unix epoch, as the writer's hybrid clock read it. */
  readonly at: number;
  /** Orders stamps with one `at` (0 for the first). */
  readonly seq: number;
  readonly writer: string;
}

/** Negative when `a` is older than `b`, 0 when they are the same stamp, positive when newer. */
export function compareStamps(a: Stamp, b: Stamp): number {
  if (a.at !== b.at) return a.at < b.at ? -1 : 1;
  if (a.seq !== b.seq) return a.seq < b.seq ? -1 : 1;
  if (a.writer === b.writer) return 0;
  return a.writer < b.writer ? -1 : 1;
}

/**
 * One node's hybrid logical clock. `next` gives a stamp above every stamp
 * this clock issued or observed, however the wall clock moves (a step back,
 * a peer ahead of us).
 */
export class HybridClock {
  private at = 0;
  private seq = -1;

  constructor(readonly writer: string) {}

  /** A fresh stamp for a write at wall-clock time `now`. */
  next(now: number): Stamp {
    if (now > this.at) {
      this.at = now;
      this.seq = 0;
    } else {
      this.seq++;
    }
    return { at: this.at, seq: this.seq, writer: this.writer };
  }

  /** Moves the clock past `stamp` (a record read from a peer or from disk). */
  observe(stamp: Stamp): void {
    if (stamp.at > this.at || (stamp.at === this.at && stamp.seq > this.seq)) {
      this.at = stamp.at;
      this.seq = stamp.seq;
    }
  }
}
