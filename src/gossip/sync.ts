import type { PeerId, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import * as lp from 'it-length-prefixed';
import type { Logger } from 'pino';
import type { Counter, Histogram, Registry } from 'prom-client';
import * as Y from 'yjs';
import type { ClusterState } from '../state/cluster-state.js';
import type { SliceLimits } from '../state/diff-slices.js';
import { type EpochInfo, judgeEpoch } from '../state/epochs/epoch.js';
import { DOC_NAMES, type DocName, Origin } from '../state/names.js';
import { counterIn, histogramIn } from '../util/metrics.js';
import { FrameQueue } from './frame-queue.js';
import { ThrottledLog } from './log-throttle.js';
import type { GossipNode } from './node.js';
import {
  decodeFrame,
  encodeFrame,
  FrameType,
  frameEpoch,
  type SyncFrame,
  SyncProtocolError,
} from './sync-frames.js';
import { SYNC_PROTOCOL } from './topics.js';
import { encodeWireEpoch } from './wire-epoch.js';

export type SyncResult =
  | 'ok'
  /** The peer already runs a session with us. */
  | 'busy'
  | 'timeout'
  /** The peer sent a frame that breaks the protocol. */
  | 'malformed'
  /** The peer sent an update that failed validation. */
  | 'invalid-update'
  /** A frame (received or to be sent) exceeded the frame limit. */
  | 'oversize'
  /** The peer does not speak /silo/sync/1. */
  | 'unsupported'
  /** Dial or stream failure. */
  | 'error'
  | 'stopped';

export interface AntiEntropyOptions {
  node: GossipNode;
  state: ClusterState;
  logger: Logger;
  registry: Registry;
  /** A session with a random connected peer every this many ms; 0 disables. */
  intervalMs?: number;
  /**
   * A session ends when no frame went either way for this long, ms, and in any case after
   * SESSION_CAP_TIMEOUTS times it (a large document in parts may take longer than one).
   */
  timeoutMs?: number;
  /**
   * True for a peer whose node we consider dead or just returned from dead:
   * what a session with it adds is applied with origin `catchUp`, which the
   * replicator relays (src/state/names.ts). Default: never.
   */
  isReturningPeer?: (peerId: string) => boolean;
  /**
   * Where a large step 2 is cut into slices for a peer that applies them (src/state/diff-slices.ts;
   * default DEFAULT_SLICE_LIMITS). Tests lower it.
   */
  sliceLimits?: SliceLimits;
}

export const DEFAULT_SYNC_INTERVAL_MS = 30_000;
export const DEFAULT_SYNC_TIMEOUT_MS = 10_000;
/** The whole-session cap, in timeouts: bounds a peer that trickles frames just fast enough. */
export const SESSION_CAP_TIMEOUTS = 12;
/** Lets timers and I/O run between two slices of a large step 2 (sent or applied). */
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A state vector of nothing: a diff against it is the whole document (a peer in an earlier epoch gets that). */
const EMPTY_STATE_VECTOR = Y.encodeStateVector(new Y.Doc());
/** An update of nothing: the step 2 answering a peer in a later epoch, which has nothing to learn from ours. */
const EMPTY_UPDATE = Y.encodeStateAsUpdate(new Y.Doc());

/** Frame room around an update (msgpack map keys, type tag, doc name). */
const FRAME_OVERHEAD_BYTES = 1024;

/** Yields what `source` yields, calling `progressed` as each item is taken (the stream wrote the previous one). */
async function* reportingProgress<T>(source: AsyncIterable<T>, progressed: () => void): AsyncGenerator<T> {
  for await (const item of source) {
    progressed();
    yield item;
  }
}

/** The `e` field of a step frame: left out for the genesis epoch, as agents before epochs send it. */
function epochField(epoch: EpochInfo): { e?: [number, string] } {
  return epoch.number > 0 ? { e: encodeWireEpoch(epoch) } : {};
}

function concatBytes(parts: Uint8Array[], total: number): Uint8Array {
  const joined = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    joined.set(part, at);
    at += part.byteLength;
  }
  return joined;
}

/**
 * Stream chunks as plain bytes. libp2p and it-length-prefixed depend on
 * different uint8arraylist versions whose types do not unify.
 */
async function* asBytes(source: AsyncIterable<{ subarray(): Uint8Array }>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) yield chunk.subarray();
}

