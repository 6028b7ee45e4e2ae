import { type Message, TopicValidatorResult } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { Counter, Gauge, Registry } from 'prom-client';
import type { ClusterState } from '../state/cluster-state.js';
import { Listeners } from '../util/listeners.js';
import { counterIn, gaugeIn } from '../util/metrics.js';
import type { FailureDetector } from './failure-detector.js';
import {
  decodeHeartbeat,
  encodeHeartbeat,
  type Heartbeat,
  type HeartbeatAck,
  type HeartbeatFields,
  type HeartbeatRejection,
  MAX_HEARTBEAT_ADDRS,
  MAX_HEARTBEAT_BYTES,
  MAX_HEARTBEAT_ENTRIES,
} from './heartbeat.js';
import { HeartbeatLedger } from './heartbeat-ledger.js';
import { ThrottledLog } from './log-throttle.js';
import type { GossipNode } from './node.js';
import { allowAnySender, type SenderCheck } from './replicator.js';
import { livenessTopic } from './topics.js';

export interface LivenessOptions {
  node: GossipNode;
  state: ClusterState;
  org: string;
  nodeId: string;
  logger: Logger;
  registry: Registry;
  detector: FailureDetector;
  /** Local clock, the same one the detector uses (injectable for the simulator). */
  now?: () => number;
  heartbeatMs?: number;
  /**
   * The first `count` heartbeats go out every `intervalMs` (shorter than
   * heartbeatMs), then every heartbeatMs. Heartbeats carry listen addresses,
   * which is how a node learns where the members it is not connected to
   * are: with rare heartbeats (SWIM liveness) a node that lost its only
   * connection early would otherwise not learn anyone for a whole interval.
   */
  warmup?: { count: number; intervalMs: number };
  /**
   * Spread heartbeats so that a node receives at most `perInterval` of them
   * from all members together per heartbeatMs: with more members than that,
   * each sends every heartbeatMs × members / perInterval instead. Under SWIM
   * liveness heartbeats only introduce a node and its addresses (the
   * failure detection is SWIM's, digests also travel on probes), so their
   * cost need not grow with the cluster (docs/membership.md). Absent: every
   * heartbeatMs whatever the cluster's size.
   */
  spread?: { members: () => number; perInterval: number };
  /** Send `acks` and `dead` (default true); the receiving side records them either way. */
  acks?: boolean;
  /**
   * This process's incarnation. Defaults to the wall-clock start time; an
   * agent that persists state should pass max(previous + 1, Date.now()) so
   * that it grows even if the clock steps back.
   */
  incarnation?: number;
  isSenderAllowed?: SenderCheck;
  /**
   * Called with the addresses a fresh heartbeat advertised, as sent: the
   * callee keeps only its signer's own (GossipLayer.learnAddresses), so a
   * heartbeat cannot point us at someone else.
   */
  onPeerAddrs?: (peerId: string, addrs: readonly string[]) => void;
}

export const DEFAULT_HEARTBEAT_MS = 1000;

type HeartbeatReject = HeartbeatRejection | 'unsigned' | 'sender-not-allowed' | 'impersonation';

class LivenessMetrics {
  readonly sent: Counter;
  readonly received: Counter;
  readonly stale: Counter;
  readonly rejects: Counter<'reason'>;
  readonly members: Gauge<'state'>;

  constructor(registry: Registry, detector: FailureDetector) {
    this.sent = counterIn(registry, {
      name: 'silo_liveness_heartbeats_sent_total',
      help: 'Heartbeats published',
    });
    this.received = counterIn(registry, {
      name: 'silo_liveness_heartbeats_received_total',
      help: 'Fresh heartbeats accepted',
    });
    this.stale = counterIn(registry, {
      name: 'silo_liveness_heartbeats_stale_total',
      help: 'Heartbeats ignored because a newer one from the node was already seen',
    });
    this.rejects = counterIn(registry, {
      name: 'silo_liveness_heartbeats_rejected_total',
      help: 'Heartbeats rejected by the topic validator, by reason',
      labelNames: ['reason'],
    });
    this.members = gaugeIn(registry, {
      name: 'silo_liveness_members',
      help: 'Known nodes by failure-detector state',
      labelNames: ['state'],
      collect() {
        for (const state of ['alive', 'suspect', 'dead'] as const)
          this.set({ state }, detector.nodesIn(state).length);
      },
    });
  }
}

/**
 * Publishes this node's heartbeat on the liveness topic and feeds received
 * heartbeats to the failure detector; what a heartbeat says about its
 * sender's documents goes to the heartbeat listeners (the layer's digest
 * watch, docs/protocol.md "Anti-entropy").
 */
