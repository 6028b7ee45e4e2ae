import { MemberIndex, type MemberState, SwimCore, type SwimMessage } from '../../src/membership/swim-core.js';
import type { SwimLivenessView } from '../../src/reconciler/swim-lease.js';

type Change = { node: string; state: MemberState; incarnation: number };

/**
 * Real SwimCores exchanging messages in memory, in virtual time (as the
 * property tests drive them): every message arrives 5 ms after it was
 * sent, to live cores only; one node's core (`viewer`) is seen through
 * the SwimLivenessView the reconciler reads. Shared by the lease-source
 * contract and the SwimLeaseSource tests.
 */
export class VirtualSwim {
  now = 0;
  readonly up: Set<string>;
  readonly view: SwimLivenessView;
  private readonly cores = new Map<string, SwimCore>();
  private readonly index = new MemberIndex();
  private readonly listeners = new Set<(change: Change) => void>();
  private queue: { at: number; from: string; to: string; message: SwimMessage }[] = [];
  private seed = 7;

  constructor(
    private readonly members: readonly string[] = ['a', 'b', 'c'],
    private readonly viewer = 'a',
  ) {
    this.up = new Set(members);
    for (const id of members) this.cores.set(id, this.makeCore(id));
    this.view = {
      stateOf: (nodeId) => this.core(this.viewer).stateOf(nodeId),
      onChange: (listener) => {
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
      },
    };
  }

  /** Runs virtual time forward by exactly `ms`, in steps of at most 10 ms. */
  run(ms: number): void {
    const end = this.now + ms;
    while (this.now < end) {
      this.now += Math.min(10, end - this.now);
      const due = this.queue.filter((m) => m.at <= this.now);
      this.queue = this.queue.filter((m) => m.at > this.now);
      for (const m of due) if (this.up.has(m.to)) this.core(m.to).receive(this.now, m.from, m.message);
      for (const [id, core] of this.cores) {
        if (!this.up.has(id)) continue;
        if (core.nextWakeAt() <= this.now) core.tick(this.now);
        const { send, events } = core.takeOutput();
        for (const out of send)
          this.queue.push({ at: this.now + 5, from: id, to: out.to, message: out.message });
        if (id !== this.viewer) continue;
        for (const event of events) if (event.kind === 'member') for (const l of this.listeners) l(event);
      }
    }
  }

  /** The node stops: it sends nothing more and what reaches it is lost. */
  crash(id: string): void {
    this.up.delete(id);
  }

  /** The node comes back with a fresh core: it knows no incarnation of its own; refutation raises it (swim-core.ts). */
  restart(id: string): void {
    this.cores.set(id, this.makeCore(id));
    this.up.add(id);
  }

  private makeCore(id: string): SwimCore {
    const random = () => {
      this.seed = (this.seed * 1103515245 + 12345) % 2 ** 31;
      return this.seed / 2 ** 31;
    };
    const core = new SwimCore({ selfId: id, index: this.index, random, incarnation: 0 });
    core.setMembers(new Set(this.members));
    return core;
  }

  private core(id: string): SwimCore {
    const core = this.cores.get(id);
    if (core === undefined) throw new RangeError(`no SWIM core ${id}`);
    return core;
  }
}
