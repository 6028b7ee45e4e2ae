/**
 * Membership and failure detection in the manner of SWIM with the Lifeguard
 * refinements (docs/membership.md). Pure: time comes in as `now` (this
 * node's monotonic clock, ms), randomness through the injected `random`,
 * messages in through `receive` and out through `takeOutput`. Nothing here
 * reads a clock or does I/O, so property tests drive it through arbitrary
 * schedules (test/membership/swim.property.test.ts), and a discrete-event
 * model can hold thousands of them in one process (views are typed arrays
 * over a shared MemberIndex).
 *
 * Per protocol period a node sends one ping, at most `indirectChecks`
 * ping-reqs and answers what it receives: its cost is constant in the
 * number of members. What changed (alive, suspect, dead, with the member's
 * incarnation) travels piggybacked on those messages, each update a bounded
 * number of times (retransmitMult · ⌈log10(n + 1)⌉).
 *
 * Who is a member at all is not decided here: the enrollment document says
 * (`setMembers`); this core only says which members answer.
 */

import { Dissemination } from './dissemination.js';
import { LocalHealth } from './local-health.js';
import type { MemberIndex } from './member-index.js';
import { ALIVE, DEAD, NAMES, NONE, RANK, SUSPECT, supersedes } from './member-states.js';
import { MemberTable } from './member-table.js';
import { ProbeOrder, sampleMembers } from './probe-selection.js';
import { PendingRelays, type Probe } from './probes-in-flight.js';
import { type Suspicion, suspicionTimeout } from './suspicion.js';
import type { MemberState, MemberUpdate, Outgoing, SwimEvent, SwimMessage } from './swim-messages.js';
import { DEFAULT_SWIM_PARAMS, type SwimParams, validateSwimParams } from './swim-params.js';

// The core's public API: its parts are re-exported so users import one module.
export { MemberIndex } from './member-index.js';
export type { MemberState, MemberUpdate, Outgoing, SwimEvent, SwimMessage } from './swim-messages.js';
export {
  DEFAULT_SWIM_PARAMS,
  MAX_UPDATES_PER_MESSAGE,
  type SwimParams,
  SwimParamsError,
  validateSwimParams,
} from './swim-params.js';

export interface SwimCoreOptions {
  selfId: string;
  index: MemberIndex;
  random: () => number;
  params?: Partial<SwimParams>;
  /** This node's incarnation to start from (0 after a restart without it: refutation catches up). */
  incarnation?: number;
}

/**
 * One node's failure detector. Call `setMembers` with the enrolled nodes,
 * `tick(now)` at or after `nextWakeAt()`, `receive(now, from, message)` for
 * each message (the sender already checked to be enrolled by the
 * transport), then send what `takeOutput()` returns.
 */
export class SwimCore {
  readonly selfId: string;
  private readonly params: SwimParams;
  private readonly index: MemberIndex;
  private readonly random: () => number;
  private readonly selfIndex: number;
  private incarnationValue: number;

  /** This node's view of each member, by member index (grown as the shared index grows). */
  private readonly members: MemberTable;
  private memberCount = 0;
  private readonly suspicions = new Map<number, Suspicion>();

  private readonly order: ProbeOrder;
  private probe: Probe | null = null;
  private nextPeriodAt: number | null = null;
  /** When the next gossip round may go out (it goes only while updates wait). */
  private nextGossipAt = 0;
  private periods = 0;
  private seq = 0;
  private readonly relays = new PendingRelays();
  /** Lifeguard's local health: 0 healthy … awarenessMax − 1; timeouts scale by (awareness + 1). */
  private readonly health: LocalHealth;

  /** Member states still to be piggybacked, and the updates made of them. */
  private readonly broadcasts: Dissemination;
  private outbox: Outgoing[] = [];
  private events: SwimEvent[] = [];

  constructor(options: SwimCoreOptions) {
    this.selfId = options.selfId;
    this.params = validateSwimParams({ ...DEFAULT_SWIM_PARAMS, ...options.params });
    this.index = options.index;
    this.random = options.random;
    this.selfIndex = this.index.indexOf(options.selfId);
    this.incarnationValue = options.incarnation ?? 0;
    this.health = new LocalHealth(this.params.awarenessMax);
    this.members = new MemberTable(this.index, this.selfIndex);
    this.order = new ProbeOrder(this.random);
    this.broadcasts = new Dissemination({
      selfId: this.selfId,
      selfIndex: this.selfIndex,
      index: this.index,
      members: this.members,
      incarnation: () => this.incarnationValue,
      retransmitMult: this.params.retransmitMult,
    });
  }

