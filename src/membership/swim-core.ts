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

import { SiloError } from '../util/silo-error.js';
import { BroadcastQueue } from './broadcast-queue.js';

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

export interface SwimParams {
  /** One probe per period (scaled by the local health multiplier). */
  probeIntervalMs: number;
  /** Direct ping's wait before the indirect probes (scaled likewise). */
  probeTimeoutMs: number;
  /** Members asked to probe indirectly after a missed direct ack. */
  indirectChecks: number;
  /** An update is piggybacked retransmitMult · ⌈log10(n + 1)⌉ times. */
  retransmitMult: number;
  /** Shortest suspicion: suspicionMult · max(1, log10 n) probe intervals. */
  suspicionMult: number;
  /** Longest suspicion (no confirmations): this many times the shortest. */
  suspicionMaxMult: number;
  /** Independent suspicions that bring the timeout down to the shortest (Lifeguard's K). */
  expectedConfirmations: number;
  /** Local health multiplier ceiling (Lifeguard's S): timeouts stretch up to this factor. */
  awarenessMax: number;
  /** Updates per probe message (ping, ping-req, ack, nack) at most. */
  maxPiggyback: number;
  /** While updates wait to be sent, a gossip message goes to `gossipNodes` members this often. */
  gossipIntervalMs: number;
  /** Members each gossip round goes to (0: dissemination rides on probes only). */
  gossipNodes: number;
  /** Updates per gossip message at most. */
  maxGossipUpdates: number;
  /** Every this many periods, ping one dead member (with its obituary), so one that lives refutes it. */
  reconnectEvery: number;
}

export const DEFAULT_SWIM_PARAMS: Readonly<SwimParams> = Object.freeze({
  probeIntervalMs: 1000,
  probeTimeoutMs: 500,
  indirectChecks: 3,
  retransmitMult: 4,
  suspicionMult: 4,
  suspicionMaxMult: 6,
  expectedConfirmations: 3,
  awarenessMax: 8,
  maxPiggyback: 8,
  gossipIntervalMs: 200,
  gossipNodes: 1,
  maxGossipUpdates: 32,
  reconnectEvery: 10,
});

/** No message carries more updates (the wire format refuses more: swim-frames.ts). */
export const MAX_UPDATES_PER_MESSAGE = 64;

export class SwimParamsError extends SiloError<'invalid_input'> {
  constructor(message: string, options?: ErrorOptions) {
    super('invalid_input', message, options);
  }
}

export function validateSwimParams(params: SwimParams): SwimParams {
  const positive = [
    'probeIntervalMs',
    'probeTimeoutMs',
    'retransmitMult',
    'suspicionMult',
    'maxPiggyback',
    'gossipIntervalMs',
    'maxGossipUpdates',
  ];
  for (const key of positive) {
    const value = params[key as keyof SwimParams];
    if (!(Number.isFinite(value) && value > 0)) throw new SwimParamsError(`${key} must be > 0, got ${value}`);
  }
  if (params.probeTimeoutMs >= params.probeIntervalMs)
    throw new SwimParamsError(
      `probeTimeoutMs (${params.probeTimeoutMs}) must be shorter than probeIntervalMs (${params.probeIntervalMs}): the indirect probes need the rest of the period`,
    );
  if (!(params.suspicionMaxMult >= 1)) throw new SwimParamsError('suspicionMaxMult must be >= 1');
  for (const key of ['maxPiggyback', 'maxGossipUpdates'] as const) {
    if (params[key] > MAX_UPDATES_PER_MESSAGE)
      throw new SwimParamsError(`${key} must be at most ${MAX_UPDATES_PER_MESSAGE}, got ${params[key]}`);
  }
  const counts = [
    'indirectChecks',
    'gossipNodes',
    'expectedConfirmations',
    'reconnectEvery',
    'awarenessMax',
  ] as const;
  for (const key of counts) {
    const least = key === 'indirectChecks' || key === 'gossipNodes' ? 0 : 1;
    if (!(Number.isInteger(params[key]) && params[key] >= least))
      throw new SwimParamsError(`${key} must be a whole number >= ${least}`);
  }
  return params;
}

