/**
 * What SWIM cores say to each other and to their host (docs/membership.md):
 * the member updates they disseminate, the messages that carry them, and
 * the events a host reacts to. Types only; the wire form is swim-frames.ts.
 */

export type MemberState = 'alive' | 'suspect' | 'dead';

/** One member's state as one node disseminates it. */
export interface MemberUpdate {
  node: string;
  state: MemberState;
  incarnation: number;
  /** Who suspected it (suspect only): independent suspicions shorten the timeout (Lifeguard). */
  from?: string;
}

export type SwimMessage =
  | { kind: 'ping'; seq: number; updates: MemberUpdate[] }
  /** Please ping `target` for me and tell me (ack or nack with my `seq`). */
  | { kind: 'ping-req'; seq: number; target: string; updates: MemberUpdate[] }
  | { kind: 'ack'; seq: number; updates: MemberUpdate[] }
  /** Lifeguard: the relay is alive but heard nothing from the target in time. */
  | { kind: 'nack'; seq: number; updates: MemberUpdate[] }
  /** Updates only, no answer: dissemination beyond what probes carry (seq is 0). */
  | { kind: 'gossip'; seq: number; updates: MemberUpdate[] };

export interface Outgoing {
  to: string;
  message: SwimMessage;
}

export type SwimEvent =
  /** This node's view of another member changed. */
  | { kind: 'member'; node: string; state: MemberState; incarnation: number }
  /** Someone said this node is suspect or dead; it answered with a higher incarnation. */
  | { kind: 'refuted'; incarnation: number; by: MemberState };