class SyncMetrics {
  readonly sessions: Counter<'direction' | 'result'>;
  readonly otherEpoch: Counter<'doc' | 'epoch'>;
  readonly bytes: Counter<'direction'>;
  readonly duration: Histogram<'direction'>;

  constructor(registry: Registry) {
    this.otherEpoch = counterIn(registry, {
      name: 'silo_sync_other_epoch_total',
      help: 'Sync step 1 frames from a peer in another epoch: earlier (it was sent our whole document) or later (we adopt its epoch from its step 2)',
      labelNames: ['doc', 'epoch'],
    });
    this.sessions = counterIn(registry, {
      name: 'silo_sync_sessions_total',
      help: 'Anti-entropy sessions by direction (inbound/outbound) and result',
      labelNames: ['direction', 'result'],
    });
    this.bytes = counterIn(registry, {
      name: 'silo_sync_bytes_total',
      help: 'Anti-entropy frame bytes (without length prefixes) by direction (in/out)',
      labelNames: ['direction'],
    });
    this.duration = histogramIn(registry, {
      name: 'silo_sync_session_seconds',
      help: 'Anti-entropy session duration',
      labelNames: ['direction'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
    });
  }
}

type Direction = 'inbound' | 'outbound';

interface Session {
  direction: Direction;
  done: Promise<SyncResult>;
}

/**
 * Anti-entropy over `/silo/sync/1`: the Yjs state-vector exchange
 * (y-protocols step 1 / step 2) in both directions in one session, at most
 * one session per peer at a time. Gossip loses messages to partitions and
 * late joins; this closes the gap.
 */
export class AntiEntropy {
  private readonly node: GossipNode;
  private readonly state: ClusterState;
  private readonly logger: Logger;
  private readonly problemLog: ThrottledLog;
  /** Failed dials: one line per peer a minute, with how many were left out. */
  private readonly dialLog: ThrottledLog;
  private readonly metrics: SyncMetrics;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly maxFrameBytes: number;
  private readonly isReturningPeer: (peerId: string) => boolean;
  private readonly sliceLimits: SliceLimits | undefined;
  private readonly sessions = new Map<string, Session>();
  private readonly untracked = new Set<Promise<SyncResult>>();
  private readonly openStreams = new Set<Stream>();
  private interval: NodeJS.Timeout | undefined;
  private running = false;

  constructor(options: AntiEntropyOptions) {
    this.node = options.node;
    this.state = options.state;
    this.logger = options.logger.child({ component: 'sync' });
    this.problemLog = new ThrottledLog(this.logger);
    this.dialLog = new ThrottledLog(this.logger, 60_000);
    this.metrics = new SyncMetrics(options.registry);
    this.intervalMs = options.intervalMs ?? DEFAULT_SYNC_INTERVAL_MS;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS;
    this.maxFrameBytes = this.state.maxUpdateBytes + FRAME_OVERHEAD_BYTES;
    this.isReturningPeer = options.isReturningPeer ?? (() => false);
    this.sliceLimits = options.sliceLimits;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.node.handle(SYNC_PROTOCOL, ({ stream, connection }) => {
      this.onInbound(stream, connection.remotePeer.toString());
    });
    this.node.addEventListener('peer:connect', this.onPeerConnect);
    if (this.intervalMs > 0) {
      this.interval = setInterval(() => void this.syncWithRandomPeer(), this.intervalMs);
      this.interval.unref();
    }
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.interval);
    this.node.removeEventListener('peer:connect', this.onPeerConnect);
    await this.node.unhandle(SYNC_PROTOCOL).catch(() => undefined);
    // Sessions in flight end now rather than at their timeout.
    for (const stream of this.openStreams) stream.abort(new Error('sync stopping'));
    await Promise.allSettled([...[...this.sessions.values()].map((s) => s.done), ...this.untracked]);
  }

  /**
   * Runs one session with `peer`, or joins the one already running.
   * Resolves with the result; never rejects.
   */
  syncWith(peer: PeerId | string): Promise<SyncResult> {
    const key = peer.toString();
    const existing = this.sessions.get(key);
    if (existing) return existing.done;
    if (!this.running) return Promise.resolve('stopped');
    const done = this.runOutbound(typeof peer === 'string' ? peer : peer.toString()).finally(() => {
      if (this.sessions.get(key)?.done === done) this.sessions.delete(key);
    });
    this.sessions.set(key, { direction: 'outbound', done });
    return done;
  }