/**
 * Member ids to dense indexes, shared by every core in one process: the
 * discrete-event model holds 10,000 views of 10,000 members as typed arrays
 * instead of 10,000 maps.
 */
export class MemberIndex {
  private readonly byId = new Map<string, number>();
  private readonly ids: string[] = [];

  indexOf(id: string): number {
    let index = this.byId.get(id);
    if (index === undefined) {
      index = this.ids.length;
      this.byId.set(id, index);
      this.ids.push(id);
    }
    return index;
  }

  find(id: string): number | undefined {
    return this.byId.get(id);
  }

  idOf(index: number): string {
    const id = this.ids[index];
    if (id === undefined) throw new RangeError(`no member with index ${index}`);
    return id;
  }

  get size(): number {
    return this.ids.length;
  }
}

const ALIVE = 0;
const SUSPECT = 1;
const DEAD = 2;
/** Not (or no longer) a member: never probed, updates about it ignored. */
const NONE = 3;
const NAMES: readonly MemberState[] = ['alive', 'suspect', 'dead'];
const RANK: Readonly<Record<MemberState, number>> = { alive: ALIVE, suspect: SUSPECT, dead: DEAD };

interface Suspicion {
  startedAt: number;
  /** Members that suspected it independently (the first included). */
  confirmedBy: Set<string>;
}

interface Probe {
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

interface Relay {
  origin: string;
  originSeq: number;
  /** Lifeguard: a nack goes back at 80 % of the probe timeout when the target stayed silent. */
  nackAt: number;
  nacked: boolean;
  forgetAt: number;
}

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

  // Views, by member index (grown as the shared index grows).
  private states: Uint8Array = new Uint8Array(0);
  private incarnations: Uint32Array = new Uint32Array(0);
  private memberCount = 0;
  private readonly suspicions = new Map<number, Suspicion>();
  /** Who suspected a suspect member, for the update we pass on. */
  private readonly suspecters = new Map<number, string>();

  /** Randomised round-robin (SWIM §4.3): a shuffled pass over the members, reshuffled when used up. */
  private order: number[] = [];
  private orderPos = 0;
  private probe: Probe | null = null;
  private nextPeriodAt: number | null = null;
  /** When the next gossip round may go out (it goes only while updates wait). */
  private nextGossipAt = 0;
  private periods = 0;
  private seq = 0;
  private readonly relays = new Map<number, Relay>();
  /** Lifeguard's local health: 0 healthy … awarenessMax − 1; timeouts scale by (awareness + 1). */
  private awarenessValue = 0;

  /** Member states still to be piggybacked, least sent first. */
  private readonly broadcasts = new BroadcastQueue();
  private outbox: Outgoing[] = [];
  private events: SwimEvent[] = [];

  constructor(options: SwimCoreOptions) {
    this.selfId = options.selfId;
    this.params = validateSwimParams({ ...DEFAULT_SWIM_PARAMS, ...options.params });
    this.index = options.index;
    this.random = options.random;
    this.selfIndex = this.index.indexOf(options.selfId);
    this.incarnationValue = options.incarnation ?? 0;
    this.grow();
  }

  get incarnation(): number {
    return this.incarnationValue;
  }

  get awareness(): number {
    return this.awarenessValue;
  }

  /** Members other than this node, as this node sees them. */
  view(): MemberUpdate[] {
    const out: MemberUpdate[] = [];
    for (let i = 0; i < this.states.length; i++) {
      const state = this.states[i] as number;
      if (i === this.selfIndex || state === NONE) continue;
      out.push({
        node: this.index.idOf(i),
        state: NAMES[state] as MemberState,
        incarnation: this.incarnations[i] as number,
      });
    }
    return out;
  }

