import { Listeners } from '../util/listeners.js';
import type { FailureDetector } from './failure-detector.js';
import type { Heartbeat, HeartbeatAck } from './heartbeat.js';

/**
 * The bookkeeping behind acknowledged heartbeats (docs/placement.md L1, A1):
 * what this node puts into its heartbeats' `acks` and `dead`, when it sent
 * each of its own recent heartbeats, and what each peer's latest heartbeat
 * said about us and about the others. Plain data, no libp2p: the
 * LivenessService feeds it, the lease source (src/reconciler/heartbeat-lease.ts)
 * reads it.
 *
 * Dead stays dead (A1) is enforced here, not in the FailureDetector: the
 * detector still revives a dead node heard again with the same incarnation,
 * because redial, mesh repair and digest syncs want to talk to whoever is
 * reachable. Only what matters for ownership goes through this ledger: once
 * we declared an incarnation dead we never acknowledge it again and keep
 * listing it dead, and the lease source's liveness view keeps it dead, until
 * the node comes back with a higher incarnation.
 */

export interface HeartbeatLedgerOptions {
  selfId: string;
  /** This process's first incarnation. */
  incarnation: number;
  detector: FailureDetector;
  /** The detector's clock. */
  now: () => number;
  /** How long our send times are kept; default the detector's dead_after (fence_after is shorter). */
  sendLogMs?: number;
}

/** What the latest heartbeat of a peer said. */
export interface PeerReport {
  incarnation: number;
  seq: number;
  /** Its ack of one of our heartbeats, [our incarnation, our seq]; any incarnation of ours. */
  ackOfSelf: HeartbeatAck | undefined;
  /** nodeId → incarnation it declared dead. */
  dead: ReadonlyMap<string, number>;
  /** Local time it arrived. */
  receivedAt: number;
}

export interface OutgoingHeartbeatFields {
  incarnation: number;
  seq: number;
  acks: Map<string, HeartbeatAck>;
  dead: Map<string, number>;
}

/** Report listeners get the peer and the node ids whose attestations may have changed. */
export type ReportListener = (peer: string, affected: readonly string[]) => void;

/** Send log entries beyond this are dropped even inside the retention time (a bound, not a tuning knob). */
const MAX_SEND_LOG = 4096;
/** Incarnations peers mention that we have not heard ourselves; bounded against junk from a bad peer. */
const MAX_MENTIONS = 4096;

export class HeartbeatLedger {
  readonly selfId: string;
  /** Local time the ledger (the liveness view) began. */
  readonly startedAt: number;
  private readonly detector: FailureDetector;
  private readonly now: () => number;
  private readonly sendLogMs: number;
  private currentIncarnation: number;
  private incarnationStart: number;
  private seq = 0;
  /** Our sends of the current incarnation, oldest first. */
  private sendLog: { seq: number; at: number }[] = [];
  private readonly reports = new Map<string, PeerReport>();
  /** nodeId → highest incarnation we declared dead (A1). */
  private readonly declared = new Map<string, number>();
  /** nodeId → an incarnation peers mention that is newer than any we heard, and since when we know of it. */
  private readonly mentions = new Map<string, { incarnation: number; since: number }>();
  private expectedNodes: () => readonly string[] = () => [];
  private isNonMember: (nodeId: string) => boolean = () => false;
  // A failing listener must not stop heartbeat processing or the other listeners.
  private readonly reportListeners = new Listeners<Parameters<ReportListener>>(() => undefined);
  private readonly rejoinListeners = new Listeners<[incarnation: number]>(() => undefined);

  constructor(options: HeartbeatLedgerOptions) {
    this.selfId = options.selfId;
    this.detector = options.detector;
    this.now = options.now;
    this.sendLogMs = options.sendLogMs ?? options.detector.deadAfterMs;
    this.currentIncarnation = options.incarnation;
    this.startedAt = this.now();
    this.incarnationStart = this.startedAt;
  }

  get incarnation(): number {
    return this.currentIncarnation;
  }

  /** Local time the current incarnation began (start, or the last rejoin). */
  get incarnationSince(): number {
    return this.incarnationStart;
  }

  /**
   * The nodes that should be there (active enrolled): a node among them we
   * never heard is declared dead (incarnation 0, or the one peers mention)
   * once we have listened for dead_after, so that a quorum can attest a
   * node nobody hears any more, e.g. after a cluster-wide restart.
   */
  setExpectedNodes(list: () => readonly string[]): void {
    this.expectedNodes = list;
  }