  get incarnation(): number {
    return this.incarnationValue;
  }

  get awareness(): number {
    return this.health.value;
  }

  /** Members other than this node, as this node sees them. */
  view(): MemberUpdate[] {
    return this.members.view();
  }

  stateOf(node: string): MemberUpdate | null {
    return this.members.stateOf(node);
  }

  /**
   * The enrolled nodes (this one may be among them). A new member starts
   * alive at incarnation 0, which anything it or others say supersedes; a
   * removed one (revoked) is forgotten at once.
   */
  setMembers(ids: Iterable<string>): void {
    const wanted = new Set<number>();
    for (const id of ids) wanted.add(this.index.indexOf(id));
    this.members.grow();
    wanted.delete(this.selfIndex);
    const added: number[] = [];
    for (let i = 0; i < this.members.size; i++) {
      if (i === this.selfIndex) continue;
      if (wanted.has(i) && this.members.state(i) === NONE) {
        this.members.set(i, ALIVE, 0);
        added.push(i);
      } else if (!wanted.has(i) && this.members.state(i) !== NONE) {
        this.members.remove(i);
        this.suspicions.delete(i);
        this.broadcasts.delete(i);
        if (this.probe?.target === i) this.probe = null;
      }
    }
    // New members join the rest of the current pass at random places (ProbeOrder.add).
    if (added.length > 0) this.order.add(added);
    this.memberCount = wanted.size;
  }

  /** The earliest local time `tick` has something to do. */
  nextWakeAt(): number {
    let at = this.nextPeriodAt ?? 0;
    if (this.probe && !this.probe.acked && !this.probe.indirectDone && this.probe.indirectAt < at)
      at = this.probe.indirectAt;
    at = this.relays.wakeAt(at);
    for (const s of this.suspicions.values())
      at = Math.min(at, s.startedAt + suspicionTimeout(this.params, this.memberCount, s));
    if (this.params.gossipNodes > 0 && this.broadcasts.size > 0) at = Math.min(at, this.nextGossipAt);
    return at;
  }

  tick(now: number): void {
    for (const [member, s] of [...this.suspicions]) {
      if (now >= s.startedAt + suspicionTimeout(this.params, this.memberCount, s)) {
        this.suspicions.delete(member);
        this.set(member, DEAD, this.members.incarnation(member));
      }
    }
    this.relays.due(now, (relay) =>
      this.send(relay.origin, { kind: 'nack', seq: relay.originSeq, updates: [] }),
    );
    const probe = this.probe;
    if (probe && !probe.acked && !probe.indirectDone && now >= probe.indirectAt) this.sendIndirect(probe);
    if (this.nextPeriodAt === null || now >= this.nextPeriodAt) {
      this.endPeriod(now);
      this.startPeriod(now);
    }
    if (now >= this.nextGossipAt && this.broadcasts.size > 0) this.gossip(now);
  }

  receive(now: number, from: string, message: SwimMessage): void {
    const sender = this.index.find(from);
    // Only members are heard (the transport checks enrollment; this is the same rule for the model).
    if (sender === undefined || sender === this.selfIndex || this.members.state(sender) === undefined) return;
    if (this.members.state(sender) === NONE) return;
    for (const update of message.updates) this.apply(now, update);
    switch (message.kind) {
      case 'ping':
        this.send(from, { kind: 'ack', seq: message.seq, updates: [] }, true);
        return;
      case 'ping-req': {
        const target = this.index.find(message.target);
        if (target === this.selfIndex) {
          this.send(from, { kind: 'ack', seq: message.seq, updates: [] }, true);
          return;
        }
        if (
          target === undefined ||
          this.members.state(target) === undefined ||
          this.members.state(target) === NONE
        )
          return;
        const seq = ++this.seq;
        const timeout = this.health.scaled(this.params.probeTimeoutMs);
        this.relays.open(seq, {
          origin: from,
          originSeq: message.seq,
          nackAt: now + Math.floor(timeout * 0.8),
          nacked: false,
          forgetAt: now + this.health.scaled(this.params.probeIntervalMs),
        });
        this.send(message.target, { kind: 'ping', seq, updates: [] });
        return;
      }
      case 'ack': {
        if (this.probe?.seq === message.seq) {
          this.probe.acked = true;
          return;
        }
        const relay = this.relays.take(message.seq);
        if (relay) this.send(relay.origin, { kind: 'ack', seq: relay.originSeq, updates: [] });
        return;
      }
      case 'nack':
        if (this.probe?.seq === message.seq) this.probe.nacks++;
        return;
      case 'gossip':
        return;
    }
  }

