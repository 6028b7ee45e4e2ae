/**
 * Subscribers to one kind of event, called in the order they subscribed.
 * A listener that throws is reported through `onError` and does not keep
 * the others from running: one faulty subscriber (a metrics hook, an API
 * stream) must not stop the reconciler or the lease manager from hearing.
 */
export class Listeners<Args extends unknown[]> {
  private readonly listeners = new Set<(...args: Args) => void>();
  private readonly onError: (err: unknown) => void;

  constructor(onError: (err: unknown) => void) {
    this.onError = onError;
  }

  /** Subscribes `listener`; the function returned unsubscribes it. */
  add(listener: (...args: Args) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Unsubscribes everyone (the emitter closed). */
  clear(): void {
    this.listeners.clear();
  }

  emit(...args: Args): void {
    for (const listener of this.listeners) {
      try {
        listener(...args);
      } catch (err) {
        this.onError(err);
      }
    }
  }
}