  /**
   * Nodes that never count for ownership (`client` enrollment records,
   * docs/protocol.md "Enrollment roles"): we hear them like anyone, but
   * never acknowledge them nor declare them dead, so a tool that comes and
   * goes leaves no trace in anybody's evidence. Read on every heartbeat.
   */
  setNonMembers(isNonMember: (nodeId: string) => boolean): void {
    this.isNonMember = isNonMember;
  }

  /**
   * Fields of the heartbeat about to be sent; records its send time. Acks
   * cover the nodes heard within dead_after whose incarnation we have not
   * declared dead; `dead` lists every declaration (A1). `withEvidence`
   * false: both left empty (heartbeats that carry neither).
   */
  nextHeartbeat(withEvidence = true): OutgoingHeartbeatFields {
    const now = this.now();
    const dead = new Map<string, number>();
    const acks = new Map<string, HeartbeatAck>();
    if (!withEvidence) {
      // Heartbeats without acks and dead (heartbeatAcks off): skip the two
      // walks over every member, which would make each beat O(N) for nothing.
      return { incarnation: this.currentIncarnation, seq: this.nextSeq(now), acks, dead };
    }
    for (const nodeId of this.candidates()) {
      const incarnation = this.ownDeadIncarnation(nodeId, now);
      if (incarnation !== undefined) dead.set(nodeId, incarnation);
    }
    for (const member of this.detector.view()) {
      if (member.nodeId === this.selfId || member.state === 'dead') continue;
      if (this.isNonMember(member.nodeId)) continue;
      if (now - member.lastSeenAt >= this.detector.deadAfterMs) continue;
      if (this.isDeclaredDead(member.nodeId, member.incarnation)) continue;
      acks.set(member.nodeId, [member.incarnation, member.seq]);
    }
    return { incarnation: this.currentIncarnation, seq: this.nextSeq(now), acks, dead };
  }

  /** The next heartbeat's seq, logged with its send time (acks name it later). */
  private nextSeq(now: number): number {
    const seq = this.seq++;
    this.sendLog.push({ seq, at: now });
    this.trimSendLog(now);
    return seq;
  }

  /** Local send time of our heartbeat `(incarnation, seq)`, if it is recent enough to be in the log. */
  sentAt(incarnation: number, seq: number): number | undefined {
    if (incarnation !== this.currentIncarnation) return undefined;
    // Acks name recent heartbeats: search from the newest end.
    for (let i = this.sendLog.length - 1; i >= 0; i--) {
      const entry = this.sendLog[i]!;
      if (entry.seq === seq) return entry.at;
      if (entry.seq < seq) return undefined;
    }
    return undefined;
  }

  /** Size of the send log (for tests and metrics). */
  sendLogSize(): number {
    return this.sendLog.length;
  }

  /** Records a fresh heartbeat that passed validation and the detector (newer than the last one). */
  record(heartbeat: Heartbeat): void {
    const now = this.now();
    const previous = this.reports.get(heartbeat.nodeId);
    this.reports.set(heartbeat.nodeId, {
      incarnation: heartbeat.incarnation,
      seq: heartbeat.seq,
      ackOfSelf: heartbeat.acks.get(this.selfId),
      dead: heartbeat.dead,
      receivedAt: now,
    });
    for (const [nodeId, [incarnation]] of heartbeat.acks) this.mention(nodeId, incarnation, now);
    for (const [nodeId, incarnation] of heartbeat.dead) this.mention(nodeId, incarnation, now);
    const affected = new Set<string>(heartbeat.dead.keys());
    if (previous) for (const nodeId of previous.dead.keys()) affected.add(nodeId);
    affected.add(heartbeat.nodeId);
    this.reportListeners.emit(heartbeat.nodeId, [...affected]);
  }

  report(nodeId: string): PeerReport | undefined {
    return this.reports.get(nodeId);
  }

  /** Called after every recorded heartbeat. */
  onReport(listener: ReportListener): () => void {
    return this.reportListeners.add(listener);
  }

  /**
   * The incarnation of `nodeId` that counts as current: the highest one we
   * heard or any peer mentioned (acks or dead); 0 when nothing is known.
   */
  knownIncarnation(nodeId: string): number {
    const heard = this.detector.member(nodeId)?.incarnation ?? 0;
    return this.knownFrom(nodeId, heard);
  }