  stateOf(node: string): MemberUpdate | null {
    const i = this.index.find(node);
    if (i === undefined || i >= this.states.length || i === this.selfIndex) return null;
    const state = this.states[i] as number;
    if (state === NONE) return null;
    return { node, state: NAMES[state] as MemberState, incarnation: this.incarnations[i] as number };
  }

  /**
   * The enrolled nodes (this one may be among them). A new member starts
   * alive at incarnation 0, which anything it or others say supersedes; a
   * removed one (revoked) is forgotten at once.
   */
  setMembers(ids: Iterable<string>): void {
    const wanted = new Set<number>();
    for (const id of ids) wanted.add(this.index.indexOf(id));
    this.grow();
    wanted.delete(this.selfIndex);
    const added: number[] = [];
    for (let i = 0; i < this.states.length; i++) {
      if (i === this.selfIndex) continue;
      if (wanted.has(i) && this.states[i] === NONE) {
        this.states[i] = ALIVE;
        this.incarnations[i] = 0;
        added.push(i);
      } else if (!wanted.has(i) && this.states[i] !== NONE) {
        this.states[i] = NONE;
        this.suspicions.delete(i);
        this.broadcasts.delete(i);
        if (this.probe?.target === i) this.probe = null;
      }
    }
    if (added.length > 0) {
      // New members join the rest of the current pass at random places, so that each is probed within
      // about one pass. One shuffle of the rest, not a splice per member: a whole cluster at start
      // (thousands of members) stays O(n).
      const rest = this.order.slice(this.orderPos).concat(added);
      this.shuffle(rest);
      this.order = this.order.slice(0, this.orderPos).concat(rest);
    }
    this.memberCount = wanted.size;
  }

  /** The earliest local time `tick` has something to do. */
  nextWakeAt(): number {
    let at = this.nextPeriodAt ?? 0;
    if (this.probe && !this.probe.acked && !this.probe.indirectDone && this.probe.indirectAt < at)
      at = this.probe.indirectAt;
    for (const relay of this.relays.values()) at = Math.min(at, relay.nacked ? relay.forgetAt : relay.nackAt);
    for (const s of this.suspicions.values()) at = Math.min(at, s.startedAt + this.suspicionTimeout(s));
    if (this.params.gossipNodes > 0 && this.broadcasts.size > 0) at = Math.min(at, this.nextGossipAt);
    return at;
  }