  /** What to send, and what changed, since the last call. */
  takeOutput(): { send: Outgoing[]; events: SwimEvent[] } {
    const out = { send: this.outbox, events: this.events };
    this.outbox = [];
    this.events = [];
    return out;
  }

  // -------------------------------------------------------------------------
  // Probing

  private startPeriod(now: number): void {
    this.periods++;
    this.nextPeriodAt = now + this.health.scaled(this.params.probeIntervalMs);
    this.probe = null;
    const target = this.nextTarget();
    if (target !== null) {
      const seq = ++this.seq;
      this.probe = {
        target,
        seq,
        startedAt: now,
        indirectAt: now + this.health.scaled(this.params.probeTimeoutMs),
        acked: false,
        indirectDone: false,
        relaysAsked: 0,
        nacks: 0,
      };
      this.send(this.index.idOf(target), { kind: 'ping', seq, updates: [] });
    } else {
      // Nobody to probe (every other member dead to us): no probe can fail, so no evidence that we are
      // slow. Without this decay, a node that ended a partition at full awareness kept its 8× periods,
      // and its reconnect pings, the only way back for the others, came once every 80 s.
      this.health.adjust(-1);
    }
    if (this.periods % this.params.reconnectEvery === 0) this.pingDeadMember();
  }

  /** The period's probe is over: what it showed about the target and about this node's own health. */
  private endPeriod(now: number): void {
    const probe = this.probe;
    if (!probe) return;
    this.probe = null;
    if (probe.acked) {
      this.health.adjust(-1);
      return;
    }
    // Lifeguard: relays that did not even nack point at our own slowness, not the target's; with
    // relays that all nacked, the target alone is silent and our health is not in doubt.
    this.health.adjust(probe.relaysAsked > 0 ? probe.relaysAsked - probe.nacks : 1);
    if (this.members.state(probe.target) === ALIVE) {
      this.suspicions.set(probe.target, { startedAt: now, confirmedBy: new Set([this.selfId]) });
      this.set(probe.target, SUSPECT, this.members.incarnation(probe.target), this.selfId);
    } else if (this.members.state(probe.target) === SUSPECT) {
      // We heard the suspicion from someone else and now failed to reach the member ourselves: an
      // independent confirmation, ours to count and to pass on.
      this.confirm(probe.target, this.selfId);
    }
  }

  /**
   * Lifeguard: each independent suspicion of the same incarnation shortens
   * the timeout, so a new confirmer is passed on (the suspicion is
   * disseminated again naming it) until the expected number is reached.
   * Without this only the first suspecter ever counted, and a crash took the
   * longest timeout (tens of seconds) to be declared everywhere.
   */
  protected confirm(member: number, from: string): void {
    const suspicion = this.suspicions.get(member);
    if (!suspicion || suspicion.confirmedBy.has(from)) return;
    suspicion.confirmedBy.add(from);
    if (suspicion.confirmedBy.size > this.params.expectedConfirmations + 1) return;
    this.broadcasts.setSuspecter(member, from);
    this.broadcasts.queue(member);
  }

  private sendIndirect(probe: Probe): void {
    const helpers = this.sample(
      this.params.indirectChecks,
      (i) => i !== probe.target && this.members.state(i) === ALIVE,
    );
    probe.indirectDone = true;
    probe.relaysAsked = helpers.length;
    const target = this.index.idOf(probe.target);
    for (const helper of helpers)
      this.send(this.index.idOf(helper), { kind: 'ping-req', seq: probe.seq, target, updates: [] });
  }

  /** Next member of the shuffled pass that is worth probing (alive or suspect). */
  private nextTarget(): number | null {
    return this.order.next(
      (member) => {
        const state = this.members.state(member);
        return state === ALIVE || state === SUSPECT;
      },
      () => this.members.others(),
    );
  }

  /**
   * A member declared dead is probed no more, so one that was merely cut off
   * (a partition both sides declared dead) would stay dead to us for good.
   * Now and then one is pinged with its obituary piggybacked: if it lives,
   * it refutes with a higher incarnation and the ack carries that back.
   */
  protected pingDeadMember(): void {
    const [dead] = this.sample(1, (i) => this.members.state(i) === DEAD);
    if (dead === undefined) return;
    this.send(this.index.idOf(dead), { kind: 'ping', seq: ++this.seq, updates: [] });
  }

