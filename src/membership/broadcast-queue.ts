/**
 * Members whose current state still has to be piggybacked, least-sent
 * first (SWIM §4.1's infection-style dissemination; memberlist calls it a
 * transmit-limited queue). Kept in FIFO buckets by send count, so that
 * choosing a message's updates costs O(updates) however long the queue is:
 * with thousands of members and lossy links it holds thousands of entries,
 * and sorting it for every message dominated a node's work
 * (docs/membership.md, "Scale").
 *
 * Removal is lazy: a bucket entry carries the generation its member had
 * when it was put there, and entries whose member has since moved, been
 * requeued or removed are skipped when reached (or dropped when a bucket
 * is compacted), so nothing ever searches a bucket.
 */
interface Entry {
  member: number;
  gen: number;
}

interface Queued {
  count: number;
  gen: number;
}

class Bucket {
  private items: Entry[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(entry: Entry): void {
    this.items.push(entry);
  }

  shift(): Entry | undefined {
    if (this.head >= this.items.length) return undefined;
    const entry = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return entry;
  }

  unshift(entry: Entry): void {
    if (this.head > 0) this.items[--this.head] = entry;
    else this.items.unshift(entry);
  }

  /** Drops entries `live` rejects (stale ones), keeping the order. */
  compact(live: (entry: Entry) => boolean): void {
    this.items = this.items.slice(this.head).filter(live);
    this.head = 0;
  }
}

export class BroadcastQueue {
  private readonly queued = new Map<number, Queued>();
  /** buckets[c]: members sent c times, oldest first (plus stale entries, skipped). */
  private readonly buckets: Bucket[] = [];
  private gen = 0;

  get size(): number {
    return this.queued.size;
  }

  /** (Re)queues a member's state: its send count starts again at 0. */
  queue(member: number): void {
    const gen = ++this.gen;
    this.queued.set(member, { count: 0, gen });
    this.put(0, { member, gen });
  }

  delete(member: number): void {
    this.queued.delete(member);
  }

  /**
   * Up to `count` members, least sent first, leaving out those `skip`
   * rejects. Each one taken counts as sent once more and leaves the queue
   * once sent `limit` times.
   */
  take(count: number, limit: number, skip: (member: number) => boolean = () => false): number[] {
    const taken: number[] = [];
    for (let c = 0; c < this.buckets.length && taken.length < count; c++) {
      const bucket = this.buckets[c];
      if (!bucket) continue;
      const skipped: Entry[] = [];
      while (taken.length < count) {
        const entry = bucket.shift();
        if (entry === undefined) break;
        if (!this.isLive(entry, c)) continue;
        if (skip(entry.member)) skipped.push(entry);
        else taken.push(entry.member);
      }
      for (let i = skipped.length - 1; i >= 0; i--) bucket.unshift(skipped[i] as Entry);
    }
    for (const member of taken) {
      const queued = this.queued.get(member) as Queued;
      const next = queued.count + 1;
      if (next >= limit) {
        this.queued.delete(member);
        continue;
      }
      queued.count = next;
      queued.gen = ++this.gen;
      this.put(next, { member, gen: queued.gen });
    }
    return taken;
  }

  private isLive(entry: Entry, count: number): boolean {
    const queued = this.queued.get(entry.member);
    return queued !== undefined && queued.gen === entry.gen && queued.count === count;
  }

  private put(count: number, entry: Entry): void {
    let bucket = this.buckets[count];
    if (!bucket) {
      bucket = new Bucket();
      this.buckets[count] = bucket;
    }
    bucket.push(entry);
    // A bucket that is rarely drained (the low ones keep every message full) would keep the stale
    // entries of members requeued since: drop them once they outnumber the live ones.
    if (bucket.length > 2 * this.queued.size + 64) bucket.compact((e) => this.isLive(e, count));
  }
}
