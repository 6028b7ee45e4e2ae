/**
 * Lifeguard's local health multiplier: evidence that this node itself is
 * slow (missed acks its relays did not nack, being suspected) raises it,
 * answered probes lower it, and every timeout stretches by (value + 1), so
 * a starved node stops declaring healthy ones dead.
 */
export class LocalHealth {
  private current = 0;

  /** `awarenessMax`: the ceiling (Lifeguard's S); the value stays within 0 … awarenessMax − 1. */
  constructor(private readonly awarenessMax: number) {}

  get value(): number {
    return this.current;
  }

  /** `ms` stretched by the current multiplier. */
  scaled(ms: number): number {
    return ms * (this.current + 1);
  }

  adjust(delta: number): void {
    this.current = Math.min(this.awarenessMax - 1, Math.max(0, this.current + delta));
  }
}