  /**
   * Probes alone carry maxPiggyback updates about three times a period: at
   * 10,000 nodes and 5 % loss the false suspicions (and their refutations
   * and confirmations) arrived faster than that, the queue never drained,
   * and live members were declared dead before their refutation reached the
   * others (docs/benchmarks.md, "Membership at scale"). So, as memberlist
   * does, while anything waits a round of gossip goes to `gossipNodes`
   * random members every `gossipIntervalMs`; a quiet cluster sends none.
   * memberlist sends to 3 (UDP datagrams); here each message is a libp2p
   * stream, so the default is 1: at 1,000 nodes and 5 % loss that halved
   * the messages of 3 for 0.7 s more until a crash is known everywhere.
   */
  private gossip(now: number): void {
    this.nextGossipAt = now + this.params.gossipIntervalMs;
    const targets = this.sample(
      this.params.gossipNodes,
      (i) => this.members.state(i) === ALIVE || this.members.state(i) === SUSPECT,
    );
    for (const target of targets) {
      if (this.broadcasts.size === 0) return;
      const to = this.index.idOf(target);
      const updates = this.piggyback(to, this.params.maxGossipUpdates);
      if (updates.length > 0) this.outbox.push({ to, message: { kind: 'gossip', seq: 0, updates } });
    }
  }

  // -------------------------------------------------------------------------
  // Updates

  private apply(now: number, update: MemberUpdate): void {
    const rank = RANK[update.state];
    if (rank === undefined || !Number.isInteger(update.incarnation) || update.incarnation < 0) return;
    const member = this.index.find(update.node);
    if (member === undefined) return;
    if (member === this.selfIndex) {
      this.aboutSelf(update);
      return;
    }
    if (member >= this.members.size || this.members.state(member) === NONE) return;
    const current = this.members.state(member) as number;
    const inc = this.members.incarnation(member);
    if (supersedes(rank, update.incarnation, current, inc)) {
      if (rank === SUSPECT) {
        this.suspicions.set(member, {
          startedAt: now,
          confirmedBy: new Set(update.from === undefined ? [] : [update.from]),
        });
      } else {
        this.suspicions.delete(member);
      }
      this.set(member, rank, update.incarnation, update.from);
      return;
    }
    // The same suspicion from someone else: Lifeguard shortens the timeout with each independent one.
    if (rank === SUSPECT && current === SUSPECT && update.incarnation === inc && update.from !== undefined) {
      this.confirm(member, update.from);
    }
  }

  /** Someone speaks of this node. */
  private aboutSelf(update: MemberUpdate): void {
    if (update.state === 'alive') {
      // Our own alive from an earlier life (a restart lost our incarnation): move past it.
      if (update.incarnation > this.incarnationValue) {
        this.incarnationValue = update.incarnation + 1;
        this.broadcasts.queue(this.selfIndex);
      }
      return;
    }
    if (update.incarnation >= this.incarnationValue) this.refute(update);
  }

  /** SWIM §4.2: a suspicion (or obituary) of a live node is answered with a higher incarnation. */
  protected refute(update: MemberUpdate): void {
    this.incarnationValue = update.incarnation + 1;
    this.broadcasts.queue(this.selfIndex);
    // Lifeguard: being suspected hints that we are the slow one.
    this.health.adjust(1);
    this.events.push({ kind: 'refuted', incarnation: this.incarnationValue, by: update.state });
  }

  private set(member: number, state: number, incarnation: number, from?: string): void {
    this.members.set(member, state, incarnation);
    this.broadcasts.setSuspecter(member, state === SUSPECT ? from : undefined);
    this.broadcasts.queue(member);
    this.events.push({
      kind: 'member',
      node: this.index.idOf(member),
      state: NAMES[state] as MemberState,
      incarnation,
    });
  }

  // -------------------------------------------------------------------------
  // Sending

  /**
   * `withSelf`: an ack starts with the responder's own incarnation, so every
   * probe of a live member refreshes the prober's view of it. Piggybacked
   * dissemination alone is probabilistic (each update goes out a bounded
   * number of times); with this, round-robin probing makes every live pair
   * agree within one pass.
   */
  private send(to: string, message: SwimMessage, withSelf = false): void {
    message.updates = this.piggyback(to);
    if (withSelf && !message.updates.some((u) => u.node === this.selfId))
      message.updates.unshift(this.broadcasts.updateFor(this.selfIndex));
    this.outbox.push({ to, message });
  }

  /** Up to `max` updates for a message to `to` (dissemination.ts). */
  private piggyback(to: string, max = this.params.maxPiggyback): MemberUpdate[] {
    return this.broadcasts.piggyback(to, max, this.memberCount);
  }

  /** Up to `count` distinct other members matching `accept`, uniformly at random (probe-selection.ts). */
  private sample(count: number, accept: (member: number) => boolean): number[] {
    return sampleMembers(count, this.members.size, (i) => this.members.isOther(i) && accept(i), this.random);
  }
}