export class LivenessService {
  /** Acks, dead declarations, our send log and peers' reports (docs/placement.md L1, A1). */
  readonly ledger: HeartbeatLedger;
  private readonly node: GossipNode;
  private readonly state: ClusterState;
  private readonly org: string;
  private readonly nodeId: string;
  private readonly logger: Logger;
  private readonly rejectLog: ThrottledLog;
  private readonly metrics: LivenessMetrics;
  private readonly detector: FailureDetector;
  private readonly now: () => number;
  private readonly heartbeatMs: number;
  private readonly warmup: { count: number; intervalMs: number } | undefined;
  private readonly spread: { members: () => number; perInterval: number } | undefined;
  private readonly sendAcks: boolean;
  private readonly isSenderAllowed: SenderCheck;
  private readonly onPeerAddrs: ((peerId: string, addrs: readonly string[]) => void) | undefined;
  private readonly topic: string;
  /** nodeId → libp2p peer id that signed its latest heartbeat. */
  private readonly peerIds = new Map<string, string>();
  private readonly heartbeatListeners = new Listeners<[heartbeat: Heartbeat, signer: string]>((err) =>
    this.logger.warn({ err }, 'a heartbeat listener threw'),
  );
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(options: LivenessOptions) {
    this.node = options.node;
    this.state = options.state;
    this.org = options.org;
    this.nodeId = options.nodeId;
    this.logger = options.logger.child({ component: 'liveness' });
    this.rejectLog = new ThrottledLog(this.logger);
    this.detector = options.detector;
    this.metrics = new LivenessMetrics(options.registry, this.detector);
    this.now = options.now ?? Date.now;
    this.heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.warmup = options.warmup;
    this.spread = options.spread;
    if (this.spread !== undefined && !(this.spread.perInterval >= 1))
      throw new RangeError(`spread.perInterval must be ≥ 1, got ${this.spread.perInterval}`);
    this.sendAcks = options.acks ?? true;
    this.ledger = new HeartbeatLedger({
      selfId: this.nodeId,
      incarnation: options.incarnation ?? Date.now(),
      detector: this.detector,
      now: this.now,
    });
    this.isSenderAllowed = options.isSenderAllowed ?? allowAnySender;
    this.onPeerAddrs = options.onPeerAddrs;
    this.topic = livenessTopic(this.org);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const pubsub = this.node.services.pubsub;
    pubsub.topicValidators.set(this.topic, (_peer, message) => this.validate(message));
    pubsub.subscribe(this.topic);
    this.scheduleHeartbeats();
    // The detector is ticked well inside a heartbeat so that a transition
    // is noticed soon after its deadline passes.
    const tickMs = Math.max(20, Math.min(250, Math.floor(this.detector.suspectAfterMs / 4)));
    this.tickTimer = setInterval(() => this.detector.tick(), tickMs);
    this.tickTimer.unref();
    void this.beat();
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    // The live timer is an interval during warm-up and a timeout after; clearTimeout clears either.
    clearTimeout(this.heartbeatTimer);
    clearInterval(this.tickTimer);
    const pubsub = this.node.services.pubsub;
    pubsub.unsubscribe(this.topic);
    pubsub.topicValidators.delete(this.topic);
  }

  /**
   * The warm-up beats (if any), then one every intervalMs() (re-read after
   * each beat, so that the spread follows the membership);
   * `heartbeatTimer` is always the live timer.
   */
  private scheduleHeartbeats(): void {
    const regular = () => {
      this.heartbeatTimer = setTimeout(() => {
        if (!this.running) return;
        void this.beat();
        regular();
      }, this.intervalMs());
      this.heartbeatTimer.unref();
    };
    const warm = this.warmup;
    if (warm === undefined || warm.count <= 0 || warm.intervalMs >= this.heartbeatMs) {
      regular();
      return;
    }
    let left = warm.count;
    this.heartbeatTimer = setInterval(() => {
      void this.beat();
      if (--left > 0 || !this.running) return;
      clearInterval(this.heartbeatTimer);
      regular();
    }, warm.intervalMs);
    this.heartbeatTimer.unref();
  }

  /** How long after this beat the next regular one goes out, ms (LivenessOptions.spread). */
  intervalMs(): number {
    if (this.spread === undefined) return this.heartbeatMs;
    const members = Math.max(1, this.spread.members());
    return Math.round(this.heartbeatMs * Math.max(1, members / this.spread.perInterval));
  }

  /** This process's current incarnation (it grows when the node rejoins after being declared dead). */
  get incarnation(): number {
    return this.ledger.incarnation;
  }

  /** The libp2p peer id that signed `nodeId`'s latest heartbeat. */
  peerIdOf(nodeId: string): string | undefined {
    return this.peerIds.get(nodeId);
  }

