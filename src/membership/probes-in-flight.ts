/**
 * Probes in flight: this node's own probe of the period, and the ping-reqs
 * it relays for others (SWIM §4.2's indirect probe). A relayed one waits
 * for the target's ack to pass back to the origin, and with Lifeguard a
 * nack goes back instead when the target stays silent, so the origin
 * learns that the relay at least is alive.
 */

/** This node's probe of one member, for one protocol period. */
export interface Probe {
  target: number;
  seq: number;
  startedAt: number;
  /** Local time the direct ping is given up on and the indirect probes go out. */
  indirectAt: number;
  acked: boolean;
  /** The indirect probes went out (to `relaysAsked` members, possibly none). */
  indirectDone: boolean;
  relaysAsked: number;
  nacks: number;
}

export interface Relay {
  origin: string;
  originSeq: number;
  /** Lifeguard: a nack goes back at 80 % of the probe timeout when the target stayed silent. */
  nackAt: number;
  nacked: boolean;
  forgetAt: number;
}

export class PendingRelays {
  /** By the seq of the ping this node sent the target. */
  private readonly relays = new Map<number, Relay>();

  open(seq: number, relay: Relay): void {
    this.relays.set(seq, relay);
  }

  /** The relay waiting for the ack of `seq`, no longer pending; undefined if none waits. */
  take(seq: number): Relay | undefined {
    const relay = this.relays.get(seq);
    if (relay) this.relays.delete(seq);
    return relay;
  }

  /** Calls `nack` for each relay whose nack is due by `now`, and forgets those past their end. */
  due(now: number, nack: (relay: Relay) => void): void {
    for (const [seq, relay] of this.relays) {
      if (!relay.nacked && now >= relay.nackAt) {
        relay.nacked = true;
        nack(relay);
      }
      if (now >= relay.forgetAt) this.relays.delete(seq);
    }
  }

  /** The earlier of `at` and the next time `due` has something to do. */
  wakeAt(at: number): number {
    for (const relay of this.relays.values()) at = Math.min(at, relay.nacked ? relay.forgetAt : relay.nackAt);
    return at;
  }
}