  /**
   * Our own attestation: the incarnation of `nodeId` we declare dead, or
   * undefined while we do not. A declaration is permanent for that
   * incarnation (A1). We declare `nodeId`'s current incarnation dead when
   * our detector has not heard it for dead_after, or when we have not heard
   * it at all for dead_after since we learned of it (an incarnation only
   * peers mention, or an expected node never heard: incarnation 0).
   */
  ownDeadIncarnation(nodeId: string, now: number = this.now()): number | undefined {
    if (nodeId === this.selfId) return undefined;
    const member = this.detector.member(nodeId);
    const known = this.knownFrom(nodeId, member?.incarnation ?? 0);
    const declared = this.declared.get(nodeId);
    if (declared !== undefined && declared >= known) return declared;
    const deadAfter = this.detector.deadAfterMs;
    if (member !== undefined && member.incarnation === known) {
      if (member.state === 'dead' || now - member.lastSeenAt >= deadAfter) return this.declare(nodeId, known);
      return undefined;
    }
    // Never heard this incarnation: dead once we have listened for dead_after since we knew of it.
    const mention = this.mentions.get(nodeId);
    const since =
      known === 0 || mention === undefined ? this.startedAt : Math.max(this.startedAt, mention.since);
    if (now - since >= deadAfter) return this.declare(nodeId, known);
    return undefined;
  }

  /** True when we declared `incarnation` (or a later one) of `nodeId` dead. */
  isDeclaredDead(nodeId: string, incarnation: number): boolean {
    const declared = this.declared.get(nodeId);
    return declared !== undefined && declared >= incarnation;
  }

  /**
   * Starts a new, higher incarnation (placement A3: the caller makes sure no
   * exclusive workload runs under the old one). Peers revive us (the
   * detector's `rejoined`) and acknowledge the new incarnation; acks of the
   * old one no longer count.
   */
  rejoin(): number {
    this.currentIncarnation = Math.max(Date.now(), this.currentIncarnation + 1);
    this.incarnationStart = this.now();
    this.seq = 0;
    this.sendLog = [];
    this.rejoinListeners.emit(this.currentIncarnation);
    return this.currentIncarnation;
  }

  onRejoin(listener: (incarnation: number) => void): () => void {
    return this.rejoinListeners.add(listener);
  }

  private declare(nodeId: string, incarnation: number): number {
    const previous = this.declared.get(nodeId);
    if (previous === undefined || incarnation > previous) this.declared.set(nodeId, incarnation);
    return incarnation;
  }

  private knownFrom(nodeId: string, heard: number): number {
    const mention = this.mentions.get(nodeId);
    if (mention === undefined) return heard;
    if (mention.incarnation <= heard) {
      this.mentions.delete(nodeId); // we heard it (or a later one) ourselves
      return heard;
    }
    return mention.incarnation;
  }

  private mention(nodeId: string, incarnation: number, now: number): void {
    // 0 says "never heard any": no information about the incarnation.
    if (nodeId === this.selfId || incarnation === 0) return;
    const heard = this.detector.member(nodeId)?.incarnation ?? 0;
    if (incarnation <= heard) return;
    const existing = this.mentions.get(nodeId);
    if (existing !== undefined && existing.incarnation >= incarnation) return;
    if (existing === undefined && this.mentions.size >= MAX_MENTIONS) return;
    this.mentions.set(nodeId, { incarnation, since: now });
  }

  private candidates(): Set<string> {
    const out = new Set<string>();
    for (const member of this.detector.view()) out.add(member.nodeId);
    for (const nodeId of this.expectedNodes()) out.add(nodeId);
    for (const nodeId of this.mentions.keys()) out.add(nodeId);
    for (const nodeId of this.declared.keys()) out.add(nodeId);
    out.delete(this.selfId);
    for (const nodeId of out) if (this.isNonMember(nodeId)) out.delete(nodeId);
    return out;
  }

  private trimSendLog(now: number): void {
    let drop = 0;
    while (
      drop < this.sendLog.length - 1 &&
      (this.sendLog[drop]!.at < now - this.sendLogMs || this.sendLog.length - drop > MAX_SEND_LOG)
    ) {
      drop++;
    }
    if (drop > 0) this.sendLog.splice(0, drop);
  }
}