  private async beat(): Promise<void> {
    if (!this.running) return;
    const { incarnation, seq, acks, dead } = this.ledger.nextHeartbeat(this.sendAcks);
    const heartbeat: HeartbeatFields = {
      org: this.org,
      nodeId: this.nodeId,
      incarnation,
      seq,
      digests: this.state.digestsAll(),
      sentAt: Date.now(),
      addrs: this.node
        .getMultiaddrs()
        .slice(0, MAX_HEARTBEAT_ADDRS)
        .map((a) => a.toString()),
      ...(this.sendAcks ? { acks, dead } : {}),
    };
    try {
      await this.node.services.pubsub.publish(this.topic, this.encodeWithinLimits(heartbeat));
      this.metrics.sent.inc();
    } catch (err) {
      if (this.running) this.rejectLog.warn('publish', { err }, 'heartbeat publish failed');
    }
  }

  /**
   * Encodes the heartbeat, leaving out acks and dead entries if there are
   * more than the receivers accept (a cluster beyond MAX_HEARTBEAT_ENTRIES
   * nodes, or very long node ids). Leaving one out is safe: it only
   * withholds a proof (an ack towards a peer's lease, an attestation
   * towards a takeover). A window that moves with `seq` leaves out
   * different nodes each time, so none is starved.
   */
  private encodeWithinLimits(heartbeat: HeartbeatFields): Uint8Array {
    let bytes = encodeHeartbeat(heartbeat);
    const acks = [...(heartbeat.acks ?? new Map<string, HeartbeatAck>())].sort(byKey);
    const dead = [...(heartbeat.dead ?? new Map<string, number>())].sort(byKey);
    let keep = Math.min(acks.length + dead.length, MAX_HEARTBEAT_ENTRIES);
    if (keep === acks.length + dead.length && bytes.byteLength <= MAX_HEARTBEAT_BYTES) return bytes;
    while (keep > 0) {
      // Dead declarations first (there are few), then a rotating window of acks.
      const keepDead = dead.slice(0, keep);
      const ackRoom = keep - keepDead.length;
      const offset = acks.length === 0 ? 0 : heartbeat.seq % acks.length;
      const rotated = [...acks.slice(offset), ...acks.slice(0, offset)].slice(0, ackRoom);
      bytes = encodeHeartbeat({ ...heartbeat, acks: new Map(rotated), dead: new Map(keepDead) });
      if (bytes.byteLength <= MAX_HEARTBEAT_BYTES) break;
      keep = Math.floor(keep * 0.9);
    }
    if (keep === 0) bytes = encodeHeartbeat({ ...heartbeat, acks: new Map(), dead: new Map() });
    this.rejectLog.warn(
      'heartbeat-trimmed',
      { entries: acks.length + dead.length, kept: keep },
      'heartbeat acks/dead trimmed to fit the heartbeat size limits',
    );
    return bytes;
  }

  private validate(message: Message): TopicValidatorResult {
    if (message.type !== 'signed') return this.reject('unsigned', undefined, 'message is not signed');
    const signer = message.from.toString();
    const decoded = decodeHeartbeat(message.data, this.org);
    if (!decoded.ok) return this.reject(decoded.reason, signer, decoded.detail);
    const { heartbeat } = decoded;
    if (heartbeat.nodeId === this.nodeId) {
      // Gossipsub never hands us our own messages, so this is another
      // process using our node id.
      return this.reject('impersonation', signer, 'heartbeat claims our node id');
    }
    if (!this.isSenderAllowed(signer, heartbeat.nodeId)) {
      return this.reject('sender-not-allowed', signer, `node "${heartbeat.nodeId}"`);
    }
    if (!this.detector.observe(heartbeat.nodeId, heartbeat.incarnation, heartbeat.seq)) {
      this.metrics.stale.inc();
      return TopicValidatorResult.Ignore;
    }
    this.metrics.received.inc();
    this.ledger.record(heartbeat);
    this.peerIds.set(heartbeat.nodeId, signer);
    if (heartbeat.addrs.length > 0) this.onPeerAddrs?.(signer, heartbeat.addrs);
    this.heartbeatListeners.emit(heartbeat, signer);
    return TopicValidatorResult.Accept;
  }

  /** Called with every fresh heartbeat that passed validation (sender enrolled, newer than the last) and its signer. */
  onHeartbeat(listener: (heartbeat: Heartbeat, signer: string) => void): () => void {
    return this.heartbeatListeners.add(listener);
  }

  private reject(reason: HeartbeatReject, signer: string | undefined, detail: string): TopicValidatorResult {
    this.metrics.rejects.inc({ reason });
    this.rejectLog.warn(`${reason}:${signer}`, { reason, peer: signer, detail }, 'rejected heartbeat');
    return TopicValidatorResult.Reject;
  }
}

function byKey<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}