  /** A session with a random connected peer; undefined when there is none. */
  async syncWithRandomPeer(): Promise<SyncResult | undefined> {
    const peers = this.node.getPeers();
    if (peers.length === 0) return undefined;
    const peer = peers[Math.floor(Math.random() * peers.length)]!;
    return this.syncWith(peer);
  }

  /** Peers with a session running right now. */
  activePeers(): string[] {
    return [...this.sessions.keys()];
  }

  private readonly onPeerConnect = (event: CustomEvent<PeerId>): void => {
    const peer = event.detail;
    // The dialing side starts the session, so a new connection costs one
    // session rather than two crossing ones.
    const dialedByUs = this.node.getConnections(peer).some((c) => c.direction === 'outbound');
    if (dialedByUs) void this.syncWith(peer);
  };

  private async runOutbound(peer: string): Promise<SyncResult> {
    let stream: Stream;
    try {
      stream = await this.node.dialProtocol(peerIdFromString(peer), SYNC_PROTOCOL, {
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const result: SyncResult = (err as Error).name === 'UnsupportedProtocolError' ? 'unsupported' : 'error';
      this.record('outbound', result);
      if (result === 'error')
        // The reason, not a stack trace: a peer that refuses us (we were
        // revoked, it is down) would otherwise print one a second.
        this.dialLog.warn(
          `dial:${peer}`,
          { peer, reason: (err as Error).message },
          'could not open a sync stream',
        );
      return result;
    }
    return this.session(stream, peer, 'outbound');
  }

  private onInbound(stream: Stream, peer: string): void {
    const existing = this.sessions.get(peer);
    // Two sessions may cross (both sides dialed). Of the two, the one
    // started by the lower peer id goes ahead and the other is declined,
    // decided identically on both sides.
    const localWins = existing?.direction === 'outbound' && this.node.peerId.toString() < peer;
    if (!this.running || existing?.direction === 'inbound' || localWins) {
      this.record('inbound', 'busy');
      void this.decline(stream);
      return;
    }
    const done = this.session(stream, peer, 'inbound');
    if (existing) {
      this.untracked.add(done);
      void done.finally(() => this.untracked.delete(done));
      return;
    }
    const tracked = done.finally(() => {
      if (this.sessions.get(peer)?.done === tracked) this.sessions.delete(peer);
    });
    this.sessions.set(peer, { direction: 'inbound', done: tracked });
  }

  private async decline(stream: Stream): Promise<void> {
    try {
      await stream.sink([lp.encode.single(encodeFrame({ t: FrameType.busy })).subarray()]);
      await stream.close();
    } catch (err) {
      stream.abort(err as Error);
    }
  }

  /** One exchange, identical on both sides: send step 1 for every document, answer each step 1 with a step 2. */
  private async session(stream: Stream, peer: string, direction: Direction): Promise<SyncResult> {
    const startedAt = performance.now();
    this.openStreams.add(stream);
    const outbox = new FrameQueue<Uint8Array>();
    let bytesIn = 0;
    let bytesOut = 0;
    let timedOut = false;
    const expire = (why: string) => () => {
      timedOut = true;
      stream.abort(new Error(why));
    };
    // Refreshed whenever a frame is read or handed to the stream: a session moving a large
    // document in parts makes progress for longer than one timeout.
    const idle = setTimeout(expire('sync session timed out (no frame moved)'), this.timeoutMs);
    const cap = setTimeout(expire('sync session took too long'), this.timeoutMs * SESSION_CAP_TIMEOUTS);
    const progressed = (): void => {
      idle.refresh();
    };
    const send = (frame: SyncFrame): void => {
      const bytes = encodeFrame(frame);
      if (bytes.byteLength > this.maxFrameBytes) {
        throw new SyncProtocolError('oversize', `local ${frame.t} frame is ${bytes.byteLength} bytes`);
      }
      bytesOut += bytes.byteLength;
      outbox.push(bytes);
    };
    const sending = stream.sink(
      lp.encode(reportingProgress(outbox, progressed), { maxDataLength: this.maxFrameBytes }),
    );
    // Errors of the write side surface through the read side (the stream is aborted).
    sending.catch(() => undefined);
    // Decided once per session: the peer counts as returning until our
    // digests match, which this very session may bring about.
    const origin = this.isReturningPeer(peer) ? Origin.catchUp : Origin.sync;
    const awaitingStep1 = new Set<DocName>(DOC_NAMES);
    const awaitingStep2 = new Set<DocName>(DOC_NAMES);
    /** Parts of a step 2 still arriving, per document (see FrameType.step2). */
    const partial = new Map<DocName, { parts: Uint8Array[]; bytes: number }>();
    /** Bytes of step 2 received so far per document, over all its slices. */
    const received = new Map<DocName, number>();
    /** Documents whose step 2 arrives in slices. */
    const sliced = new Set<DocName>();
    /** Sends `update` in frames of at most maxUpdateBytes, the last with `next` when another update follows. */
    const sendUpdate = (doc: DocName, update: Uint8Array, next: boolean, epoch: EpochInfo): void => {
      const part = this.state.maxUpdateBytes;
      const e = epochField(epoch);
      for (let at = 0; at < update.byteLength; at += part) {
        const bytes = update.subarray(at, at + part);
        if (at + part < update.byteLength) send({ t: FrameType.step2, doc, update: bytes, more: true, ...e });
        else if (next) send({ t: FrameType.step2, doc, update: bytes, next: true, ...e });
        else send({ t: FrameType.step2, doc, update: bytes, ...e });
      }
    };
    let result: SyncResult;
    try {
      for (const doc of DOC_NAMES) {
        const e = epochField(this.state.epoch(doc));
        send({ t: FrameType.step1, doc, sv: this.state.encodeStateVector(doc), slices: true, ...e });
      }
      let declined = false;
      for await (const chunk of lp.decode(asBytes(stream.source), { maxDataLength: this.maxFrameBytes })) {
        const bytes = chunk.subarray();
        bytesIn += bytes.byteLength;
        progressed();
        const frame = decodeFrame(bytes);
        if (frame.t !== FrameType.busy && frame.e !== undefined && !this.state.hasEpochs(frame.doc)) {
          throw new SyncProtocolError('malformed', `an epoch for ${frame.doc}, which has none`);
        }
        if (frame.t === FrameType.busy) {
          const nothingYet =
            awaitingStep1.size === DOC_NAMES.length && awaitingStep2.size === DOC_NAMES.length;
          if (direction !== 'outbound' || !nothingYet) {
            throw new SyncProtocolError('malformed', 'unexpected busy frame');
          }
          declined = true;
          break;
        }
        if (frame.t === FrameType.step1) {
          if (!awaitingStep1.delete(frame.doc)) {
            throw new SyncProtocolError('malformed', `second step1 for ${frame.doc}`);
          }
          // Captured once: the slices below come from the document as it is now, even if this
          // node moves to another epoch while they are sent.
          const ours = this.state.epoch(frame.doc);
          const verdict = judgeEpoch(ours, frameEpoch(frame));
          if (verdict !== 'merge')
            this.metrics.otherEpoch.inc({ doc: frame.doc, epoch: verdict === 'adopt' ? 'later' : 'earlier' });
          // A peer in an earlier epoch gets the whole document (it adopts it); one in a later
          // epoch has nothing to learn from ours (we adopt its epoch from its step 2).
          const sv = verdict === 'answer' ? EMPTY_STATE_VECTOR : frame.sv;
          if (verdict === 'adopt') {
            sendUpdate(frame.doc, EMPTY_UPDATE, false, ours);
          } else if (frame.slices === true) {
            // Slice by slice, letting the loop run between them; the peer applies each as it comes.
            let total = 0;
            for (const slice of this.state.encodeDiffSlices(frame.doc, sv, this.sliceLimits)) {
              total += slice.update.byteLength;
              if (total > this.state.maxSyncUpdateBytes) {
                // The peer would reject it; see docs/protocol.md on this limit.
                throw new SyncProtocolError('oversize', `${frame.doc} diff exceeds ${total} bytes`);
              }
              sendUpdate(frame.doc, slice.update, !slice.last, ours);
              if (!slice.last) await yieldToLoop();
            }
          } else {
            // A peer that knows no slices: the whole diff as one update.
            const diff = this.state.encodeDiff(frame.doc, sv);
            if (diff.byteLength > this.state.maxSyncUpdateBytes) {
              throw new SyncProtocolError('oversize', `${frame.doc} diff is ${diff.byteLength} bytes`);
            }
            sendUpdate(frame.doc, diff, false, ours);
          }
          if (awaitingStep1.size === 0) outbox.end();
        } else {
          if (!awaitingStep2.has(frame.doc)) {
            throw new SyncProtocolError('malformed', `second step2 for ${frame.doc}`);
          }
          const parts = partial.get(frame.doc) ?? { parts: [], bytes: 0 };
          parts.parts.push(frame.update);
          parts.bytes += frame.update.byteLength;
          const total = (received.get(frame.doc) ?? 0) + frame.update.byteLength;
          received.set(frame.doc, total);
          if (total > this.state.maxSyncUpdateBytes) {
            throw new SyncProtocolError(
              'oversize',
              `${frame.doc} step2 exceeds ${this.state.maxSyncUpdateBytes} bytes`,
            );
          }
          if (frame.more === true) {
            partial.set(frame.doc, parts);
            continue;
          }
          partial.delete(frame.doc);
          if (frame.next !== true) awaitingStep2.delete(frame.doc);
          const update = parts.parts.length === 1 ? frame.update : concatBytes(parts.parts, parts.bytes);
          // What a catch-up brings is relayed (replicator.ts) up to half the update limit, as an unsliced
          // step 2 is; slices past that are applied as plain sync, left to the others' own sessions.
          if (frame.next === true) sliced.add(frame.doc);
          const pastRelayLimit = sliced.has(frame.doc) && total > this.state.maxUpdateBytes / 2;
          const applyAs = origin === Origin.catchUp && pastRelayLimit ? Origin.sync : origin;
          const theirs = frameEpoch(frame);
          const verdict = judgeEpoch(this.state.epoch(frame.doc), theirs);
          try {
            if (verdict === 'merge') {
              this.state.applyRemote(frame.doc, update, applyAs, this.state.maxSyncUpdateBytes);
            } else if (verdict === 'adopt') {
              // The whole document of a later epoch (or its first slice; the rest then merges).
              this.state.adoptEpoch(frame.doc, theirs, update, applyAs);
            }
            // An earlier epoch's state: nothing for us; the peer adopts ours from our step 2.
          } catch (err) {
            throw new SyncProtocolError('invalid-update', `${frame.doc}: ${(err as Error).message}`);
          }
          // One slice of several: let timers and I/O run before the next.
          if (frame.next === true) await yieldToLoop();
        }
        if (awaitingStep1.size === 0 && awaitingStep2.size === 0) break;
      }
      if (declined) {
        result = 'busy';
        if (!outbox.isEnded) outbox.end();
        await stream.close();
      } else {
        if (awaitingStep1.size > 0 || awaitingStep2.size > 0) {
          throw new SyncProtocolError('malformed', 'stream ended before the exchange completed');
        }
        await sending;
        await stream.close();
        result = 'ok';
      }
    } catch (err) {
      if (!outbox.isEnded) outbox.end();
      stream.abort(err instanceof Error ? err : new Error(String(err)));
      result = this.classify(err, timedOut);
      if (result !== 'stopped') {
        this.problemLog.warn(
          `${result}:${peer}`,
          { peer, direction, result, err: (err as Error).message },
          'sync session failed',
        );
      }
    } finally {
      clearTimeout(idle);
      clearTimeout(cap);
      this.openStreams.delete(stream);
    }
    this.metrics.bytes.inc({ direction: 'in' }, bytesIn);
    this.metrics.bytes.inc({ direction: 'out' }, bytesOut);
    this.metrics.duration.observe({ direction }, (performance.now() - startedAt) / 1000);
    this.record(direction, result);
    if (result === 'ok') this.logger.debug({ peer, direction, bytesIn, bytesOut }, 'sync session done');
    return result;
  }

  private classify(err: unknown, timedOut: boolean): SyncResult {
    if (timedOut) return 'timeout';
    if (err instanceof SyncProtocolError) return err.kind;
    const name = (err as Error | undefined)?.name;
    if (name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError') return 'oversize';
    if (name === 'InvalidMessageLengthError') return 'malformed';
    if (!this.running) return 'stopped';
    return 'error';
  }

  private record(direction: Direction, result: SyncResult): void {
    this.metrics.sessions.inc({ direction, result });
  }
}
