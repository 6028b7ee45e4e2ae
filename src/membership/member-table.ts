import type { MemberIndex } from './member-index.js';
import { NAMES, NONE } from './member-states.js';
import type { MemberState, MemberUpdate } from './swim-messages.js';

/**
 * One node's view of every member: a state byte and an incarnation per
 * member index, as typed arrays grown with the shared MemberIndex, so a
 * discrete-event model holds thousands of views in one process. Indexes
 * past the end (members the index learnt after the last `grow`) read as
 * undefined, as unknown members.
 */
export class MemberTable {
  private states: Uint8Array = new Uint8Array(0);
  private incarnations: Uint32Array = new Uint32Array(0);

  constructor(
    private readonly index: MemberIndex,
    private readonly selfIndex: number,
  ) {
    this.grow();
  }

  /** Indexes the view covers (members and non-members alike). */
  get size(): number {
    return this.states.length;
  }

  state(member: number): number | undefined {
    return this.states[member];
  }

  incarnation(member: number): number {
    return this.incarnations[member] as number;
  }

  set(member: number, state: number, incarnation: number): void {
    this.states[member] = state;
    this.incarnations[member] = incarnation;
  }

  /** No longer a member (its incarnation is kept until it returns: it restarts from 0 then). */
  remove(member: number): void {
    this.states[member] = NONE;
  }

  /** Another node that is a member (of whatever state). */
  isOther(member: number): boolean {
    return member !== this.selfIndex && this.states[member] !== NONE;
  }

  /** Other members' indexes, in index order. */
  others(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.states.length; i++) if (this.isOther(i)) out.push(i);
    return out;
  }

  /** What this node believes of `member` (not itself), as it would disseminate it. */
  updateOf(member: number): MemberUpdate {
    return {
      node: this.index.idOf(member),
      state: NAMES[this.states[member] as number] as MemberState,
      incarnation: this.incarnations[member] as number,
    };
  }

  /** Members other than this node, as this node sees them. */
  view(): MemberUpdate[] {
    const out: MemberUpdate[] = [];
    for (let i = 0; i < this.states.length; i++) if (this.isOther(i)) out.push(this.updateOf(i));
    return out;
  }

  stateOf(node: string): MemberUpdate | null {
    const i = this.index.find(node);
    if (i === undefined || i >= this.states.length || !this.isOther(i)) return null;
    return {
      node,
      state: NAMES[this.states[i] as number] as MemberState,
      incarnation: this.incarnations[i] as number,
    };
  }

  /** Covers every index the shared MemberIndex has handed out; new ones start as non-members. */
  grow(): void {
    const size = this.index.size;
    if (size <= this.states.length) return;
    const states = new Uint8Array(size).fill(NONE);
    states.set(this.states);
    const incarnations = new Uint32Array(size);
    incarnations.set(this.incarnations);
    this.states = states;
    this.incarnations = incarnations;
  }
}
