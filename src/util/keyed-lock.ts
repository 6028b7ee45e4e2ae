/**
 * Runs tasks one at a time per key, in call order, whatever happened to the
 * one before (a rejection does not stall the queue). The service runtime
 * (and the simulator's runner) serialise everything they do to one service
 * this way: a stop never races the start it follows.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const next = previous.then(task, task);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    // The map keeps only keys with work queued.
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}
