export type Liveness = 'alive' | 'suspect' | 'dead';

import { Listeners } from '../util/listeners.js';

export interface LivenessEvent {
  nodeId: string;
  incarnation: number;
  /** The state before this transition; undefined when the node was first heard of. */
  previous: Liveness | undefined;
  /** True when the node came back with a higher incarnation (it restarted). */
  rejoined: boolean;
}

export type LivenessListener = (event: LivenessEvent) => void;

export interface MemberView {
  nodeId: string;
  state: Liveness;
  incarnation: number;
  seq: number;
  /** Local clock time of the last fresh heartbeat. */
  lastSeenAt: number;
  /** Local clock time of the last state change. */
  since: number;
}

export interface FailureDetectorOptions {
  /** Local clock in ms; injectable so that the simulator can skew it. Only differences are used. */
  now?: () => number;
  suspectAfterMs?: number;
  deadAfterMs?: number;
}

export const DEFAULT_SUSPECT_AFTER_MS = 3000;
export const DEFAULT_DEAD_AFTER_MS = 10_000;

interface Member {
  state: Liveness;
  incarnation: number;
  seq: number;
  lastSeenAt: number;
  since: number;
}

/**
 * Heartbeat-timeout failure detector. A node is alive while fresh
 * heartbeats arrive, suspect after `suspectAfterMs` of silence and dead
 * after `deadAfterMs`. Only the local clock is consulted, so peers' clock
 * skew does not matter; `(incarnation, seq)` orders heartbeats so that
 * replayed or reordered ones do not refresh a node.
 *
 * A dead node that is heard again becomes alive: with a higher incarnation
 * it restarted (`rejoined`), with the same one it was cut off (a healed
 * partition). Either way the rest of the system decides what that means:
 * redial, mesh repair and syncs want whoever is reachable, while ownership
 * keeps a declared-dead incarnation dead (placement A1, enforced by
 * HeartbeatLedger and the lease source, not here).
 */
export class FailureDetector {
  private readonly now: () => number;
  readonly suspectAfterMs: number;
  readonly deadAfterMs: number;
  private readonly members = new Map<string, Member>();
  // A failing listener must not stop the others or the detector.
  private readonly listeners: Record<Liveness, Listeners<Parameters<LivenessListener>>> = {
    alive: new Listeners(() => undefined),
    suspect: new Listeners(() => undefined),
    dead: new Listeners(() => undefined),
  };

  constructor(options: FailureDetectorOptions = {}) {
    this.now = options.now ?? Date.now;
    this.suspectAfterMs = options.suspectAfterMs ?? DEFAULT_SUSPECT_AFTER_MS;
    this.deadAfterMs = options.deadAfterMs ?? DEFAULT_DEAD_AFTER_MS;
    if (!(this.suspectAfterMs > 0 && this.deadAfterMs > this.suspectAfterMs)) {
      throw new Error(
        `failure detector needs 0 < suspectAfterMs < deadAfterMs, got ${this.suspectAfterMs}/${this.deadAfterMs}`,
      );
    }
  }

  /** Subscribes to transitions into `state`; returns the unsubscribe function. */
  on(state: Liveness, listener: LivenessListener): () => void {
    return this.listeners[state].add(listener);
  }

  /**
   * Records a heartbeat. Returns false (and changes nothing) when it is not
   * newer than the last one seen from that node.
   */
  observe(nodeId: string, incarnation: number, seq: number): boolean {
    const now = this.now();
    const member = this.members.get(nodeId);
    if (!member) {
      this.members.set(nodeId, { state: 'alive', incarnation, seq, lastSeenAt: now, since: now });
      this.emit('alive', { nodeId, incarnation, previous: undefined, rejoined: false });
      return true;
    }
    const newer =
      incarnation > member.incarnation || (incarnation === member.incarnation && seq > member.seq);
    if (!newer) return false;
    const restarted = incarnation > member.incarnation;
    member.incarnation = incarnation;
    member.seq = seq;
    member.lastSeenAt = now;
    if (member.state !== 'alive' || restarted) {
      const previous = member.state;
      member.state = 'alive';
      member.since = now;
      this.emit('alive', { nodeId, incarnation, previous, rejoined: restarted });
    }
    return true;
  }

  /**
   * Another failure detector (SWIM) vouches that a known node is alive now:
   * its silence restarts from now, and a suspect or dead one is alive again.
   * Incarnation and seq stay as the last heartbeat set them, so a replayed
   * heartbeat still refreshes nothing. A node never heard from is left
   * unknown (its first heartbeat brings its incarnation and addresses).
   * Returns false for an unknown node.
   */
  vouch(nodeId: string): boolean {
    const member = this.members.get(nodeId);
    if (!member) return false;
    const now = this.now();
    member.lastSeenAt = now;
    if (member.state !== 'alive') {
      const previous = member.state;
      member.state = 'alive';
      member.since = now;
      this.emit('alive', { nodeId, incarnation: member.incarnation, previous, rejoined: false });
    }
    return true;
  }

  /** Re-evaluates every node against the clock; call it at least every few hundred ms. */
  tick(): void {
    const now = this.now();
    for (const [nodeId, member] of this.members) {
      const silence = now - member.lastSeenAt;
      const next: Liveness =
        silence >= this.deadAfterMs ? 'dead' : silence >= this.suspectAfterMs ? 'suspect' : 'alive';
      // Only alive → suspect → dead here; coming back needs a heartbeat.
      if (rank(next) <= rank(member.state)) continue;
      const previous = member.state;
      member.state = next;
      member.since = now;
      this.emit(next, { nodeId, incarnation: member.incarnation, previous, rejoined: false });
    }
  }

  state(nodeId: string): Liveness | undefined {
    return this.members.get(nodeId)?.state;
  }

  /** One node's entry, if it was ever heard (and not forgotten). */
  member(nodeId: string): MemberView | undefined {
    const m = this.members.get(nodeId);
    return m === undefined ? undefined : { nodeId, ...m };
  }

  view(): MemberView[] {
    return [...this.members].map(([nodeId, m]) => ({ nodeId, ...m }));
  }

  /** Node ids currently in `state`. */
  nodesIn(state: Liveness): string[] {
    return [...this.members].filter(([, m]) => m.state === state).map(([nodeId]) => nodeId);
  }

  /** Drops a node entirely (e.g. it was revoked); it is new again if heard later. */
  forget(nodeId: string): void {
    this.members.delete(nodeId);
  }

  private emit(state: Liveness, event: LivenessEvent): void {
    this.listeners[state].emit(event);
  }
}

function rank(state: Liveness): number {
  return state === 'alive' ? 0 : state === 'suspect' ? 1 : 2;
}