  tick(now: number): void {
    for (const [member, s] of [...this.suspicions]) {
      if (now >= s.startedAt + this.suspicionTimeout(s)) {
        this.suspicions.delete(member);
        this.set(member, DEAD, this.incarnations[member] as number);
      }
    }
    for (const [seq, relay] of this.relays) {
      if (!relay.nacked && now >= relay.nackAt) {
        relay.nacked = true;
        this.send(relay.origin, { kind: 'nack', seq: relay.originSeq, updates: [] });
      }
      if (now >= relay.forgetAt) this.relays.delete(seq);
    }
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
    if (sender === undefined || sender === this.selfIndex || this.states[sender] === undefined) return;
    if (this.states[sender] === NONE) return;
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
        if (target === undefined || this.states[target] === undefined || this.states[target] === NONE) return;
        const seq = ++this.seq;
        const timeout = this.scaled(this.params.probeTimeoutMs);
        this.relays.set(seq, {
          origin: from,
          originSeq: message.seq,
          nackAt: now + Math.floor(timeout * 0.8),
          nacked: false,
          forgetAt: now + this.scaled(this.params.probeIntervalMs),
        });
        this.send(message.target, { kind: 'ping', seq, updates: [] });
        return;
      }
      case 'ack': {
        if (this.probe?.seq === message.seq) {
          this.probe.acked = true;
          return;
        }
        const relay = this.relays.get(message.seq);
        if (relay) {
          this.relays.delete(message.seq);
          this.send(relay.origin, { kind: 'ack', seq: relay.originSeq, updates: [] });
        }
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
    this.nextPeriodAt = now + this.scaled(this.params.probeIntervalMs);
    this.probe = null;
    const target = this.nextTarget();
    if (target !== null) {
      const seq = ++this.seq;
      this.probe = {
        target,
        seq,
        startedAt: now,
        indirectAt: now + this.scaled(this.params.probeTimeoutMs),
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
      this.adjustAwareness(-1);
    }
    if (this.periods % this.params.reconnectEvery === 0) this.pingDeadMember();
  }

  /** The period's probe is over: what it showed about the target and about this node's own health. */
  private endPeriod(now: number): void {
    const probe = this.probe;
    if (!probe) return;
    this.probe = null;
    if (probe.acked) {
      this.adjustAwareness(-1);
      return;
    }
    // Lifeguard: relays that did not even nack point at our own slowness, not the target's; with
    // relays that all nacked, the target alone is silent and our health is not in doubt.
    this.adjustAwareness(probe.relaysAsked > 0 ? probe.relaysAsked - probe.nacks : 1);
    if (this.states[probe.target] === ALIVE) {
      this.suspicions.set(probe.target, { startedAt: now, confirmedBy: new Set([this.selfId]) });
      this.set(probe.target, SUSPECT, this.incarnations[probe.target] as number, this.selfId);
    } else if (this.states[probe.target] === SUSPECT) {
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
    this.suspecters.set(member, from);
    this.queue(member);
  }

  private sendIndirect(probe: Probe): void {
    const helpers = this.sample(
      this.params.indirectChecks,
      (i) => i !== probe.target && this.states[i] === ALIVE,
    );
    probe.indirectDone = true;
    probe.relaysAsked = helpers.length;
    const target = this.index.idOf(probe.target);
    for (const helper of helpers)
      this.send(this.index.idOf(helper), { kind: 'ping-req', seq: probe.seq, target, updates: [] });
  }

  /** Next member of the shuffled pass that is worth probing (alive or suspect). */
  private nextTarget(): number | null {
    for (let pass = 0; pass < 2; pass++) {
      while (this.orderPos < this.order.length) {
        const candidate = this.order[this.orderPos++] as number;
        const state = this.states[candidate];
        if (state === ALIVE || state === SUSPECT) return candidate;
      }
      this.reshuffle();
      if (this.order.length === 0) return null;
    }
    return null;
  }

  private reshuffle(): void {
    const order: number[] = [];
    for (let i = 0; i < this.states.length; i++)
      if (i !== this.selfIndex && this.states[i] !== NONE) order.push(i);
    this.shuffle(order);
    this.order = order;
    this.orderPos = 0;
  }

  /** Fisher-Yates, in place. */
  private shuffle(items: number[]): void {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1));
      [items[i], items[j]] = [items[j] as number, items[i] as number];
    }
  }

  /**
   * A member declared dead is probed no more, so one that was merely cut off
   * (a partition both sides declared dead) would stay dead to us for good.
   * Now and then one is pinged with its obituary piggybacked: if it lives,
   * it refutes with a higher incarnation and the ack carries that back.
   */
  protected pingDeadMember(): void {
    const [dead] = this.sample(1, (i) => this.states[i] === DEAD);
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
      (i) => this.states[i] === ALIVE || this.states[i] === SUSPECT,
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
    if (member >= this.states.length || this.states[member] === NONE) return;
    const current = this.states[member] as number;
    const inc = this.incarnations[member] as number;
    if (update.incarnation > inc || (update.incarnation === inc && rank > current)) {
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
        this.queue(this.selfIndex);
      }
      return;
    }
    if (update.incarnation >= this.incarnationValue) this.refute(update);
  }

  /** SWIM §4.2: a suspicion (or obituary) of a live node is answered with a higher incarnation. */
  protected refute(update: MemberUpdate): void {
    this.incarnationValue = update.incarnation + 1;
    this.queue(this.selfIndex);
    // Lifeguard: being suspected hints that we are the slow one.
    this.adjustAwareness(1);
    this.events.push({ kind: 'refuted', incarnation: this.incarnationValue, by: update.state });
  }

  private set(member: number, state: number, incarnation: number, from?: string): void {
    this.states[member] = state;
    this.incarnations[member] = incarnation;
    if (state === SUSPECT && from !== undefined) this.suspecters.set(member, from);
    else this.suspecters.delete(member);
    this.queue(member);
    this.events.push({
      kind: 'member',
      node: this.index.idOf(member),
      state: NAMES[state] as MemberState,
      incarnation,
    });
  }

  private queue(member: number): void {
    this.broadcasts.queue(member);
  }

  private suspicionTimeout(s: Suspicion): number {
    const n = Math.max(this.memberCount + 1, 1);
    const min = this.params.suspicionMult * Math.max(1, Math.log10(n)) * this.params.probeIntervalMs;
    const max = this.params.suspicionMaxMult * min;
    const k = Math.min(this.params.expectedConfirmations, n - 2);
    if (k < 1) return min;
    const confirmations = Math.max(0, s.confirmedBy.size - 1);
    const timeout = max - ((max - min) * Math.log(confirmations + 1)) / Math.log(k + 1);
    return Math.max(min, Math.floor(timeout));
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
      message.updates.unshift(this.updateFor(this.selfIndex));
    this.outbox.push({ to, message });
  }

  /**
   * Up to `max` updates, the least sent first. What we believe of
   * the recipient itself goes first (Lifeguard's buddy system): a suspect
   * or dead member learns it at once and refutes.
   */
  private piggyback(to: string, max = this.params.maxPiggyback): MemberUpdate[] {
    const updates: MemberUpdate[] = [];
    const recipient = this.index.find(to);
    if (recipient !== undefined && recipient !== this.selfIndex) {
      const state = this.states[recipient];
      if (state === SUSPECT || state === DEAD) updates.push(this.updateFor(recipient));
    }
    if (this.broadcasts.size === 0) return updates;
    const limit = this.params.retransmitMult * Math.ceil(Math.log10(this.memberCount + 2));
    const buddy = updates.length > 0;
    const room = max - updates.length;
    for (const member of this.broadcasts.take(room, limit, (m) => buddy && m === recipient))
      updates.push(this.updateFor(member));
    return updates;
  }

  private updateFor(member: number): MemberUpdate {
    if (member === this.selfIndex)
      return { node: this.selfId, state: 'alive', incarnation: this.incarnationValue };
    const state = this.states[member] as number;
    const update: MemberUpdate = {
      node: this.index.idOf(member),
      state: NAMES[state] as MemberState,
      incarnation: this.incarnations[member] as number,
    };
    if (state === SUSPECT) update.from = this.suspecters.get(member) ?? this.selfId;
    return update;
  }

  // -------------------------------------------------------------------------
  // Helpers

  private scaled(ms: number): number {
    return ms * (this.awarenessValue + 1);
  }

  private adjustAwareness(delta: number): void {
    this.awarenessValue = Math.min(this.params.awarenessMax - 1, Math.max(0, this.awarenessValue + delta));
  }

  /**
   * Up to `count` distinct members matching `accept`, uniformly at random.
   * Random draws first (cheap when most members match, as alive ones do),
   * a full scan only when they keep missing.
   */
  private sample(count: number, accept: (member: number) => boolean): number[] {
    const picked: number[] = [];
    const size = this.states.length;
    for (let tries = 0; tries < 8 * count && picked.length < count; tries++) {
      const i = Math.floor(this.random() * size);
      if (i !== this.selfIndex && this.states[i] !== NONE && accept(i) && !picked.includes(i)) picked.push(i);
    }
    if (picked.length === count) return picked;
    const pool: number[] = [];
    for (let i = 0; i < this.states.length; i++)
      if (i !== this.selfIndex && this.states[i] !== NONE && accept(i)) pool.push(i);
    picked.length = 0;
    while (picked.length < count && pool.length > 0) {
      const j = Math.floor(this.random() * pool.length);
      picked.push(pool[j] as number);
      pool[j] = pool[pool.length - 1] as number;
      pool.pop();
    }
    return picked;
  }

  private grow(): void {
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
