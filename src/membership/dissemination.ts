import { BroadcastQueue } from './broadcast-queue.js';
import type { MemberIndex } from './member-index.js';
import { DEAD, SUSPECT } from './member-states.js';
import type { MemberTable } from './member-table.js';
import type { MemberUpdate } from './swim-messages.js';

export interface DisseminationOptions {
  selfId: string;
  selfIndex: number;
  index: MemberIndex;
  /** The core's view of the members: what an update says is read from it when it is sent. */
  members: MemberTable;
  /** This node's current incarnation (its own update says it). */
  incarnation: () => number;
  /** An update is piggybacked retransmitMult · ⌈log10(n + 2)⌉ times. */
  retransmitMult: number;
}

/**
 * What a core has to tell others (SWIM §4.1's infection-style
 * dissemination): members whose state changed wait in a BroadcastQueue
 * and ride on outgoing messages a bounded number of times each. The queue
 * holds members, not updates: an update is made from the current view
 * when it is sent, so a member that changed twice goes out once, as it is
 * now.
 */
export class Dissemination {
  /** Member states still to be piggybacked, least sent first. */
  private readonly broadcasts = new BroadcastQueue();
  /** Who suspected a suspect member, for the update we pass on. */
  private readonly suspecters = new Map<number, string>();

  constructor(private readonly options: DisseminationOptions) {}

  /** Members waiting to be sent. */
  get size(): number {
    return this.broadcasts.size;
  }

  queue(member: number): void {
    this.broadcasts.queue(member);
  }

  /** A member that left: nothing more is said of it. */
  delete(member: number): void {
    this.broadcasts.delete(member);
  }

  /** Names `from` in the member's suspect updates from now on; undefined: names nobody (this node, if suspect). */
  setSuspecter(member: number, from: string | undefined): void {
    if (from !== undefined) this.suspecters.set(member, from);
    else this.suspecters.delete(member);
  }

  /**
   * Up to `max` updates for a message to `to`, the least sent first. What
   * we believe of the recipient itself goes first (Lifeguard's buddy
   * system): a suspect or dead member learns it at once and refutes.
   */
  piggyback(to: string, max: number, memberCount: number): MemberUpdate[] {
    const { index, members, selfIndex } = this.options;
    const updates: MemberUpdate[] = [];
    const recipient = index.find(to);
    if (recipient !== undefined && recipient !== selfIndex) {
      const state = members.state(recipient);
      if (state === SUSPECT || state === DEAD) updates.push(this.updateFor(recipient));
    }
    if (this.broadcasts.size === 0) return updates;
    const limit = this.options.retransmitMult * Math.ceil(Math.log10(memberCount + 2));
    const buddy = updates.length > 0;
    const room = max - updates.length;
    for (const member of this.broadcasts.take(room, limit, (m) => buddy && m === recipient))
      updates.push(this.updateFor(member));
    return updates;
  }

  /** The update this node would send about `member` (itself: alive at its incarnation). */
  updateFor(member: number): MemberUpdate {
    const { members, selfId, selfIndex } = this.options;
    if (member === selfIndex)
      return { node: selfId, state: 'alive', incarnation: this.options.incarnation() };
    const update = members.updateOf(member);
    if (members.state(member) === SUSPECT) update.from = this.suspecters.get(member) ?? selfId;
    return update;
  }
}
